"""The load benchmark keeps working: a smoke run of every scenario, and its arithmetic.

`make bench` is too long for the suite (about 15 minutes); `python -m bench --smoke` runs
every scenario at a tiny size against its own PostgreSQL, Redis, Celery worker and beat,
push endpoint and two gateways, so a change that breaks the harness (or the server under
it) fails here.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from py_vapid import Vapid  # type: ignore[import-untyped,unused-ignore]
from pywebpush import WebPusher  # type: ignore[import-untyped,unused-ignore]

from bench import report
from bench.cli import DEFAULT_ORDER, parse_args
from bench.deploy import CpuMeter, CpuSample
from bench.drain import AcceptSampler, window_peak
from bench.fleet import deliveries
from bench.harness import REPO_ROOT
from bench.layers import percentile
from bench.notifications import _plan
from bench.pushsink import PushSink, new_subscription, vapid_keypair
from bench.scenarios import summarize_profile
from chatclient import History, RecvRecord, SendRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
@pytest.mark.timeout(330)
def test_smoke_run_measures_every_scenario_and_writes_its_report(tmp_path: Path) -> None:
    """`python -m bench --smoke`: every scenario runs, nothing is lost, every file is written."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--time-limit", "5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=320,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    document = json.loads((out / "results.json").read_text())
    assert document["errors"] == {}
    results = document["results"]
    assert list(results) == list(DEFAULT_ORDER)

    for step in results["latency"]["figures"]["steps"]:
        assert step["lost"] == 0
        assert step["delivered"] == step["deliveries_expected"] > 0
        assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"]

    throughput = results["throughput"]["figures"]
    for steps in (throughput["direct_steps"], throughput["group_steps"]):
        assert steps, "the ramp ran no step"
        assert all(s["lost"] == 0 for s in steps)
    # Groups of 5 in the smoke run: each message reaches 4 other members.
    first_group_step = throughput["group_steps"][0]
    assert first_group_step["deliveries_expected"] == 4 * first_group_step["sends_ok"]
    assert throughput["direct_max_msgs_per_s"] > 0
    assert throughput["groups_max_deliveries_per_s"] > 0

    # The three baseline servers got the same load and delivered every message of it.
    baselines = results["baselines"]["figures"]
    assert list(baselines) == ["tutorial_memory", "tutorial_redis", "relay"]
    for name, server in baselines.items():
        for steps in (server["direct_steps"], server["group_steps"]):
            assert steps, name
            for s in steps:
                assert s["sends_failed"] == s["lost"] == 0, (name, s)
                assert s["delivered"] == s["deliveries_expected"] > 0, (name, s)
        # Rooms of 5: the tutorial's echo to the sender is not a delivery.
        assert (
            server["group_steps"][0]["deliveries_expected"] == 4 * server["group_steps"][0]["sends"]
        )
        assert server["direct_max_msgs_per_s"] > 0 and server["groups_max_deliveries_per_s"] > 0
        assert server["idle"]["connected"] == 50 and server["rss_per_socket_kb"] > 0, name
        assert server["fanout"]["incomplete_repeats"] == 0
        assert all(r["received"] == 19 for r in server["fanout"]["repeats"]), name
    assert all("baseline" in split for split in results["baselines"]["cpu"].values())
    compared = document["side_by_side"]
    assert len(compared["rows"]) == 5  # direct, groups, RSS, fan-out p50 and p99
    for row in compared["rows"]:
        assert all(b["ours_over_it"] > 0 for b in row["baselines"].values()), row
    assert [t["goal"] for t in compared["targets"]] == [">= 3 x", "<= 1 x"]
    assert all(t["value"] > 0 for t in compared["targets"])
    assert "Side by side (same run)" in proc.stdout
    assert "Side by side (same run)" in (out / "summary.md").read_text()

    fanout = results["fanout"]["figures"]
    assert fanout["incomplete_repeats"] == 0
    assert all(r["received"] == 19 for r in fanout["repeats"])

    storm = results["storm"]["figures"]
    assert storm["dropped"] == 20
    assert storm["behind_at_end"] == 0
    assert storm["all_synced_s"] >= storm["all_connected_s"] > 0
    # The load generator's own pauses are reported beside the figures they may inflate.
    assert storm["harness_full_gc_ms"] >= 0 and storm["harness_loop_lag_max_ms"] > 0

    catchup = results["catchup"]["figures"]
    assert all(r["complete"] and r["messages_applied"] >= 100 for r in catchup["runs"])

    (step,) = results["connections"]["figures"]["steps"]
    assert step["connect"]["connected"] == 60 and step["connect"]["failed"] == 0
    assert step["open_after_hold"] == 60
    # Heartbeats every second in a smoke run (WS_HEARTBEAT_INTERVAL=1), held for 2 s.
    assert step["heartbeats"] >= 60
    assert step["redis_commands"] > 0
    assert step["gateway_rss_after_mb"] > 0

    profile = results["profile"]["figures"]
    assert profile["py_spy_errors"] == []
    assert profile["profile"]["samples"] > 0
    assert profile["gateway_cpu_ms_per_send"] > 0

    notifications = results["notifications"]["figures"]
    # 40 msg/s for 1 s, each message to its own offline recipient's conversation: every
    # one pushed exactly once, decrypted at the endpoint, no sooner than NOTIFY_PUSH_DELAY.
    (run,) = notifications["latency"]
    assert run["sends"] == run["messages"] == run["pushed"] == 40
    assert (run["lost"], run["doubled"], run["unexpected"], run["refused"]) == (0, 0, 0, 0)
    assert run["decisions"] == {"sent": 40}
    assert run["latency_ms"]["p50"] >= 1000 * run["notify_push_delay_s"]
    assert run["latency_ms"]["count"] == 40
    assert run["worker_cpu_ms_per_push"] > 0
    (backlog,) = notifications["backlog"]
    assert backlog["due_windows_at_release"] == backlog["pushed"] == backlog["backlog"] == 40
    assert (backlog["lost"], backlog["doubled"], backlog["refused"]) == (0, 0, 0)
    assert backlog["pushes_per_s"] > 0
    send_path = notifications["send_path"]
    on, off = send_path["runs"]
    assert (on["notify_enabled"], off["notify_enabled"]) == (True, False)
    for ab in (on, off):
        assert ab["lost"] == 0 and ab["sends_ok"] == 60
    # NOTIFY_ENABLED=1 writes a due row in each send, =0 none; each was then decided.
    assert (on["due_rows_written"], off["due_rows_written"]) == (60, 0)
    assert on["left_after"]["due_messages"] == 0
    assert send_path["send_path_cpu_ms_per_message"]["off"] > 0

    drain = results["drain"]["figures"]
    # Both gateways drained in turn: each exited by itself (SIGTERM, not SIGKILL), its
    # clients came back, and every client ended with every message.
    assert [d["exit_status"] for d in drain["drains"]] == [-15, -15]
    assert all(d["reconnected"] >= d["clients_on_it"] > 0 for d in drain["drains"])
    assert drain["behind_at_end"] == 0
    assert drain["messages_sent"] > 0
    assert drain["delivered_live_or_synced"] == drain["deliveries_expected"]
    # The gateways' own count of handshakes completed (read from /metrics) saw each move.
    assert all(d["server_ready_per_s_peak"] > 0 and d["server_peak_at"] for d in drain["drains"])
    assert drain["load_generator"]["loop_lag_max_s"] >= 0

    # Every scenario reports the CPU split of the parts it ran on.
    for name, result in results.items():
        for split in result["cpu"].values():
            parts = {"gateways", "postgres", "redis", "celery", "beat", "harness", "machine"}
            assert parts <= set(split)
            # Cumulative across the drain's restarts: no part ever used negative CPU.
            assert min(split.values()) >= 0, (name, split)
        assert result["cpu"], f"{name} reported no CPU split"

    for plot in ("latency.png", "throughput.png"):
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC
    assert "| latency |" in (out / "summary.md").read_text()
    assert "target" in proc.stdout and "CPU, % of one core" in proc.stdout


def test_notification_plan_gives_distinct_pairs_and_each_recipient_once_per_round() -> None:
    """Message k: recipient k % R, a sender none of its earlier messages to them came from."""
    plan = _plan(500, 5, 100)
    assert len(set(plan)) == 500
    for start in range(0, 500, 100):
        assert sorted(r for _s, r in plan[start : start + 100]) == list(range(100))
    assert {s for s, _r in plan} == set(range(5))
    with pytest.raises(ValueError, match="distinct pairs"):
        _plan(501, 5, 100)


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_push_sink_decrypts_a_signed_push_and_refuses_what_it_cannot_read() -> None:
    """A pywebpush aes128gcm body, VAPID-signed: 201 after the delay, message_id read."""
    sink = PushSink(delay=0.05)
    sink.start()
    try:
        sub = new_subscription(sink.origin, "d1")
        sink.register([sub])
        _public, private = vapid_keypair()
        signed = Vapid.from_string(private_key=private).sign(
            {"aud": sink.origin, "sub": "mailto:bench@localhost", "exp": int(time.time()) + 600}
        )
        body = WebPusher(sub.info).encode(b'{"type": "message", "message_id": 42}', "aes128gcm")[
            "body"
        ]
        headers = {**signed, "TTL": "60", "Content-Encoding": "aes128gcm"}
        started = time.monotonic()
        assert _post(sink.port, "/p/d1", body, headers) == 201
        assert time.monotonic() - started >= 0.05
        assert _post(sink.port, "/p/unknown", body, headers) == 404
        assert _post(sink.port, "/p/d1", b"garbage", headers) == 400
        assert _post(sink.port, "/p/d1", body, {"Content-Encoding": "aes128gcm"}) == 401
        arrivals = sink.take()
        assert [(a.name, a.kind, a.message_id, a.status) for a in arrivals] == [
            ("d1", "message", 42, 201),
            ("unknown", "", None, 404),
            ("d1", "", None, 400),
            ("d1", "", None, 401),
        ]
        assert sink.take() == []
    finally:
        sink.close()


def test_the_drain_reads_reconnect_rates_over_two_second_windows_across_restarts() -> None:
    """The clients' times, and a gateway's counter that restarts from 0 in the middle."""
    # Five within two seconds at the start, then two: 2.5 a second at most.
    assert window_peak([0.0, 0.1, 0.2, 1.5, 1.6, 3.9, 4.0], 2.0) == 2.5
    assert window_peak([], 2.0) == 0
    sampler = AcceptSampler([])
    # The counter reaches 40, the gateway restarts (0), then counts 5 and 60.
    counts = [0, 10, 20, 30, 40, 0, 5, 60]
    sampler.samples = {"gateway-1": [(0.5 * n, float(c)) for n, c in enumerate(counts)]}
    # The steepest two seconds: 1.5 s -> 3.5 s, from 30 to 40 + 60 = 100, so 35 a second;
    # a restart is not a negative rate.
    assert sampler.peak(0.0, 10.0) == (35.0, "gateway-1")
    # Only windows inside [since, until] count.
    assert sampler.peak(0.0, 2.0) == (20.0, "gateway-1")


def test_an_unknown_scenario_is_refused_with_the_list_of_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tried: `--scenarios latency,nope`; argparse exits 2 naming the valid scenarios."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--scenarios", "latency,nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "throughput" in err


def test_bad_connection_counts_and_gateway_counts_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tried: `--connections 10k`, `--connections 0`, `--gateways 0`; each exits 2."""
    for argv in (["--connections", "10k"], ["--connections", "0"], ["--gateways", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2, argv
    assert "positive integers" in capsys.readouterr().err


def _send(client: str, conversation: int, cmid: str, at: float, outcome: str = "ok") -> SendRecord:
    return SendRecord(client, conversation, cmid, at, at + 0.001, outcome)  # type: ignore[arg-type]


def _recv(client: str, conversation: int, cmid: str, at: float, via: str = "live") -> RecvRecord:
    return RecvRecord(client, conversation, 1, 1, 1, cmid, None, at, via)  # type: ignore[arg-type]


def test_deliveries_count_the_first_receipt_per_member_and_report_what_never_came() -> None:
    """A gap fetch after a live push is one delivery; a member who got nothing is a loss."""
    history = History()
    history.record(_send("a", 1, "m1", 10.0))
    history.record(_recv("a", 1, "m1", 10.001, via="reply"))  # the sender's own reply
    history.record(_recv("b", 1, "m1", 10.020))
    history.record(_recv("b", 1, "m1", 10.500, via="fetch"))  # the same message again
    # "c" never receives m1.
    history.record(_send("b", 1, "m2", 11.0, outcome="fail"))  # rejected: expects nothing
    got = deliveries(history, {1: ["a", "b", "c"]})
    assert (got.expected, got.delivered, got.lost) == (2, 1, 1)
    assert got.sends_ok == 1 and got.sends_failed == 1
    assert got.latencies == [pytest.approx(0.020)]
    assert got.last_receipt == pytest.approx(10.020)


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    """p50 of 1..100 is 50, p99 is 99, p100 the max; no samples give NaN, not 0."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert math.isnan(percentile([], 50))


def test_cpu_split_is_per_core_and_puts_unclaimed_time_in_other() -> None:
    """Two seconds of wall: 1 s of gateway CPU is 50%; machine busy 3 s leaves 100% other."""
    before = CpuSample(
        at=0.0, parts={"gateways": 1.0, "redis": 0.0}, machine_busy=5.0, machine_total=0
    )
    after = CpuSample(
        at=2.0, parts={"gateways": 2.0, "redis": 0.0}, machine_busy=8.0, machine_total=0
    )
    split = CpuMeter.split(before, after)
    assert split == {"gateways": 50.0, "redis": 0.0, "other": 100.0, "machine": 150.0}


def test_profile_summary_charges_each_sample_to_its_innermost_frame() -> None:
    """py-spy raw lines `outer;inner count`: self time by area and function, inclusive too."""
    raw = "\n".join(
        [
            "run (uvicorn/main.py:1);send_message (messaging/services.py:50);"
            "execute (/x/site-packages/django/db/backends/utils.py:10) 6",
            "run (uvicorn/main.py:1);send_message (messaging/services.py:51) 3",
            "run (uvicorn/main.py:1);dumps (/usr/lib/python3.11/json/__init__.py:9) 1",
            "garbage line",
        ]
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 10
    assert summary["self_by_area_pct"] == [
        ["django ORM and db backend", 60.0],
        ["project code", 30.0],
        ["json / msgpack", 10.0],
    ]
    assert ["send_message (messaging/services.py)", 90.0] in summary["inclusive_by_function_pct"]


def test_a_stopped_process_reports_the_cpu_it_used_and_its_exit_status() -> None:
    """A restarted gateway's earlier runs count in the CPU split (they went negative).

    Tried: a child that burns about 0.3 s of CPU then waits to be stopped; SIGTERM it.
    """
    import signal
    import subprocess
    import sys

    from bench.harness import _end

    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "print('burnt', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline() == b"burnt\n"
    used = _end(child, signal.SIGTERM, timeout=10)
    assert used >= 0.3
    assert child.returncode == -signal.SIGTERM
    # Once reaped, stopping again finds nothing more to count.
    assert _end(child, signal.SIGTERM, timeout=1) == 0.0


def _ramp_step(rate: float, passed: bool) -> dict[str, Any]:
    return {
        "offered_deliveries_per_s": rate,
        "deliveries_per_s": rate,
        "latency_ms": {"p99": 5.0},
        "lost": 0,
        "passed": passed,
    }


def _baseline(
    direct: float, groups: float, rss: float, p99: float, *, saturated: bool
) -> dict[str, Any]:
    return {
        "direct_max_msgs_per_s": direct,
        "direct_stopped": saturated,
        "groups_max_deliveries_per_s": groups,
        "groups_stopped": True,
        "rss_per_socket_kb": rss,
        "fanout": {"members": 1000, "last_member_ms": {"p50": p99 / 2, "p99": p99}},
    }


def test_side_by_side_divides_ours_by_each_baseline_and_holds_the_stricter_tutorial() -> None:
    """Ours 600 msg/s against tutorials at 800 (in-memory) and 250 (Redis): 0.75x the faster."""
    results: dict[str, Any] = {
        "throughput": {
            "figures": {
                "direct_max_msgs_per_s": 600.0,
                "groups_max_deliveries_per_s": 3000.0,
                "direct_steps": [_ramp_step(600, True), _ramp_step(800, False)],
                "group_steps": [_ramp_step(3000, True)],  # never stopped: at least 3,000
            },
            "params": {"group_size": 10},
        },
        "baselines": {
            "figures": {
                "tutorial_memory": _baseline(800.0, 2000.0, 30.0, 100.0, saturated=True),
                "tutorial_redis": _baseline(250.0, 1500.0, 25.0, 120.0, saturated=True),
                "relay": _baseline(2000.0, 3600.0, 0.0, 10.0, saturated=False),
            },
            "cpu": {"relay, fan-out": {"gateways": 0.0, "baseline": 12.5}},
        },
        "connections": {"figures": {"steps": [{"rss_per_socket_kb": 20.0}]}},
        "fanout": {"params": {"members": 1000}, "figures": {"last_member_ms": {"p99": 300.0}}},
    }
    compared = report.side_by_side(results)
    by_figure = {row["figure"]: row for row in compared["rows"]}
    direct = by_figure["direct chats, max sustained"]
    assert direct["ours"] == 600.0 and direct["ours_at_least"] is False
    assert {n: b["ours_over_it"] for n, b in direct["baselines"].items()} == {
        "tutorial_memory": 0.75,
        "tutorial_redis": 2.4,
        "relay": 0.3,
    }
    assert direct["baselines"]["relay"]["at_least"] is True
    assert by_figure["groups of 10, max sustained"]["ours_at_least"] is True
    rss = by_figure["RSS per idle socket"]["baselines"]
    # A baseline that grew by nothing gives no ratio rather than a division by zero.
    assert (rss["tutorial_redis"]["ours_over_it"], math.isnan(rss["relay"]["ours_over_it"])) == (
        0.8,
        True,
    )
    p50 = by_figure["fan-out to 1,000, last member p50"]
    assert p50["ours"] is None and math.isnan(p50["baselines"]["relay"]["ours_over_it"])
    assert (
        by_figure["fan-out to 1,000, last member p99"]["baselines"]["tutorial_memory"][
            "ours_over_it"
        ]
        == 3.0
    )
    # Throughput against the faster tutorial (800), RSS against the leaner one (25 KB).
    assert [(t["value"], t["goal"], t["met"]) for t in compared["targets"]] == [
        (0.75, ">= 3 x", False),
        (0.8, "<= 1 x", True),
    ]
    header, body = report.side_by_side_table(results)
    assert header[1:4] == ["ours", "tutorial, in-memory", "ours / it"]
    assert body[0][1:] == ["600.0", "800.0", "0.75x", "250.0", "2.40x", "2,000.0+", "0.30x"]
    assert report.cpu_parts(results)[5] == "baseline"
    # A tutorial the ramp did not saturate bounds the ratio from above: a pass is unproven.
    results["throughput"]["figures"]["direct_max_msgs_per_s"] = 3000.0
    results["baselines"]["figures"]["tutorial_memory"]["direct_stopped"] = False
    direct_goal = report.side_by_side(results)["targets"][0]
    assert (direct_goal["value"], direct_goal["met"], direct_goal["undecided"]) == (
        3.75,
        False,
        True,
    )
    assert "undecided" in report.terminal({k: results[k] for k in ("throughput", "baselines")})
    # Without the baselines in the run there is nothing to compare and no target.
    assert report.side_by_side({"throughput": results["throughput"]}) == {
        "rows": [],
        "targets": [],
    }


def run_module(module: str, *args: str) -> str:
    """Run `python -m module args` from the repository (at most 110 s); return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.timeout(120)
def test_send_cost_times_sends_and_receipts_in_a_scratch_database() -> None:
    """`python -m bench.send_cost`: sends (two to a statement) and receipts are timed, in
    this process and in its PostgreSQL backend, the scratch database dropped."""
    stdout = run_module("bench.send_cost", "--sends", "20", "--rounds", "2", "--batch", "2")
    lines = stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["send"] * 2 + ["delivered"] * 2 + ["read"] * 2
    for line in lines:
        first, second, third = line.split(",")
        cpu, wall = float(first.split()[1]), float(third.split()[0])
        assert cpu > 0 and wall > 0, line
        # PostgreSQL runs on this machine in the suite: its backend's CPU is read too
        assert second.split()[0] != "-", line
        assert float(second.split()[0]) >= 0, line
    server = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
    with psycopg.connect(f"{server}/postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'send_cost_%'")
        assert left.fetchall() == []


@pytest.mark.timeout(120)
def test_presence_cost_reports_opens_and_heartbeats_on_a_redis_of_its_own(tmp_path: Path) -> None:
    """`python -m bench.presence_cost`: the opens of 60 users, gathered and one script call
    each, and their heartbeats, each with its Redis commands and CPU."""

    def run(open_batch: int) -> dict[str, Any]:
        out = tmp_path / f"presence-{open_batch}.json"
        args = ["--users", "60", "--rounds", "1", "--open-batch", str(open_batch)]
        stdout = run_module("bench.presence_cost", *args, "--out", str(out))
        assert "gateway CPU per open:" in stdout
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    gathered, one_each = run(200), run(1)
    # Redis counts the commands a script runs too (9 an open); one each adds an EVALSHA
    # apiece, gathered a few for all 60.
    gathered_commands = gathered["opens"]["redis_commands_per_open"]
    assert 9 <= gathered_commands < 9.2
    assert 10 <= one_each["opens"]["redis_commands_per_open"] < 10.2  # + the first EVAL
    for result in (gathered, one_each):
        assert result["opens"]["client_cpu_us_per_open"] > 0
        assert {r["mode"] for r in result["rounds"]} == {"one by one", "gathered"}
