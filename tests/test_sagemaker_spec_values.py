"""What ``bincount.sagemaker.spec`` computes for one job, checked by value: the job's name (SageMaker's
characters and length), the overrides the job gets, its command line and environment, its directories,
the pickled task, and which payload ``auto`` picks.

A tiny Hydra app composed in MULTIRUN mode through Hydra's own loader stands in for ``train.py``, so
``build_spec`` runs as the launcher calls it, with no job, no SDK and no subprocess.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from helpers.launcher_settings import settings

from bincount.sagemaker.job.callback import config_sha
from bincount.sagemaker.settings import LauncherConfigError
from bincount.sagemaker.spec import _key, base_job_name, build_spec, extra_overrides, job_dirs, resolve_payload

APP = """\
defaults:
  - trainer: cpu
  - preset: none
  - _self_
report: false
x: 1
"""


def task(cfg) -> float:
    """The job's task function (pickled by reference with payload=pickle)."""
    return float(cfg.x)


def main_task(cfg) -> float:
    """A task defined in the script being run, as ``@hydra.main`` leaves it."""
    return float(cfg.x)


main_task.__module__ = "__main__"


def params(**changes):
    """The launcher's settings, as ``SageMakerLauncher`` holds them: the typed defaults, then ``changes``."""
    return settings(**changes)


@pytest.fixture
def app(tmp_path, monkeypatch):
    """``launcher(hydra_overrides)``: a launcher after ``setup`` (config, context, task) for the tiny app whose
    code channel is ``tmp_path``, with the sweep in ``tmp_path/sweep``."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton
    from hydra.types import HydraContext, RunMode

    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf"
    for path, text in {"app.yaml": APP, "trainer/cpu.yaml": "accelerator: cpu\n",
                       "trainer/gpu.yaml": "accelerator: gpu\n", "preset/none.yaml": "# @package _global_\n{}\n",
                       "preset/fast.yaml": "# @package _global_\nx: 2\n"}.items():
        (conf / path).parent.mkdir(parents=True, exist_ok=True)
        (conf / path).write_text(text)
    (tmp_path / "app.py").write_text("# the entry script\nprint('app')\n")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "app.py")])
    state = Singleton.get_state()

    def launcher(hydra_overrides=(), sweep_dir=None, task_function=task):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("app", [f"hydra.sweep.dir={sweep_dir or tmp_path / 'sweep'}", *hydra_overrides],
                                   run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        ctx = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))
        return SimpleNamespace(config=cfg, hydra_context=ctx, task_function=task_function)

    with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="app"):
        yield launcher
    Singleton.set_state(state)


ENTRY = ["python", "-m", "bincount.sagemaker.job.entry"]


# _key / extra_overrides ------------------------------------------------------------------------------------

def test_an_overrides_key_drops_the_value_and_the_add_or_delete_prefix_only():
    assert _key("+~trainer.max_epochs=3=4") == "trainer.max_epochs"
    assert _key("~XY+z=1") == "XY+z"  # only the leading '+'/'~' go: a key's own 'X' or a later '+' stays
    assert _key("Xray=1") == "Xray"
    assert _key("model") == "model"


def test_extra_overrides_without_a_config_keep_the_defaults_the_user_did_not_set():
    defaults = ["trainer=gpu", "resume=true", "+optimizer.lr=0.1", "~Xtra"]
    assert extra_overrides(["+trainer=cpu", "optimizer.lr=1=2", "Xtra=3"], defaults) == ["resume=true"]
    assert extra_overrides(["+resume=false"], defaults, None) == ["trainer=gpu", "+optimizer.lr=0.1", "~Xtra"]
    assert extra_overrides([], defaults) == defaults


def test_extra_overrides_keep_only_the_keys_and_groups_the_app_has(app):
    """``preset`` is a group whose options write elsewhere (``_global_``): only hydra.runtime.choices has it."""
    config = app().config
    assert "preset" not in config and config.hydra.runtime.choices.preset == "none"
    defaults = ["trainer=gpu", "preset=fast", "resume=true", "+x=3"]
    assert extra_overrides([], defaults, config) == ["trainer=gpu", "preset=fast", "+x=3"]
    assert extra_overrides(["preset=none", "+trainer=cpu"], defaults, config) == ["+x=3"]
    # A config without a hydra node: only its own keys.
    assert extra_overrides([], defaults, OmegaConf.create({"x": 1})) == ["+x=3"]


# base_job_name ----------------------------------------------------------------------------------------------

def test_a_job_name_keeps_letters_digits_and_dashes_of_the_base_then_the_job_number_and_6_hex_digits():
    name = base_job_name("My_Exp.v2", 3)
    assert re.fullmatch(r"My-Exp-v2-3-[0-9a-f]{6}", name), name
    assert re.fullmatch(r"XaZ-09-q-12-[0-9a-f]{6}", base_job_name("XaZ-09 q", 12))
    assert base_job_name("a", 0) != base_job_name("a", 0), "the random part makes two launches' names differ"


def test_a_job_names_base_loses_its_outer_dashes_then_is_cut_to_24_characters():
    assert re.fullmatch(r"abc-7-[0-9a-f]{6}", base_job_name("_.abc-_", 7))
    assert re.fullmatch(r"X-run-X-1-[0-9a-f]{6}", base_job_name("X_run_X", 1))
    long = "A" * 30 + "b" * 40
    name = base_job_name(long, 123)
    assert re.fullmatch(r"A{24}-123-[0-9a-f]{6}", name), name
    assert len(base_job_name(long, 0)) == 24 + len("-0-") + 6 == 33  # the SDK's "-<timestamp>" still fits 63
    # Cut after stripping: a dash at the cut stays (SageMaker allows consecutive dashes).
    assert re.fullmatch(r"a{23}--0-[0-9a-f]{6}", base_job_name("a" * 23 + "_b", 0))


def test_a_base_with_nothing_usable_becomes_job():
    for base in ("", "___", "-.-", "é"):
        assert re.fullmatch(r"job-4-[0-9a-f]{6}", base_job_name(base, 4)), base


# resolve_payload --------------------------------------------------------------------------------------------

def test_a_payload_named_by_the_user_is_kept_whatever_the_task(tmp_path, monkeypatch):
    script = tmp_path / "app.py"
    script.write_text("print()\n")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert resolve_payload(settings(payload="pickle"), main_task) == "pickle"
    assert resolve_payload(settings(payload="script"), task) == "script"
    assert resolve_payload(settings(payload="script"), None) == "script"


def test_auto_is_script_for_the_main_of_an_existing_py_file_run_as_argv_0(tmp_path, monkeypatch):
    script = tmp_path / "app.py"
    script.write_text("print()\n")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert resolve_payload(settings(payload="auto"), main_task) == "script"
    monkeypatch.setattr(sys, "argv", [str(script), "x=1"])  # the script is argv[0], not an argument
    assert resolve_payload(settings(payload="auto"), main_task) == "script"


def test_auto_is_pickle_for_any_other_task_or_script(tmp_path, monkeypatch):
    script, other = tmp_path / "app.py", tmp_path / "app.txt"
    script.write_text("print()\n")
    other.write_text("print()\n")
    cases = [([str(script)], task), ([str(script)], None), ([str(script)], 3),  # no __module__ at all
             ([str(tmp_path / "gone.py")], main_task), ([str(other)], main_task),
             ([str(other), str(script)], main_task), ([str(tmp_path)], main_task)]
    for argv, task_function in cases:
        monkeypatch.setattr(sys, "argv", argv)
        assert resolve_payload(settings(payload="auto"), task_function) == "pickle", (argv, task_function)


# job_dirs ---------------------------------------------------------------------------------------------------

def test_a_job_dir_inside_the_code_channel_is_relative_to_it(app, tmp_path):
    config = app().config
    config.hydra.job.num = 5
    local_dir, rel = job_dirs(config, tmp_path)
    assert (local_dir, rel) == (tmp_path / "sweep" / "5", "sweep/5")


def test_a_job_dir_outside_the_code_channel_goes_under_multirun_by_the_sweeps_name(app, tmp_path):
    config = app(sweep_dir=tmp_path / "elsewhere" / "my-sweep").config
    config.hydra.job.num = 2
    local_dir, rel = job_dirs(config, tmp_path / "code")
    assert (local_dir, rel) == (tmp_path / "elsewhere" / "my-sweep" / "2", "multirun/my-sweep/2")


# build_spec -------------------------------------------------------------------------------------------------

def test_a_script_jobs_spec_pins_its_command_environment_name_and_state(app, tmp_path):
    launcher = app(["hydra.verbose=true", "hydra.job.chdir=false"])
    p = params(job_overrides=["trainer=gpu", "resume=true"], environment={"FOO": "bar", "N": 3},
               secrets={"WANDB_API_KEY": "bincount/wandb", "HF_TOKEN": "bincount/hf"}, base_job_name="My_Sweep",
               network="tcp", checkpoint_subdir="ckpts", payload="script")
    spec = build_spec(launcher, p, ["x=5"], 3, "script", tmp_path)
    assert spec.idx == 3 and spec.overrides == ["x=5"]
    assert (spec.local_dir, spec.rel_dir) == (tmp_path / "sweep" / "3", "sweep/3")
    assert spec.argv == [*ENTRY, "--script", "app.py", "--", "x=5", "trainer=gpu", "hydra.verbose=true",
                         "hydra.job.chdir=false"]
    assert spec.sha == config_sha(spec.config) and len(spec.sha) == 64
    assert spec.env == {"BINCOUNT_SM_JOB_DIR": "sweep/3", "BINCOUNT_SM_NETWORK": "tcp", "FOO": "bar", "N": "3",
                        "BINCOUNT_SM_CHECKPOINT_SUBDIR": "ckpts",
                        "BINCOUNT_SM_SECRETS": "WANDB_API_KEY=bincount/wandb,HF_TOKEN=bincount/hf",
                        "BINCOUNT_SM_CONFIG_SHA": spec.sha}
    assert re.fullmatch(r"My-Sweep-3-[0-9a-f]{6}", spec.base_name), spec.base_name
    assert spec.pickle is None and spec.extra == {} and spec.extras == [] and spec.pickled_result is False
    code = (tmp_path / "app.py").read_bytes()
    assert spec.state_sha == hashlib.sha256(spec.sha.encode() + code).hexdigest()
    # The job's config: the user's override and the launcher's default the app has (no resume: not the app's).
    assert (spec.config.x, spec.config.trainer.accelerator, spec.config.hydra.job.num) == (5, "gpu", 3)
    assert spec.config.hydra.job.id == "My_Sweep_3" and "resume" not in spec.config


def test_no_checkpoint_subdir_or_secrets_leaves_their_variables_out(app, tmp_path):
    p = params(checkpoint_subdir=None, secrets={}, payload="script")
    spec = build_spec(app(), p, [], 0, "script", tmp_path)
    assert spec.env == {"BINCOUNT_SM_JOB_DIR": "sweep/0", "BINCOUNT_SM_NETWORK": "auto",
                        "BINCOUNT_SM_CONFIG_SHA": spec.sha}
    assert spec.argv == [*ENTRY, "--script", "app.py", "--"]


def test_a_hydra_override_that_configures_the_launch_does_not_reach_the_job(app, tmp_path):
    launcher = app(["hydra.sweep.subdir=${hydra.job.num}", "hydra.mode=MULTIRUN", "+hydra.job.env_set.A=${x}"])
    spec = build_spec(launcher, params(), ["x=2"], 1, "script", tmp_path)
    # ${x} is the job's to resolve: it travels as text.
    assert spec.argv == [*ENTRY, "--script", "app.py", "--", "x=2", "+hydra.job.env_set.A=${x}"]


def test_a_pruned_trials_variables_go_to_the_launcher_not_the_jobs_command_line(app, tmp_path):
    trial = ["+hydra.job.env_set.BINCOUNT_OPTUNA_STUDY='s'", "+hydra.job.env_set.BINCOUNT_OPTUNA_TRIAL='7'"]
    spec = build_spec(app(), params(), ["x=4", *trial], 2, "script", tmp_path)
    assert spec.argv == [*ENTRY, "--script", "app.py", "--", "x=4"]
    assert spec.extra == {"trial": {"BINCOUNT_OPTUNA_STUDY": "s", "BINCOUNT_OPTUNA_TRIAL": "7"}}
    assert spec.env["BINCOUNT_SM_PROGRESS"] == "1"
    assert spec.extras == ["sweep"]  # the job's config names a trial: the sweep extra is installed
    assert spec.overrides == ["x=4", *trial]


def test_a_pickled_trial_is_not_handed_to_the_launcher(app, tmp_path):
    trial = ["+hydra.job.env_set.BINCOUNT_OPTUNA_TRIAL='7'"]
    spec = build_spec(app(), params(), ["x=4", *trial], 2, "pickle", tmp_path)
    assert spec.extra == {} and "BINCOUNT_SM_PROGRESS" not in spec.env


def test_an_entry_script_outside_the_code_channel_is_refused_by_name(app, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    with pytest.raises(LauncherConfigError) as e:
        build_spec(app(), params(), [], 0, "script", code)
    assert str(e.value) == (f"the entry script {tmp_path / 'app.py'} is outside the code channel {code}; "
                            "set hydra.launcher.source_dir to a directory that contains it")


def test_a_pickled_jobs_spec_carries_the_task_its_context_and_config(app, tmp_path):
    from hydra.types import HydraContext

    launcher = app()
    p = params(payload="pickle", environment={}, base_job_name="pk")
    spec = build_spec(launcher, p, ["x=6"], 4, "pickle", tmp_path)
    assert spec.argv == [*ENTRY, "--pickle", "_sagemaker_jobs/job4.pkl"]
    assert spec.pickle_path == "_sagemaker_jobs/job4.pkl"
    assert spec.env == {"BINCOUNT_SM_JOB_DIR": "sweep/4", "BINCOUNT_SM_NETWORK": "auto",
                        "BINCOUNT_SM_CHECKPOINT_SUBDIR": "checkpoints"}
    assert spec.state_sha == hashlib.sha256(spec.sha.encode() + spec.pickle).hexdigest()
    assert spec.pickled_result is True and re.fullmatch(r"pk-4-[0-9a-f]{6}", spec.base_name)
    loaded = pickle.loads(spec.pickle)
    assert sorted(loaded) == ["config", "hydra_context", "singleton_state", "task_function"]
    assert loaded["task_function"] is task and isinstance(loaded["hydra_context"], HydraContext)
    assert loaded["config"] == spec.config and loaded["config"].x == 6
    assert isinstance(loaded["singleton_state"], dict)


def test_only_payload_pickle_by_name_trusts_the_jobs_pickled_result(app, tmp_path):
    for named, expected in (("auto", False), ("script", False), ("pickle", True)):
        spec = build_spec(app(), params(payload=named), [], 0, "pickle", tmp_path)
        assert spec.pickled_result is expected, named
