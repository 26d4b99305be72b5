"""Load generators and micro-benchmarks, each run as `python -m bench.<name>`."""
