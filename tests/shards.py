"""Run the suite as several pytest processes side by side (`make test`).

Most of the suite waits: on gateways, workers, Chromium, sockets and timers. One pytest
process keeps about one core busy, so the suite's test files are dealt out to `--shards`
processes (longest first, each to the process with the least work so far, by the seconds
each file took, recorded in `tests/durations.json`), and all of them run at once.

Each process gets:
- its own test database and channel-layer prefix (tests/conftest.py already gives every
  pytest process those, so concurrent runs never touch each other's data);
- its own slice of the loopback ports below the ephemeral range (`CHAT_TEST_PORTS`, read by
  `bench.harness.free_port`), so no two processes can hand out the same port;
- its own log, `test-artifacts/shards/shard-N.log`, and JUnit file beside it.

`--partitioned FILE...` runs those files once more on the hash-partitioned message table
(`CHAT_PARTITIONED_MESSAGES=1`) in one more process, started when the first shard ends,
on that shard's ports.

While they run, a progress line every 30 s. At the end, each process's summary line and,
for a process that failed, its failures and short summary; the exit status is 1 if any
process failed. `--record` rewrites `tests/durations.json` from this run's JUnit files.

Usage: python -m tests.shards [--shards N] [--record] [--partitioned FILE...]
       [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / "tests" / "durations.json"
ARTIFACTS = ROOT / "test-artifacts" / "shards"
# Files not in tests/durations.json yet (a new test file) count as this many seconds.
UNKNOWN_FILE_SECONDS = 10.0
PROGRESS_EVERY = 30.0
# pytest's last line: "===== 3 failed, 790 passed in 780.12s (0:13:00) =====", or with
# -q "280 passed in 35.25s".
SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z ]+?|no tests ran)(?:, \d+ [a-z ]+?)*) in [\d.]+s\b")
PERCENT = re.compile(r"\[\s*(\d+)%\]\s*$")


@dataclass
class Shard:
    number: int
    files: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # set for this process only
    ports: int = 0  # whose slice of ports it uses (its own number unless set)
    seconds: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ended: float | None = None

    @property
    def log(self) -> Path:
        return ARTIFACTS / f"shard-{self.number}.log"

    @property
    def junit(self) -> Path:
        return ARTIFACTS / f"shard-{self.number}.xml"

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def test_files() -> list[str]:
    """Every file pytest would collect under tests/, as paths relative to the checkout."""
    found = set()
    for pattern in ("test_*.py", "*_test.py"):
        for path in (ROOT / "tests").rglob(pattern):
            relative = path.relative_to(ROOT)
            if (
                relative.parts[1] in {"embedded", "node_modules"}
                or "node_modules" in relative.parts
            ):
                continue  # tests/embedded runs in a process of its own (tests/test_embedded.py)
            found.add(str(relative))
    return sorted(found)


def recorded_seconds() -> dict[str, float]:
    try:
        data = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}
    return {str(name): float(seconds) for name, seconds in data.items()}


def deal(files: list[str], count: int, seconds: dict[str, float]) -> list[Shard]:
    """Deal the files out: the longest first, each to the shard with the least so far."""
    shards = [Shard(number) for number in range(1, count + 1)]
    weight = {name: seconds.get(name, UNKNOWN_FILE_SECONDS) for name in files}
    for name in sorted(files, key=lambda name: (-weight[name], name)):
        lightest = min(shards, key=lambda shard: (shard.seconds, shard.number))
        lightest.files.append(name)
        lightest.seconds += weight[name]
    for shard in shards:
        shard.files.sort()  # pytest runs them in path order, as a single run would
    return shards


def start(shard: Shard, count: int, extra: list[str]) -> None:
    ports = harness.port_slice(shard.ports or shard.number, count)
    env = {**os.environ, **shard.env, "CHAT_TEST_PORTS": ports}
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"--junitxml={shard.junit}",
        # record_property (the e2e logs) needs the xunit1 family.
        "-o",
        "junit_family=xunit1",
        *extra,
        *shard.files,
    ]
    with shard.log.open("wb") as log:
        settings = " ".join(f"{k}={v}" for k, v in {**shard.env, "CHAT_TEST_PORTS": ports}.items())
        log.write(f"$ {settings} {' '.join(command)}\n".encode())
        log.flush()
        shard.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    shard.started = time.monotonic()


def summary_line(shard: Shard) -> str:
    for line in reversed(shard.text().splitlines()):
        match = SUMMARY.match(line.strip())
        if match:
            return match.group(1)
    return "no summary line (see the log)"


def progress(shard: Shard) -> str:
    if shard.ended is not None:
        return f"shard {shard.number}: done ({summary_line(shard)})"
    percent = "0"
    for line in reversed(shard.text().splitlines()[-50:]):
        match = PERCENT.search(line)
        if match:
            percent = match.group(1)
            break
    return f"shard {shard.number}: {percent}%"


def failure_report(shard: Shard) -> str:
    """The part of a failed shard's log a reader needs: failures, errors, short summary."""
    text = shard.text()
    for marker in ("= ERRORS =", "= FAILURES =", "short test summary info"):
        at = text.find(marker)
        if at >= 0:
            return text[text.rfind("\n", 0, at) + 1 :]
    return "\n".join(text.splitlines()[-200:])


def record(shards: list[Shard]) -> None:
    """Rewrite tests/durations.json with the seconds each file took in this run."""
    seconds = recorded_seconds()
    for shard in shards:
        try:
            tree = ET.parse(shard.junit)
        except (OSError, ET.ParseError):
            continue
        per_file: dict[str, float] = {}
        for case in tree.iter("testcase"):
            name = case.get("classname", "").split(".")
            # classname is the dotted module path, then any class names.
            for end in range(len(name), 0, -1):
                candidate = "/".join(name[:end]) + ".py"
                if (ROOT / candidate).is_file():
                    per_file[candidate] = per_file.get(candidate, 0.0) + float(case.get("time", 0))
                    break
        seconds.update({name: round(value, 1) for name, value in per_file.items()})
    DURATIONS.write_text(json.dumps(dict(sorted(seconds.items())), indent=1) + "\n")
    print(f"wrote {DURATIONS.relative_to(ROOT)} ({len(seconds)} files)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=int(os.environ.get("TEST_SHARDS", 2)))
    parser.add_argument("--record", action="store_true", help="rewrite tests/durations.json")
    parser.add_argument(
        "--partitioned",
        nargs="*",
        default=[],
        metavar="FILE",
        help="run these files once more on the partitioned message table "
        "(CHAT_PARTITIONED_MESSAGES=1), in a process started when the first shard ends",
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to every pytest")
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shards = [s for s in deal(test_files(), args.shards, recorded_seconds()) if s.files]
    count = len(shards)
    pending = []
    if args.partitioned:
        pending.append(
            Shard(count + 1, sorted(args.partitioned), env={"CHAT_PARTITIONED_MESSAGES": "1"})
        )
    began = time.monotonic()
    for shard in shards:
        start(shard, count, args.pytest_args)
        print(
            f"shard {shard.number}: {len(shard.files)} files, ~{shard.seconds / 60:.0f} min "
            f"alone; log {shard.log.relative_to(ROOT)}",
            flush=True,
        )
    try:
        next_report = time.monotonic() + PROGRESS_EVERY
        while any(shard.ended is None for shard in shards):
            time.sleep(1.0)
            for shard in shards:
                assert shard.process is not None
                if shard.ended is None and shard.process.poll() is not None:
                    shard.ended = time.monotonic()
                    print(
                        f"shard {shard.number} ended after {shard.ended - shard.started:.0f} s: "
                        f"{summary_line(shard)}",
                        flush=True,
                    )
                    if pending:  # the partitioned run takes the ended shard's ports
                        extra = pending.pop()
                        extra.ports = shard.ports or shard.number
                        start(extra, count, ["-q", *args.pytest_args])
                        shards.append(extra)
                        print(
                            f"shard {extra.number}: the partitioned message table "
                            f"(CHAT_PARTITIONED_MESSAGES=1), {len(extra.files)} files; "
                            f"log {extra.log.relative_to(ROOT)}",
                            flush=True,
                        )
            if time.monotonic() >= next_report and any(s.ended is None for s in shards):
                next_report += PROGRESS_EVERY
                elapsed = time.monotonic() - began
                line = "; ".join(progress(shard) for shard in shards)
                print(f"[{elapsed / 60:4.1f} min] {line}", flush=True)
    except KeyboardInterrupt:
        for shard in shards:
            if shard.process is not None and shard.process.poll() is None:
                shard.process.terminate()
        raise
    failed = [shard for shard in shards if shard.process and shard.process.returncode != 0]
    for shard in failed:
        status = shard.process.returncode if shard.process else "?"
        print(
            f"\n===== shard {shard.number} failed (exit {status}); "
            f"whole log: {shard.log.relative_to(ROOT)} ====="
        )
        print(failure_report(shard))
    if args.record:
        record([shard for shard in shards if not shard.env])
    took = time.monotonic() - began
    verdict = "FAILED" if failed else "passed"
    print(
        f"\nall {len(shards)} shards {verdict} in {took:.0f} s: "
        + "; ".join(f"shard {s.number}: {summary_line(s)}" for s in shards)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
