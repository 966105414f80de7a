"""Distribution and resume of streamed shards, proved by the sample ids a training step sees.

A tiny recording LightningModule (a linear layer on mean colours) writes the ids of every batch it
trains on to one file per epoch and rank; the real ``BinCountDataModule`` with ``reader=shards``
feeds it. DDP runs on the CPU with ``ddp_spawn``/gloo (2 ranks x 2 workers).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from bincount.cli import main as cli_main
from bincount.data.datamodule import BinCountDataModule

pytest.importorskip("litdata")


class Recorder(L.LightningModule):
    """Writes ``e<epoch>-r<rank>.txt`` with the ids it trains on, in order."""

    def __init__(self, out: str, read_stepping_batches: bool = False) -> None:
        super().__init__()
        self.out, self.read_stepping_batches = out, read_stepping_batches
        self.layer = torch.nn.Linear(3, 1)

    def setup(self, stage: str) -> None:
        # ddp_spawn children inherit the "spawn" start method, so every epoch's DataLoader workers would
        # re-import torch and lightning (~45 s here). trainer=ddp (what GPUs use) forks them; so does this.
        import multiprocessing

        multiprocessing.set_start_method("fork", force=True)

    def training_step(self, batch, batch_idx):
        with open(Path(self.out) / f"e{self.current_epoch}-r{self.global_rank}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in batch["id"]))
        return self.layer(batch["image"].mean((2, 3))).pow(2).mean()

    def configure_optimizers(self):
        if self.read_stepping_batches:  # what scheduler=onecycle does (Lightning issue 20550)
            _ = self.trainer.estimated_stepping_batches
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Kill(L.Callback):
    """Stands in for a killed job: dies before training on batch ``at`` of the first epoch."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == self.at:
            raise RuntimeError("killed")


@pytest.fixture(scope="module")
def packed(tiny_abid: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "shards"
    assert cli_main(["pack", str(tiny_abid), "--out", str(out), "--chunk-bytes", "4KB", "--no-progress",
                     "--cache-dir", str(tmp_path_factory.mktemp("m")), "--workers", "4"]) == 0
    return out


def _dm(tiny_abid: Path, packed: Path, batch_size: int, workers: int = 2) -> BinCountDataModule:
    return BinCountDataModule(str(tiny_abid), classes={"min_count": 1, "max_count": 5}, img_size=16,
                              batch_size=batch_size, num_workers=workers, persistent_workers=False, augment="none",
                              reader={"mode": "shards", "shards": str(packed)})


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, num_sanity_val_steps=0, **{"devices": 1, "enable_checkpointing": False, **kwargs})


def _ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _train_ids(tiny_abid: Path, packed: Path) -> list[str]:
    dm = _dm(tiny_abid, packed, 4, 0)
    dm.setup("fit")
    return dm.split_ids("train")


@pytest.mark.slow
def test_ddp_two_ranks_two_workers_see_every_sample_per_epoch_reshuffled(tiny_abid, packed, tmp_path):
    """2 ranks x 2 workers, a batch size that does not divide the split: litdata alone would drop the rest."""
    train = _train_ids(tiny_abid, packed)
    n, world = len(train), 2
    batch = next(b for b in range(6, 1, -1) if n % (world * b))
    steps = -(-n // (world * batch))  # per rank: ceil, not floor
    _trainer(devices=world, strategy="ddp_spawn", max_epochs=2).fit(Recorder(str(tmp_path)),
                                                                    datamodule=_dm(tiny_abid, packed, batch))
    epochs = []
    for epoch in range(2):
        ranks = [_ids(tmp_path / f"e{epoch}-r{r}.txt") for r in range(world)]
        assert len(ranks[0]) == len(ranks[1]) == steps * batch  # equal batch counts per rank: no DDP hang
        seen = ranks[0] + ranks[1]
        assert set(seen) == set(train)  # every training sample, across ranks and workers
        repeats = len(seen) - n
        assert 0 < repeats < world * batch and max(map(seen.count, seen)) == 2  # the documented bound
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled


@pytest.mark.parametrize("world,workers,batch", [(2, 2, 5), (3, 2, 4), (4, 3, 32), (2, 1, 1)])
def test_padded_assignment_equal_batches_every_sample_bounded_repeats(tiny_abid, packed, tmp_path, world, workers,
                                                                      batch):
    """The per-worker plan every rank computes, read back through litdata for each simulated rank/worker."""
    from litdata.utilities.env import _DistributedEnv, _WorkerEnv

    from bincount.shards.padding import PaddedStreamingDataset

    def read(rank: int, worker: int, epoch: int) -> list[str]:
        ds = PaddedStreamingDataset(str(packed / "train"), shuffle=True, seed=7, cache_dir=str(tmp_path / "c"))
        ds.distributed_env, ds._forced_worker_env = _DistributedEnv(world, rank, 1), _WorkerEnv(workers, worker)
        ds.set_batch_size(batch), ds.set_num_workers(workers), ds.set_epoch(epoch)
        return [item["id"] for item in ds]

    train, plans = set(_train_ids(tiny_abid, packed)), {}
    for epoch in (1, 2):
        ranks = [[read(r, w, epoch) for w in range(workers)] for r in range(world)]
        batches = [sum(-(-len(ids) // batch) for ids in rank) for rank in ranks]
        seen = [i for rank in ranks for ids in rank for i in ids]
        assert set(seen) == train  # every sample
        assert len(set(batches)) == 1 and len(seen) == batches[0] * world * batch  # no rank runs short
        assert len(seen) - len(train) < world * batch  # repeats bounded
        plans[epoch] = seen
    assert set(plans[1]) == set(plans[2]) and plans[1] != plans[2]


def test_padded_plan_resumes_mid_epoch_on_the_padded_rank(tiny_abid, packed, tmp_path):
    """Rank 1 of 2 holds the repeats; litdata's mid-epoch replay of its plan continues where it stopped.

    Two workers, batches taken round-robin as ``StreamingDataLoader`` does; the state after 3 batches
    is loaded into fresh datasets (as the worker processes of a resumed run would be).
    """
    from litdata.utilities.env import _DistributedEnv, _WorkerEnv

    from bincount.shards.padding import PaddedStreamingDataset

    world, workers, batch, rank = 2, 2, 5, 1

    def dataset(worker: int, state: dict | None = None):
        ds = PaddedStreamingDataset(str(packed / "train"), shuffle=True, seed=7, cache_dir=str(tmp_path / "c"))
        ds.distributed_env, ds._forced_worker_env = _DistributedEnv(world, rank, 1), _WorkerEnv(workers, worker)
        ds.set_batch_size(batch), ds.set_num_workers(workers), ds.set_epoch(1)
        if state:
            ds.load_state_dict(state)
        return ds

    full = [[item["id"] for item in dataset(w)] for w in range(workers)]
    assert sum(map(len, full)) == batch * -(-len(_train_ids(tiny_abid, packed)) // (world * batch))
    taken = 3  # batches: worker 0, worker 1, worker 0
    state = dataset(0).state_dict(taken * batch, workers, batch)
    consumed = [2 * batch, batch]
    for w in range(workers):
        assert [item["id"] for item in dataset(w, dict(state))] == full[w][consumed[w]:]


def _resume_run(tiny_abid, packed, out: Path, batch: int, kill_at: int, stepping: bool) -> tuple[list, list]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    (out / "a").mkdir(parents=True)
    (out / "b").mkdir()
    ckpt = ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=kill_at, save_top_k=-1)
    with pytest.raises(RuntimeError, match="killed"):
        _trainer(max_epochs=1, callbacks=[ckpt, Kill(kill_at)], enable_checkpointing=True).fit(
            Recorder(str(out / "a"), stepping), datamodule=_dm(tiny_abid, packed, batch))
    (path,) = (out / "ckpt").glob("*.ckpt")
    _trainer(max_epochs=1).fit(Recorder(str(out / "b"), stepping), datamodule=_dm(tiny_abid, packed, batch),
                               ckpt_path=str(path))
    return _ids(out / "a" / "e0-r0.txt"), _ids(out / "b" / "e0-r0.txt")


@pytest.mark.parametrize("stepping", [False, True], ids=["plain", "estimated_stepping_batches"])
def test_mid_epoch_resume_continues_without_replaying_or_skipping(tiny_abid, packed, tmp_path, stepping):
    """Also when configure_optimizers reads estimated_stepping_batches (scheduler=onecycle; Lightning 20550)."""
    train = _train_ids(tiny_abid, packed)
    batch = next(b for b in range(6, 1, -1) if len(train) % b == 0 or b == 2)
    _trainer(max_epochs=1).fit(Recorder(str(tmp_path / "full")), datamodule=_dm(tiny_abid, packed, batch)) \
        if (tmp_path / "full").mkdir() is None else None
    uninterrupted = _ids(tmp_path / "full" / "e0-r0.txt")
    before, after = _resume_run(tiny_abid, packed, tmp_path / "resume", batch, kill_at=3, stepping=stepping)
    assert len(before) == 3 * batch
    assert before + after == uninterrupted  # the same epoch, in the same order: nothing replayed or skipped
