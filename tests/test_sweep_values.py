"""What the Optuna sweeper sets up by default, checked by value (issue 25, item 4).

The end-to-end sweeps look for the word "pruning" in the log, which any pruner prints, NopPruner included;
here the study the sweeper would open from the project's own config is built without running a trial,
and its pruner is checked by type and settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

optuna = pytest.importorskip("optuna")

CONF = Path(__file__).resolve().parents[1] / "conf"


def default_study(overrides: list[str], storage: str):
    """The study ``OptunaSweep.sweep`` opens for ``python train.py -m <overrides>``: Hydra instantiates the
    sweeper plugin from the composed config (its sampler and pruner nodes with it), and the sweep opens the
    study with them."""
    from bincount.sweep.study import open_study
    from bincount.sweep.sweeper import OptunaSweep, _instance

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    sweep = OptunaSweep(**instantiate(cfg.hydra.sweeper).kwargs)
    return open_study(storage, sweep.study_name, "maximize", _instance(sweep.sampler), _instance(sweep.pruner), [], [])


@pytest.mark.parametrize("overrides", [["hydra/sweeper=bincount_optuna"], ["hparams_search=recommended"],
                                       ["hparams_search=capstone_tuner"], ["hparams_search=quick"]])
def test_the_default_pruner_is_median_after_5_trials_and_1_epoch(tmp_path, overrides):
    """Median pruning (docs/sweeps.md): a trial whose epoch-k value is below the median of earlier trials at
    epoch k is stopped, once 5 trials have finished and from its second epoch on, checked every epoch."""
    pruner = default_study(overrides, f"sqlite:///{tmp_path / 'optuna.db'}").pruner
    assert type(pruner) is optuna.pruners.MedianPruner
    assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps, pruner._interval_steps) == (
        50.0, 5, 1, 1)


def test_pruner_none_turns_pruning_off(tmp_path):
    pruner = default_study(["hydra/sweeper=bincount_optuna", "hydra/sweeper/pruner=none"],
                           f"sqlite:///{tmp_path / 'optuna.db'}").pruner
    assert type(pruner) is optuna.pruners.NopPruner


def test_the_cpu_sized_search_is_cpu_sized():
    """`hparams_search=quick` is the README's minute-long sweep: a tiny model, small images, few trials."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=quick"], return_hydra_config=True)
    assert (cfg.model.backbone, cfg.data.img_size, cfg.data.synthetic.num_images) == ("test_resnet", 32, 400)
    assert (cfg.trainer.max_epochs, cfg.hydra.sweeper.n_trials, cfg.optimized_metric) == (3, 6, "val/acc")
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
