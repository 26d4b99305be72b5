"""The suite's runner (tests/shards.py): how files and ports are dealt out to processes."""

from __future__ import annotations

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
    slices = [shards.port_slice(n, 3) for n in (1, 2, 3)]
    bounds = [tuple(int(p) for p in given.split("-")) for given in slices]
    assert bounds[0][0] == shards.PORT_FLOOR
    assert all(low <= high for low, high in bounds)
    assert all(bounds[n][1] < bounds[n + 1][0] for n in range(2))

    monkeypatch.setenv("CHAT_TEST_PORTS", slices[1])
    low, high = bounds[1]
    drawn = [harness.free_port() for _ in range(50)]
    assert all(low <= port <= high for port in drawn), drawn
