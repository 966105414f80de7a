"""Every typed value is checked before anything starts (issue 27 item 2): ``_target_`` groups included.

``optimizer.lr=abc`` used to reach torch after the Trainer had started (a 40-line TypeError, a run directory
without metrics); ``trainer.max_epoch=2`` got Hydra's "not in struct" with no suggestion.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bincount.config import ConfigError, check_target_node, unknown_override_hint

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True}


@pytest.mark.parametrize("group,node,message", [
    ("optimizer", {**ADAMW, "lr": "abc"}, "optimizer.lr='abc': expected float (the argument 'lr' of torch.optim.AdamW)"),
    ("optimizer", {**ADAMW, "lr": True}, "optimizer.lr=True: expected float"),
    ("optimizer", {**ADAMW, "betas": 0.9}, "optimizer.betas=0.9: expected tuple"),
    ("optimizer", {**ADAMW, "amsgrad": "yes"}, "optimizer.amsgrad='yes': expected bool"),
    ("trainer", {"_target_": "lightning.Trainer", "max_epochs": "abc"},
     "trainer.max_epochs='abc': expected NoneType or int (the argument 'max_epochs' of lightning.Trainer)"),
    ("trainer", {"_target_": "lightning.Trainer", "max_epochs": 2.5}, "trainer.max_epochs=2.5: expected NoneType or int"),
    ("scheduler", {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": "3"},
     "scheduler.step_size='3': expected int"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_key_and_type(group, node, message):
    with pytest.raises(ConfigError) as refused:
        check_target_node(group, node)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("group,node", [
    ("optimizer", {**ADAMW, "lr": 1}),  # an int where a float goes: YAML writes 1 for 1.0
    ("optimizer", {**ADAMW, "lr": 3e-4, "betas": [0.9, 0.99], "foreach": None}),
    ("trainer", {"_target_": "lightning.Trainer", "max_epochs": None, "precision": "bf16-mixed", "devices": "auto",
                 "limit_train_batches": 0.5, "max_time": {"hours": 1}}),
    ("trainer", {"_target_": "lightning.Trainer", "precision": 32, "devices": [0, 1]}),
    ("trainer", {"_target_": "lightning.Trainer", "profiler": {"_target_": "lightning.pytorch.profilers.SimpleProfiler"}}),
])
def test_values_of_the_right_type_pass(group, node):
    check_target_node(group, node)


GROUPS = ("optimizer", "scheduler", "trainer", "callbacks", "logger", "profiler")


@pytest.mark.slow  # one Hydra compose per option (about 1 s each)
@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_shipped_option_passes_the_type_check(group, option, tmp_path):
    """The check must not refuse what the project ships (each option composed as a user would pick it)."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}"], return_hydra_config=True)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # what Hydra sets for a run; paths and loggers interpolate it
    HydraConfig.instance().set_config(cfg)
    node = cfg.get(group)
    nodes = [(group, node)] if group in ("optimizer", "scheduler", "trainer", "profiler") else \
        [(f"{group}.{k}", v) for k, v in (node or {}).items()]
    for key, value in nodes:
        check_target_node(key, value)


@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epoch=2", "unknown config key 'trainer.max_epoch'. Did you mean 'max_epochs'"),
    ("optimizer.betas=[0.9,0.9]", "'optimizer.betas' is not set by the config, so it cannot be overridden: add it "
                                  "with +optimizer.betas=VALUE"),
    ("data.batchsize=3", "unknown config key 'data.batchsize'. Did you mean 'batch_size'?"),
])
def test_an_unknown_override_gets_the_close_names(override, expected):
    message = (f"Could not override '{override.split('=')[0]}'.\nKey '{override.split('=')[0].rsplit('.', 1)[1]}' is "
               f"not in struct\n    full_key: {override.split('=')[0]}\n    object_type=dict\n")
    assert unknown_override_hint(message, [override], str(CONF), "train").startswith(expected)
    assert unknown_override_hint("some other Hydra error", [override], str(CONF), "train") is None


@pytest.mark.slow
@pytest.mark.parametrize("override,needle", [
    ("optimizer.lr=abc", "train.py: config error: optimizer.lr='abc': expected float (the argument 'lr' of "
                         "torch.optim.AdamW)\n"),
    ("trainer.max_epoch=2", "train.py: config error: unknown config key 'trainer.max_epoch'. Did you mean "
                            "'max_epochs' or"),
])
def test_train_py_refuses_before_anything_starts_exit_2_no_run_directory(override, needle, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), override, f"paths.log_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no run directory, no file left"


def test_the_schema_keeps_the_shipped_paths_as_text_and_refuses_an_unknown_top_key():
    """``paths`` is a free map of text (log_dir, output_dir, ...): the schema merge keeps every entry as written,
    and a misspelled top-level key is refused with the close name."""
    from omegaconf import OmegaConf

    from bincount.config import check_schema

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.log_dir=/tmp/bc-logs"])
    typed = check_schema(cfg)
    shipped = OmegaConf.to_container(cfg.paths, resolve=False)
    assert OmegaConf.to_container(typed.paths, resolve=False) == shipped and shipped["log_dir"] == "/tmp/bc-logs"
    assert all(isinstance(v, str) for v in shipped.values())
    with pytest.raises(ConfigError, match=r"unknown config key 'pathz'\. Did you mean 'paths'\?"):
        check_schema(OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg)), {"pathz": {"x": "y"}}))
