"""`python -m bench`: bring up a deployment, run the scenarios, report.

    python -m bench                          # everything (`make bench`), about 22 minutes
    python -m bench --smoke                  # every scenario, tiny (the test suite's run)
    python -m bench --scenarios latency,fanout --gateways 2
    python -m bench --connections 5000 --scenarios connections

Writes results.json, latencies.json, summary.md, latency.png and throughput.png to
`--out` (default bench/results/<time>/) and prints the tables. Traffic goes to
127.0.0.1 only; the run stops by itself after `--time-limit` minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.deploy import BenchDeployment, DeployOptions, raise_open_file_limit
from bench.harness import GATEWAY_WS
from bench.layers import code_version, machine
from bench.scenarios import FULL, SCENARIOS, SMOKE, Context, Result, Sizes

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ORDER = (
    "latency",
    "throughput",
    # Right after `throughput`: its figures and the baselines' are divided in the report,
    # so they are measured back to back, on the machine in the same state.
    "baselines",
    "fanout",
    "storm",
    "catchup",
    "profile",
    "notifications",
    "drain",
    "mobile",
    "connections",
)


class TimeLimit(BaseException):
    """The run reached `--time-limit` (or got SIGTERM); everything is torn down."""


class Progress:
    """Timestamped progress lines on stderr, from the start of the run."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {line}", file=sys.stderr, flush=True)


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not name.strip().isupper():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with an upper-case name, got {text!r}"
        )
    return name.strip(), value


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {unknown}; choose from {', '.join(DEFAULT_ORDER)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Load benchmark of the chat server: starts PostgreSQL, Redis, a Celery worker "
            "and beat, a local Web Push endpoint and N gateway processes on 127.0.0.1, "
            "drives them with the reference client (chatclient), and reports latency, "
            "throughput, fan-out, idle sockets, reconnect storm, catch-up, presence cost "
            "and offline notifications with the CPU split of each, and throughput, idle "
            "sockets and fan-out beside baseline servers that store nothing."
        ),
        epilog=f"Scenarios, in run order: {', '.join(DEFAULT_ORDER)}.",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=DEFAULT_ORDER,
        help="comma-separated scenarios to run (default: all)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: every scenario in well under a minute"
    )
    parser.add_argument("--gateways", type=int, default=2, help="gateway processes (default 2)")
    parser.add_argument(
        "--durability",
        choices=("full", "relaxed"),
        default="full",
        help="PostgreSQL commits: full (fsync, synchronous_commit=on; default) or relaxed "
        "(synchronous_commit=off: an acknowledged message can be lost in a crash)",
    )
    parser.add_argument(
        "--connections",
        type=_csv_ints,
        help="idle-socket counts to hold (default 10000,20000)",
    )
    parser.add_argument("--hold", type=float, help="seconds to hold the idle sockets (default 30)")
    parser.add_argument(
        "--drain-clients", type=int, help="clients under the rolling restart (default 5000)"
    )
    parser.add_argument(
        "--step-seconds", type=float, help="seconds per throughput ramp step (default 5)"
    )
    parser.add_argument(
        "--db-threads", type=int, help="WS_DB_THREADS of each gateway (default: the setting's)"
    )
    parser.add_argument(
        "--ws",
        choices=(GATEWAY_WS, "websockets", "websockets-sansio"),
        default=GATEWAY_WS,
        help=f"uvicorn's WebSocket implementation in the gateways (default {GATEWAY_WS}, as "
        "the Makefile runs them; `websockets` is uvicorn's default, the legacy server)",
    )
    parser.add_argument(
        "--push-answer-ms",
        type=float,
        default=50.0,
        help="milliseconds the bench's Web Push endpoint takes to answer 201 (default 50)",
    )
    parser.add_argument(
        "--notify-push-delay",
        type=float,
        default=1.0,
        help="NOTIFY_PUSH_DELAY of the deployment, seconds (default 1; the product's is 10)",
    )
    parser.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of every gateway and worker (repeatable), e.g. WS_READY_DEADLINE=0",
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the results (default bench/results/<time>)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        help="minutes after which the run stops and tears down (default 60)",
    )
    args = parser.parse_args(argv)
    if args.gateways < 1:
        parser.error("--gateways must be at least 1")
    if args.time_limit <= 0:
        parser.error("--time-limit must be positive")
    if args.push_answer_ms < 0 or args.notify_push_delay < 0:
        parser.error("--push-answer-ms and --notify-push-delay must not be negative")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    """Return the scenario sizes the options ask for."""
    sizes = SMOKE if args.smoke else FULL
    changes: dict[str, Any] = {}
    if args.connections:
        changes["connections"] = args.connections
    if args.hold is not None:
        changes["hold_seconds"] = args.hold
    if args.drain_clients is not None:
        changes["drain_clients"] = args.drain_clients
    if args.step_seconds is not None:
        changes["ramp_seconds"] = args.step_seconds
    return dataclasses.replace(sizes, **changes)


def _version(cmd: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        return (out.stdout or out.stderr).strip().splitlines()[0]
    return "unknown"


def machine_facts() -> dict[str, Any]:
    """Return what the run ran on (CPU, memory, versions, load, commit)."""
    from bench.harness import postgres_bin_dir

    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        **machine(),
        "memory": memory,
        "kernel": platform.release(),
        "postgres": _version([str(postgres_bin_dir() / "postgres"), "--version"]),
        "redis": _version(["redis-server", "--version"]),
        "commit": code_version().get("commit", "unknown"),
    }


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise TimeLimit(f"stopped by {signal.Signals(signum).name}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return everything it measured."""
    progress = Progress()
    out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    limit = raise_open_file_limit()
    sizes = sizes_for(args)
    progress(f"open-file limit {limit}; results in {out}")
    facts = machine_facts()
    signal.signal(signal.SIGALRM, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.alarm(max(1, round(args.time_limit * 60)))
    results: dict[str, Result] = {}
    errors: dict[str, str] = {}
    document: dict[str, Any] = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": facts,
        "options": {k: str(v) for k, v in vars(args).items()},
        "sizes": dataclasses.asdict(sizes),
        "results": results,
        "errors": errors,
    }
    options = DeployOptions(
        gateways=args.gateways,
        durability=args.durability,
        db_threads=args.db_threads,
        ws=args.ws,
        push_answer_delay=args.push_answer_ms / 1000,
        notify_push_delay=args.notify_push_delay,
        # A smoke run holds its sockets for 2 s: heartbeat every second so it sees some.
        extra_env=(
            *((("WS_HEARTBEAT_INTERVAL", "1"),) if args.smoke else ()),
            *args.env,
        ),
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        with BenchDeployment(workdir, options, progress) as deployment:
            from bench import provision

            provision.setup_django(deployment.env)
            ctx = Context(deployment, sizes, progress, deployment.meter(), out)
            for name in args.scenarios:
                progress(f"scenario {name}")
                started = time.monotonic()
                try:
                    results[name] = SCENARIOS[name](ctx)
                except Exception as exc:  # noqa: BLE001 - one failed scenario, the others run
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    progress(f"scenario {name} FAILED: {errors[name]}")
                else:
                    results[name]["seconds"] = round(time.monotonic() - started, 1)
                    progress(f"scenario {name} done in {results[name]['seconds']} s")
                crashed = deployment.gateways_crashed()
                if crashed:
                    errors["deployment"] = f"gateway(s) died: {crashed}"
                    progress(errors["deployment"])
                    break
            document["gateway_logs_tail"] = {
                g.name: g.output()[-3000:]
                for g in (deployment.gateways.gateways if deployment.gateways else [])
            }
            document["celery_logs_tail"] = {
                p.name: p.output()[-3000:]
                for p in (deployment.celery, deployment.beat)
                if p is not None
            }
    except TimeLimit as exc:
        errors["run"] = f"time limit: {exc}"
        progress(f"stopped: {exc}")
    finally:
        signal.alarm(0)
        shutil.rmtree(workdir, ignore_errors=True)
    latencies = {
        name: {
            key: [s.get("_latencies", []) for s in steps]
            for key, steps in (
                ("steps", r["figures"].get("steps", [])),
                ("direct_steps", r["figures"].get("direct_steps", [])),
                ("group_steps", r["figures"].get("group_steps", [])),
            )
            if isinstance(steps, list)
        }
        for name, r in results.items()
    }
    document["side_by_side"] = report.side_by_side(results)
    report.write_json(out / "results.json", document)
    (out / "latencies.json").write_text(json.dumps(latencies))
    (out / "summary.md").write_text(report.markdown(results))
    for path in report.plots(results, out):
        progress(f"wrote {path}")
    print(report.terminal(results))
    if errors:
        print("errors: " + json.dumps(errors, indent=2))
    progress(f"results: {out}/results.json")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; exit 1 if any scenario failed."""
    args = parse_args(argv)
    document = run(args)
    return 1 if document["errors"] else 0
