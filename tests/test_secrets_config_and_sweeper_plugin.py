"""In-process checks of two Hydra entry points whose other tests run ``train.py`` end to end (slow tier):

- ``bincount.secrets_config``: which ``${oc.env:NAME}`` variables an unresolved leaf is checked by, and the
  ``leak_check`` callback's ``on_run_start`` / ``on_multirun_start`` (what each refuses, the exact line);
- ``hydra_plugins.bincount_optuna_sweeper``: the plugin's ``setup`` (what it hands ``OptunaSweep`` and the
  launcher) and ``sweep`` (the arguments passed on, a setting error turned into its one-line message).

The sweeper is built the way ``Hydra.multirun`` builds it: a config composed by Hydra's own loader in
MULTIRUN mode, a real ``HydraContext`` and ``Plugins.instance().instantiate_sweeper``; the task function is a
plain function run by Hydra's basic launcher in this process (no training).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bincount.secrets import ADVICE
from bincount.secrets_config import SecretCheck, _env_values, config_problems

DB_PASSWORD = "Planted-Db-pw-5120"
DATABASE_URL = f"postgres://u:{DB_PASSWORD}@db.example/bins"
OWN_SWEEPER = "hydra_plugins.bincount_optuna_sweeper.optuna_sweeper.BincountOptunaSweeper"
# A leaf that never resolves outside a job (a missing key, whatever HydraConfig holds), so its text is checked.
UNRESOLVABLE = "${paths.nowhere}"


# --- _env_values: the variables an unresolved ${oc.env:...} would copy in ---

@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("BC_T_FIRST", "first-value")
    monkeypatch.setenv("BC_T_SECOND", "second-value")
    monkeypatch.delenv("BC_T_UNSET", raising=False)
    return monkeypatch


@pytest.mark.parametrize("text, values", [
    ("${oc.env:BC_T_FIRST}", ["first-value"]),  # the closing brace is not part of the name
    ("${oc.env:BC_T_FIRST,fallback}", ["first-value"]),  # nor the default after the comma
    ("${oc.env:BC_T_FIRST, some default}", ["first-value"]),
    ("${oc.env: BC_T_FIRST }", ["first-value"]),  # spaces around the name
    ("${oc.env:BC_T_FIRST}/x", ["first-value"]),  # text after the reference
    ("${x.y}/${oc.env:BC_T_FIRST}", ["first-value"]),  # the reference not first in the text
    ("${oc.env:BC_T_FIRST}${oc.env:BC_T_SECOND,d}", ["first-value", "second-value"]),  # every reference, in order
    ("a ${oc.env:BC_T_SECOND} b ${oc.env:BC_T_FIRST}", ["second-value", "first-value"]),
    ("${oc.env:BC_T_UNSET}", []),  # an unset variable copies nothing in
    ("${oc.env:BC_T_UNSET}${oc.env:BC_T_SECOND}", ["second-value"]),
    ("${oc.env:BC_T_UNSET,BC_T_FIRST}", []),  # a default is text, not a variable
    ("BC_T_FIRST ${env:BC_T_FIRST}", []),  # no oc.env reference at all
    ("", []),
])
def test_env_values_are_the_set_variables_each_oc_env_reference_names(env, text, values):
    assert _env_values(text) == values


def test_an_unresolved_leaf_is_refused_by_what_its_variables_hold_naming_the_key_not_the_value(monkeypatch):
    """The leaf cannot be resolved before the job starts, so its variables are read: the second reference's
    variable holds a password URL. The line names the key and the shape, never the value or the variable's."""
    monkeypatch.setenv("BC_T_HARMLESS", "postgres://u@db.example/bins")
    monkeypatch.setenv("BC_T_DB_URL", DATABASE_URL)
    cfg = OmegaConf.create({
        "later": f"{UNRESOLVABLE}/${{oc.env:BC_T_HARMLESS}}/${{oc.env:BC_T_DB_URL,sqlite:///x.db}}",
        "clean": f"{UNRESOLVABLE}/${{oc.env:BC_T_HARMLESS}}",
        "unset": f"{UNRESOLVABLE}/${{oc.env:BC_T_NOT_SET_ANYWHERE}}",
    })
    found = config_problems(cfg)
    assert found == ["config 'later': the value looks like a URL with a password (user:password@)"]
    assert DB_PASSWORD not in " ".join(found)


def test_an_unresolved_leaf_takes_the_first_shape_among_its_variables(monkeypatch):
    monkeypatch.setenv("BC_T_DB_URL", DATABASE_URL)
    monkeypatch.setenv("BC_T_GITLAB", "glpat-" + "Planted0Env1Token2abcd")
    cfg = OmegaConf.create({"a": f"{UNRESOLVABLE}${{oc.env:BC_T_GITLAB}}${{oc.env:BC_T_DB_URL}}",
                            "b": f"{UNRESOLVABLE}${{oc.env:BC_T_DB_URL}}${{oc.env:BC_T_GITLAB}}"})
    assert config_problems(cfg) == ["config 'a': the value looks like a GitLab token (glpat-...)",
                                    "config 'b': the value looks like a URL with a password (user:password@)"]


def test_a_resolved_leaf_is_checked_by_its_value_not_again_by_its_variables(monkeypatch):
    """Resolved, the value itself carries the password: one line, the same shape."""
    monkeypatch.setenv("BC_T_DB_URL", DATABASE_URL)
    cfg = OmegaConf.create({"db": "${oc.env:BC_T_DB_URL}"})
    assert config_problems(cfg) == ["config 'db': the value looks like a URL with a password (user:password@)"]


# --- the leak_check callback ---

def storage_config(storage: str = DATABASE_URL, target: str = OWN_SWEEPER):
    return OmegaConf.create({"model": {"name": "tiny"},
                             "hydra": {"sweeper": {"_target_": target, "storage": storage}}})


@pytest.fixture
def argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/somewhere/bin/train.py", "model=tiny"])


def refusal(*lines: str) -> str:
    return f"train.py: refused: {'; '.join(lines)}. {ADVICE}"


STORAGE_LINE = "config 'hydra.sweeper.storage': the value looks like a URL with a password (user:password@)"


def test_on_run_start_refuses_the_sweepers_storage_password_with_one_line_naming_the_key(argv):
    """A single run has no sweeper to mask the storage URL: the bincount sweeper's own key is not exempt."""
    with pytest.raises(SystemExit) as exc:
        SecretCheck().on_run_start(config=storage_config(), config_name="train")
    assert exc.value.code == refusal(STORAGE_LINE)
    assert DB_PASSWORD not in str(exc.value.code)


def test_on_multirun_start_leaves_the_bincount_sweepers_storage_to_it(argv):
    """The control for the test above: the same config passes at the start of a multirun (the sweeper masks
    the URL before multirun.yaml), but not with another sweeper, which would save it as it is."""
    assert SecretCheck().on_multirun_start(config=storage_config(), config_name="train") is None
    with pytest.raises(SystemExit) as exc:
        SecretCheck().on_multirun_start(config=storage_config(target="hydra_plugins.other.Sweeper"))
    assert exc.value.code == refusal(STORAGE_LINE)


def test_on_run_start_passes_a_clean_config_and_checks_the_config_it_is_given(argv, monkeypatch):
    assert SecretCheck().on_run_start(config=storage_config("sqlite:///optuna.db"), config_name="train") is None
    monkeypatch.setenv("BC_T_DB_URL", DATABASE_URL)
    cfg = OmegaConf.create({"paths": {"db": "${oc.env:BC_T_DB_URL}", "later": f"{UNRESOLVABLE}/${{oc.env:BC_T_DB_URL}}"},
                            "wandb": {"api_key": "abc-Planted"}})
    with pytest.raises(SystemExit) as exc:
        SecretCheck().on_run_start(config=cfg)
    assert exc.value.code == refusal(
        "config 'paths.db': the value looks like a URL with a password (user:password@)",
        "config 'paths.later': the value looks like a URL with a password (user:password@)",
        "config 'wandb.api_key': the name looks like a credential")
    assert not any(s in exc.value.code for s in (DB_PASSWORD, "abc-Planted"))


def test_the_callback_runs_through_hydras_callbacks_as_conf_registers_it(argv):
    """``hydra.callbacks.leak_check`` as in conf/hydra/default.yaml, called the way Hydra.run calls it."""
    from hydra._internal.callbacks import Callbacks

    cfg = storage_config()
    cfg.hydra.callbacks = {"leak_check": {"_target_": "bincount.secrets_config.SecretCheck"}}
    with pytest.raises(SystemExit) as exc:
        Callbacks(cfg).on_run_start(config=cfg, config_name="train")
    assert exc.value.code == refusal(STORAGE_LINE)


# --- the sweeper plugin, built as Hydra.multirun builds it ---

APP = """\
defaults:
  - override hydra/sweeper: bincount_optuna
  - override hydra/sweeper/pruner: none
  - override hydra/job_logging: none  # "disabled" would disable every logger that exists, for later tests too
  - override hydra/hydra_logging: none
  - _self_
optimized_metric: val/acc
x: 1
y: a
"""


def task(cfg) -> float:
    """The job: its score is read from its config (so a trial's value shows which overrides it ran with)."""
    return cfg.x / 10 + (0.5 if cfg.y == "b" else 0.0)


@pytest.fixture
def hydra_app(tmp_path, monkeypatch):
    """``compose(overrides) -> (config, HydraContext)`` through Hydra's own loader, in MULTIRUN mode."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext, RunMode

    from bincount.sweep.study import ENV_STORAGE

    monkeypatch.setenv(ENV_STORAGE, "unset-by-the-test")  # the sweep exports its storage: restored after the test
    monkeypatch.delenv(ENV_STORAGE)
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text(APP)
    (conf / "search").mkdir()  # a search space from a config group, as conf/hparams_search/ gives one
    (conf / "search" / "x.yaml").write_text("# @package hydra.sweeper\nparams:\n  x: choice(1,2)\n")

    def compose(overrides: list[str]):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("app", [f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                                   run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        return cfg, HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))

    with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="app"):
        yield compose


def sweeper_for(compose, overrides: list[str]):
    from hydra.core.plugins import Plugins

    cfg, ctx = compose(overrides)
    sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=ctx, task_function=task)
    return sweeper, cfg, ctx


def test_setup_hands_the_sweepers_settings_to_optuna_sweep_and_the_context_to_the_launcher(hydra_app):
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from bincount.sweep.sweeper import OptunaSweep
    from hydra_plugins.bincount_optuna_sweeper.optuna_sweeper import BincountOptunaSweeper

    sweeper, cfg, ctx = sweeper_for(hydra_app, [
        "hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.direction=minimize", "hydra.sweeper.dispatch=batch", "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.storage=sqlite:///elsewhere.db", "hydra/sweeper/sampler=random",
        "+search=x", "hydra.sweeper.warm_start=/old/sweep"])
    assert type(sweeper) is BincountOptunaSweeper
    impl = sweeper._impl
    assert type(impl) is OptunaSweep
    assert (impl.study_name, impl.n_trials, impl.n_jobs, impl.direction, impl.dispatch, impl.max_failure_rate,
            impl.storage, impl.warm_start, impl.warm_start_storage) == \
        ("mine", 3, 2, "minimize", "batch", 0.5, "sqlite:///elsewhere.db", "/old/sweep", None)
    assert impl.params == {"x": "choice(1,2)"} and impl.enqueue == []
    # Hydra's instantiate is recursive: the chosen sampler and pruner arrive as Optuna objects.
    assert type(impl.sampler).__name__ == "RandomSampler" and type(impl.pruner).__name__ == "NopPruner"
    assert impl.hydra_context is ctx and impl.config is cfg
    launcher = impl.launcher
    assert type(launcher) is BasicLauncher
    assert launcher.task_function is task and launcher.hydra_context is ctx and launcher.config is cfg


def test_sweep_runs_the_trials_of_the_arguments_search_space_with_their_fixed_overrides(hydra_app, tmp_path):
    """The arguments (Hydra's task overrides) are the search space and the fixed overrides every trial gets."""
    sweeper, cfg, _ = sweeper_for(hydra_app, ["hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=1",
                                              "y=b", "x=choice(1,2)"])
    arguments = list(cfg.hydra.overrides.task)  # what Hydra.multirun passes
    assert arguments == ["y=b", "x=choice(1,2)"]
    returns = sweeper.sweep(arguments=arguments)
    [[job]] = returns
    assert job.overrides[0] == "y=b" and job.overrides[1] in ("x=1", "x=2")
    assert job.return_value == {"x=1": 0.6, "x=2": 0.7}[job.overrides[1]]
    info = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert (info["study_name"], info["direction"], info["optimized_metric"]) == ("mine", "maximize", "val/acc")


def test_sweep_turns_a_study_setting_error_into_its_one_line_message(hydra_app, tmp_path):
    """A rerun of a study with other fixed overrides: Hydra prints the message alone (a compact exception)."""
    from hydra.errors import CompactHydraException

    from hydra_plugins.bincount_optuna_sweeper.optuna_sweeper import SweepSettingError

    first, cfg, _ = sweeper_for(hydra_app, ["hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=1"])
    first.sweep(arguments=["y=b", "x=choice(1,2)"])
    again, _, _ = sweeper_for(hydra_app, ["hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=2"])
    with pytest.raises(SweepSettingError) as exc:
        again.sweep(arguments=["y=a", "x=choice(1,2)"])
    assert str(exc.value) == (
        "study 'mine' was started with other fixed overrides (only then: ['y=b']; only now: ['y=a']). Rerun with "
        "the same overrides to continue it, or start a new study with hydra.sweeper.study_name=NAME")
    assert isinstance(exc.value, CompactHydraException) and exc.value.__cause__ is None
    assert exc.value.__suppress_context__


def test_sweep_names_a_bad_direction_and_the_valid_ones(hydra_app):
    from hydra_plugins.bincount_optuna_sweeper.optuna_sweeper import SweepSettingError

    sweeper, _, _ = sweeper_for(hydra_app, ["hydra.sweeper.direction=upwards"])
    with pytest.raises(SweepSettingError) as exc:
        sweeper.sweep(arguments=["x=choice(1,2)"])
    assert str(exc.value) == "hydra.sweeper.direction='upwards' is not valid; valid: ['maximize', 'minimize', 'auto']"


def test_sweep_refuses_a_warm_start_storage_password_before_multirun_yaml_without_printing_it(hydra_app, tmp_path):
    from hydra_plugins.bincount_optuna_sweeper.optuna_sweeper import SweepSettingError

    sweeper, _, _ = sweeper_for(hydra_app, [f"hydra.sweeper.warm_start_storage={DATABASE_URL}"])
    with pytest.raises(SweepSettingError) as exc:
        sweeper.sweep(arguments=["x=choice(1,2)"])
    assert str(exc.value) == (
        "hydra.sweeper.warm_start_storage='postgres://u:***@db.example/bins' holds a password, which Hydra would "
        "save in multirun.yaml; set BINCOUNT_OPTUNA_STORAGE=URL instead (it is used when the sweep's sweep.json "
        "records that URL, masked)")
    assert not (tmp_path / "sweep" / "multirun.yaml").exists()


def test_sweep_lets_other_errors_through_unchanged(hydra_app):
    """Only a study setting becomes SweepSettingError; Hydra's own errors (a bad dispatch) keep their type."""
    from hydra.errors import HydraException

    from hydra_plugins.bincount_optuna_sweeper.optuna_sweeper import SweepSettingError

    sweeper, _, _ = sweeper_for(hydra_app, ["hydra.sweeper.dispatch=sideways"])
    with pytest.raises(HydraException) as exc:
        sweeper.sweep(arguments=["x=choice(1,2)"])
    assert type(exc.value) is HydraException and not isinstance(exc.value, SweepSettingError)
    assert str(exc.value) == "hydra.sweeper.dispatch='sideways' is not valid; valid: ['auto', 'async', 'batch']"
