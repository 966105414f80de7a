"""``resume=true`` continues the newest run *started with the same overrides*, not just the newest run.

The end-to-end resume (a killed run continued to its last epoch) is ``test_train.py``; here the choice of
run directory, among real-looking run directories of other commands.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bincount.resume import find_previous_run


def make_run(base: Path, stamp: str, overrides: list[str]) -> Path:
    run = base / stamp
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run


def test_the_newest_run_of_the_same_command_among_others(tmp_path):
    older = make_run(tmp_path, "2026-12-01_10-00-00", ["model=tiny", "optimizer.lr=0.01"])
    mine = make_run(tmp_path, "2026-12-02_10-00-00", ["optimizer.lr=0.01", "model=tiny", "resume=true"])
    make_run(tmp_path, "2026-12-03_10-00-00", ["model=tiny", "optimizer.lr=0.1"])  # newest, another command
    make_run(tmp_path, "2026-12-04_10-00-00", ["model=tiny"])  # a prefix of the command is another command
    (tmp_path / "2026-12-05_10-00-00").mkdir()  # a run killed before Hydra saved its overrides
    assert find_previous_run(tmp_path, ["model=tiny", "optimizer.lr=0.01", "resume=true"]) == mine
    assert find_previous_run(tmp_path, ["+resume=true", "optimizer.lr=0.01", "model=tiny"]) == mine
    assert older != mine


def test_no_run_of_this_command_starts_a_new_one(tmp_path):
    make_run(tmp_path, "2026-12-03_10-00-00", ["model=tiny", "optimizer.lr=0.1"])
    assert find_previous_run(tmp_path, ["model=tiny", "resume=true"]) is None
    assert find_previous_run(tmp_path / "missing", ["resume=true"]) is None
