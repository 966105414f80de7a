"""Batch-size calibration at start: the fastest size up to ``--max-batch-size`` caps the batches.

The choice is tested on a model whose forward takes a known time per batch size (what is under test is
the choice, not torch); the wiring on a real bundle served on loopback: the cap reaches the batcher and the
admission estimate before ``/ping`` says ready, and ``--no-calibrate`` keeps ``--max-batch-size``.
"""

from __future__ import annotations

import argparse
import logging
import time

import pytest
import torch
from conftest import write_tiny_bundle
from helpers.serve import running

from bincount.serve.app import Settings
from bincount.serve.calibrate import NEAR_BEST, best_batch_size, sizes_up_to
from bincount.serve.cli import add_arguments


class TimedModel:
    """``predict`` sleeps ``seconds_per_batch(size)``."""

    def __init__(self, seconds_per_batch) -> None:
        self.seconds_per_batch, self.calls = seconds_per_batch, []

    def predict(self, batch):
        self.calls.append(len(batch))
        time.sleep(self.seconds_per_batch(len(batch)))


@pytest.mark.parametrize("largest, sizes", [(1, [1]), (2, [1, 2]), (12, [1, 2, 4, 8, 12]), (16, [1, 2, 4, 8, 16])])
def test_the_sizes_timed_are_powers_of_two_then_the_largest(largest, sizes):
    assert sizes_up_to(largest) == sizes


def test_a_model_fastest_one_at_a_time_gets_batches_of_one(caplog):
    caplog.set_level(logging.INFO)
    model = TimedModel(lambda n: 0.004 * n if n == 1 else 0.008 * n)  # per image: 4 ms alone, 8 ms batched
    chosen, rates = best_batch_size(model, torch.zeros(3, 4, 4), 8, budget_s=0.05)
    assert chosen == 1 and list(rates) == [1, 2, 4, 8]
    assert rates[1] > 1.5 * rates[8]
    assert set(model.calls) == {1, 2, 4, 8}
    assert "batches capped at 1 of --max-batch-size 8" in caplog.text


def test_the_smallest_size_near_the_best_rate_wins():
    # per image: 8 ms alone, 4 ms from 4 up (4 and 8 tie): the smaller of the tied sizes answers sooner
    model = TimedModel(lambda n: 0.008 * n if n < 4 else 0.004 * n)
    chosen, rates = best_batch_size(model, torch.zeros(3, 4, 4), 8, budget_s=0.05)
    assert chosen == 4, rates
    assert rates[4] >= NEAR_BEST * max(rates.values())


def test_a_model_faster_in_big_batches_gets_the_largest():
    model = TimedModel(lambda n: 0.005 + 0.0005 * n)  # a fixed cost per call: bigger is faster per image
    chosen, _ = best_batch_size(model, torch.zeros(3, 4, 4), 16, budget_s=0.05)
    assert chosen == 16


def test_the_server_times_batch_sizes_before_it_is_ready_and_caps_batches(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bundle = write_tiny_bundle(tmp_path / "model")
    with running(Settings(model=str(bundle), max_batch_size=8, calibrate_batch_size=True)) as (url, app):
        state = app.state.bincount
        assert state.batcher.max_batch_size in (1, 2, 4, 8)
        assert state.admission.max_batch_size == state.batcher.max_batch_size
    lines = [r.getMessage() for r in caplog.records if r.name == "bincount.serve"]
    timed = next(i for i, line in enumerate(lines) if "batches capped at" in line)
    ready = next(i for i, line in enumerate(lines) if line.endswith("; ready"))
    assert timed < ready, "the batch sizes are timed before /ping says ready"
    assert f"batches capped at {state.batcher.max_batch_size} of --max-batch-size 8" in lines[timed]
    with running(Settings(model=str(bundle), max_batch_size=8)) as (url, app):
        assert app.state.bincount.batcher.max_batch_size == 8


def test_the_cli_calibrates_unless_told_not_to():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["m"]).calibrate is True
    assert parser.parse_args(["m", "--no-calibrate"]).calibrate is False
