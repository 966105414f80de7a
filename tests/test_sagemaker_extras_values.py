"""Which extras a job installs, read from a config the launcher cannot fully resolve (a variable set only
inside the job), and the launcher plugin's own state before Hydra sets it up."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bincount.sagemaker.extras import _value, job_extras
from hydra_plugins.bincount_sagemaker_launcher.launcher import SageMakerLauncher

UNSET = "${oc.env:BC_EXTRAS_TEST_UNSET}"


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    monkeypatch.delenv("BC_EXTRAS_TEST_UNSET", raising=False)


@pytest.mark.parametrize("config", [
    {"data": {"root": "/local", "reader": {"mode": "local", "shards": f"s3://b/{UNSET}/shards"}}},  # three levels
    {"data": {"root": f"s3://b/{UNSET}", "reader": {"mode": "local"}}},  # two levels
    {"bundle": f"s3://models/{UNSET}", "output": "p.csv", "inputs": "x"},  # top level
])
def test_an_s3_location_behind_an_unresolvable_variable_still_needs_the_s3_extra(config):
    assert job_extras(OmegaConf.create(config)) == ["s3"]


def test_a_local_location_behind_an_unresolvable_variable_needs_no_extra():
    assert job_extras(OmegaConf.create({"data": {"root": f"/data/{UNSET}", "reader": {"mode": "local"}}})) == []


def test_value_gives_the_text_of_what_cannot_be_resolved_and_none_for_missing():
    cfg = OmegaConf.create({"a": {"b": {"c": f"{UNSET}/x"}}, "top": UNSET, "m": "???", "d": {"m": "???"},
                            "plain": {"k": 3}})
    assert _value(cfg, "a.b.c") == f"{UNSET}/x"
    assert _value(cfg, "top") == UNSET
    assert _value(cfg, "plain.k") == 3
    assert [_value(cfg, k) for k in ("m", "d.m", "a.b.zz", "nope.x", "top.x")] == [None] * 5


def test_the_launchers_settings_are_typed_checked_and_resolved_once_at_setup():
    from bincount.sagemaker.settings import LauncherSettings, LocalSettings

    launcher = SageMakerLauncher(backend="local", instance_type="local", base_job_name="${instance_type}-run",
                                 local=OmegaConf.create({"num_gpus": 2}))
    assert launcher.settings is None and not launcher.cancelled.is_set()
    launcher.setup(hydra_context=None, task_function=None, config=None)
    assert launcher.settings == LauncherSettings(backend="local", instance_type="local", base_job_name="local-run",
                                                 local=LocalSettings(num_gpus=2))
    assert type(launcher.settings.local) is LocalSettings and type(launcher.settings.environment) is dict


def test_a_launch_before_setup_is_refused():
    launcher = SageMakerLauncher(instance_type="ml.g5.xlarge")
    # nothing but the node's fields until setup(): no settings, config, task function or Hydra context
    assert (launcher.settings, launcher.config, launcher.task_function, launcher.hydra_context) == (None,) * 4
    assert launcher.params == {"instance_type": "ml.g5.xlarge"}
    refused = ("SageMakerLauncher.launch() before setup(): Hydra calls setup() first with the config, the task "
               "function and its context; nothing was launched")
    with pytest.raises(RuntimeError) as e:
        launcher.launch([["x=1"]], initial_job_idx=0)
    assert str(e.value) == refused
    # all but the settings, set by hand: still refused (only setup() builds the settings)
    launcher.config, launcher.task_function, launcher.hydra_context = OmegaConf.create({}), lambda cfg: None, object()
    with pytest.raises(RuntimeError) as e:
        launcher.launch([["x=1"]], initial_job_idx=0)
    assert str(e.value) == refused
    launcher.cancel()
    assert launcher.cancelled.is_set()
