"""The suite's runner (tests/shards.py): how files and ports are dealt out to processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import harness
from tests import shards


def test_every_file_goes_to_exactly_one_shard_longest_first_to_the_lightest() -> None:
    # Tried: six files of known length over three shards, and one file with no record.
    seconds = {"a.py": 90.0, "b.py": 60.0, "c.py": 50.0, "d.py": 40.0, "e.py": 10.0}
    dealt = shards.deal([*seconds, "new.py"], 3, seconds)

    assert sorted(name for shard in dealt for name in shard.files) == sorted([*seconds, "new.py"])
    # a (90) -> 1, b (60) -> 2, c (50) -> 3, d (40) -> 3, e (10) -> 2, new (10) -> 2.
    assert [shard.files for shard in dealt] == [
        ["a.py"],
        ["b.py", "e.py", "new.py"],
        ["c.py", "d.py"],
    ]
    assert [shard.seconds for shard in dealt] == [
        90.0,
        60.0 + 10.0 + shards.UNKNOWN_FILE_SECONDS,
        90.0,
    ]


def test_the_runner_finds_the_suites_files_but_not_the_embedded_ones() -> None:
    files = shards.test_files()

    assert "tests/test_shards.py" in files
    assert "tests/e2e/test_browser.py" in files
    assert not [name for name in files if name.startswith("tests/embedded/")]


def test_port_slices_are_disjoint_and_free_port_keeps_to_its_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tried: three slices; then 50 ports drawn with the second one set.
    slices = [harness.port_slice(n, 3) for n in (1, 2, 3)]
    bounds = [tuple(int(p) for p in given.split("-")) for given in slices]
    assert all(high - low >= 1000 for low, high in bounds), bounds
    assert all(bounds[n][1] < bounds[n + 1][0] for n in range(2)), bounds

    monkeypatch.setenv("CHAT_TEST_PORTS", slices[1])
    low, high = bounds[1]
    drawn = [harness.free_port() for _ in range(50)]
    assert all(low <= port <= high for port in drawn), drawn


def test_a_shards_summary_and_failures_are_read_from_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: a log ending as a failed run does, one as a passed -q run does, and one cut off.
    monkeypatch.setattr(shards, "ARTIFACTS", tmp_path)
    failed, quiet, cut = shards.Shard(1), shards.Shard(2), shards.Shard(3)
    failed.log.write_text(
        "....F.\n"
        "=================================== FAILURES ===================================\n"
        "___ test_x ___\nE   assert 1 == 2\n"
        "=========================== short test summary info ============================\n"
        "FAILED tests/test_x.py::test_x - assert 1 == 2\n"
        "========= 1 failed, 5 passed, 2 subtests passed in 12.34s (0:00:12) =========\n"
    )
    quiet.log.write_text("....\n280 passed in 35.25s\n")
    cut.log.write_text("......  [ 50%]\n")

    assert shards.summary_line(failed) == "1 failed, 5 passed, 2 subtests passed"
    assert shards.summary_line(quiet) == "280 passed"
    assert shards.summary_line(cut) == "no summary line (see the log)"
    report = shards.failure_report(failed)
    assert report.splitlines()[0].strip("= ") == "FAILURES"
    assert "FAILED tests/test_x.py::test_x" in report
    assert shards.progress(cut) == "shard 3: 50%"
