"""Issue 24, item 5: credentials in *resolved* values are refused before anything of the run is written.

The command line is checked before Hydra starts (``tests/test_secrets_train.py``), but a value can also come
from a config file, a launcher preset or ``${oc.env:DATABASE_URL}``, and Hydra saves it in ``.hydra/``,
``multirun.yaml``, ``resolved_config.yaml`` and the loggers' hyperparameters. Two guards each:

- a run: the ``leak_check`` Hydra callback (``on_run_start``, before ``.hydra/``), and inside ``train()``
  before ``resolved_config.yaml`` and the loggers (it removes the set-up files Hydra wrote);
- a multirun: the callback's ``on_multirun_start``, and the SageMaker launcher's ``setup``, both before the
  sweeper writes ``multirun.yaml``.

End-to-end cases run ``python train.py`` and scan every file under the test's directory for the secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.secrets import files_containing
from omegaconf import OmegaConf

from bincount.secrets_config import config_problems

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data.synthetic.num_images=8", "data.img_size=32", "trainer.max_epochs=1", "report=false",
        "logger=csv"]
DB_PASSWORD = "Planted-Db-pw-3391"
DATABASE_URL = f"postgres://u:{DB_PASSWORD}@db.example/bins"
NO_CALLBACK = "~hydra.callbacks.leak_check"  # the outer guard removed, as a config without it would be


def train_py(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_PASSWORD", "HYDRA_FULL_ERROR")}
    environ.update(BINCOUNT_LOG_DIR=str(tmp_path / "logs"), BINCOUNT_DATA_DIR=str(tmp_path / "data"),
                   PROJECT_ROOT=str(tmp_path), **env)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=600)


def assert_nowhere(proc: subprocess.CompletedProcess, tmp_path: Path, *secrets: str) -> None:
    """Not printed, and in no file under the test's directory (the log dir, config files written here aside)."""
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr, "printed"
        assert files_containing(tmp_path / "logs", secret) == []


# --- end to end: a run ---

@pytest.mark.slow
def test_an_env_interpolation_resolving_to_a_password_is_refused_before_hydra_writes(tmp_path):
    proc = train_py(["+paths.db=${oc.env:DATABASE_URL}", *TINY], tmp_path, DATABASE_URL=DATABASE_URL)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("train.py: refused: config 'paths.db': the value looks like a URL with a password")
    assert_nowhere(proc, tmp_path, DB_PASSWORD)
    assert not (tmp_path / "logs").exists(), "refused before Hydra made the run directory"


@pytest.mark.slow
def test_a_config_files_env_interpolation_of_a_secret_named_variable_is_refused_by_that_name(tmp_path):
    """``hunter2`` has no shape; the variable's name says what it is. In a config file, so the command-line
    check never sees the interpolation."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\npaths:\n  db: ${oc.env:MY_DB_PASSWORD}\n")
    proc = train_py(["--config-dir", str(conf), "--config-name", "mine", *TINY], tmp_path,
                    MY_DB_PASSWORD="hunter2-Planted")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("train.py: refused: config 'paths.db': the value looks like a mapping or "
                                  "${oc.env:} with a secret name (MY_DB_PASSWORD)")
    assert_nowhere(proc, tmp_path, "hunter2-Planted")
    assert not (tmp_path / "logs").exists()


CONFIG_FILE_CASES = [  # (the value a config file holds, the label the message gives)
    ("AIzaSyD" + "Planted0Google1Key2abcdefghijklm", "a Google API key"),
    ("sk_live_" + "Planted0Stripe1Key2abcd", "a Stripe key"),
    ("glpat-" + "Planted0GitLab1Tok2en3", "a GitLab token"),
    ("DefaultEndpointsProtocol=https;AccountName=bins;AccountKey=Planted0Azure1Key2abcdEFGH0123+/==", "an Azure key"),
    ("https://mlflow.example.com/?password=Planted-Mlflow-pw", "a URL with a credential in its query string"),
]


@pytest.mark.slow
@pytest.mark.parametrize("secret, label", CONFIG_FILE_CASES, ids=[c[1] for c in CONFIG_FILE_CASES])
def test_a_credential_in_a_config_file_is_refused_before_hydra_writes(secret, label, tmp_path):
    """The command line is clean: only the composed config holds the value (today it reached .hydra/)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text(f"defaults:\n  - train\n  - _self_\npaths:\n  tracking: '{secret}'\n")
    proc = train_py(["--config-dir", str(conf), "--config-name", "mine", *TINY], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"train.py: refused: config 'paths.tracking': the value looks like {label}" in proc.stderr
    assert_nowhere(proc, tmp_path, secret)
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_the_inner_guard_in_train_refuses_before_resolved_config_and_loggers(tmp_path):
    """Without the callback Hydra writes .hydra/ (unresolved: ``${oc.env:DATABASE_URL}``) and train.log, then
    train() refuses before resolved_config.yaml and hparams.yaml, and removes those set-up files."""
    proc = train_py(["+paths.db=${oc.env:DATABASE_URL}", NO_CALLBACK, *TINY], tmp_path, DATABASE_URL=DATABASE_URL)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.py: config error: refused: config 'paths.db': the value looks like a URL with a password" \
        in proc.stderr
    assert_nowhere(proc, tmp_path, DB_PASSWORD)
    assert [p for p in (tmp_path / "logs").rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_a_harmless_interpolation_passes_both_guards(tmp_path):
    """The control: the same interpolation without a password reaches resolved_config.yaml (so the refusals
    above are the guards', and what they stop would have been saved)."""
    proc = train_py(["+paths.db=${oc.env:DATABASE_URL}", *TINY], tmp_path, DATABASE_URL="postgres://u@db.example/bins")
    assert "refused" not in proc.stderr, proc.stderr[-2000:]
    resolved = list((tmp_path / "logs").rglob("resolved_config.yaml"))
    assert len(resolved) == 1 and "db: postgres://u@db.example/bins" in resolved[0].read_text()


# --- end to end: a launcher preset in a multirun ---

PRESET_SECRETS = ("Planted-Mlflow-tok-77", "Planted-Db-pw-78", "glpat-" + "Planted0Preset1Tag2xyz")


def leaky_preset(tmp_path: Path) -> list[str]:
    launcher = tmp_path / "conf" / "hydra" / "launcher"
    launcher.mkdir(parents=True)
    (launcher / "leaky.yaml").write_text(
        "defaults:\n  - sagemaker_local\nenvironment:\n"
        f"  MLFLOW_TRACKING_URI: https://mlflow.example.com/?token={PRESET_SECRETS[0]}\n"
        f"  DB_PASS: {PRESET_SECRETS[1]}\n"
        f"tags:\n  owner: {PRESET_SECRETS[2]}\n")
    (tmp_path / "conf" / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\n")
    return ["--config-dir", str(tmp_path / "conf"), "--config-name", "mine", "-m", "hydra/launcher=leaky", *TINY]


@pytest.mark.slow
def test_a_presets_environment_and_tags_are_refused_before_multirun_yaml(tmp_path):
    proc = train_py(leaky_preset(tmp_path), tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(
        "train.py: refused: config 'hydra.launcher.environment.MLFLOW_TRACKING_URI': the value looks like a URL "
        "with a credential in its query string (token=...); config 'hydra.launcher.environment.DB_PASS': the name "
        "looks like a credential; config 'hydra.launcher.tags.owner': the value looks like a GitLab token")
    assert_nowhere(proc, tmp_path, *PRESET_SECRETS)
    assert not (tmp_path / "logs").exists(), "no multirun.yaml, no sweep directory"


@pytest.mark.slow
def test_the_launcher_refuses_a_presets_secrets_in_setup_before_multirun_yaml(tmp_path):
    """The inner guard: without the callback, the launcher's setup (which Hydra runs before the sweeper writes
    multirun.yaml) refuses; today it refused only in launch(), after multirun.yaml held the values."""
    proc = train_py([*leaky_preset(tmp_path), NO_CALLBACK], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "SecretError: refused: setting 'hydra.launcher.environment.MLFLOW_TRACKING_URI'" in proc.stderr
    assert_nowhere(proc, tmp_path, *PRESET_SECRETS)
    assert list((tmp_path / "logs").rglob("multirun.yaml")) == []


# --- the check itself, on configs built here ---

def test_config_problems_checks_resolved_values_and_names_never_values(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    cfg = OmegaConf.create({
        "db": "${oc.env:DATABASE_URL}",  # resolves to user:password@
        "db_pw": "${oc.env:MY_DB_PASSWORD}",  # no shape, a secret name in the interpolation
        "later": "${hydra:runtime.output_dir}/${oc.env:DATABASE_URL}",  # unresolvable here: the variable is read
        "wandb": {"api_key": "abc-Planted", "project": "bins"},
        "profiler": {"sort_by_key": "cpu_time_total"},  # a config key with "key" alone: harmless
        "empty": {"api_key": "", "token": None},
        "hydra": {"launcher": {"secrets": {"WANDB_API_KEY": "bincount/wandb"}, "environment": {"KEY": "x"}},
                  "sweeper": {"_target_": "hydra_plugins.bincount_optuna_sweeper.optuna_sweeper.BincountOptunaSweeper",
                              "storage": DATABASE_URL}},
        "masked": "postgres://u:***@db.example/bins",
    })
    found = config_problems(cfg)
    assert [line.split(":")[0] for line in found] == [
        "config 'db'", "config 'db_pw'", "config 'later'", "config 'wandb.api_key'",
        "config 'hydra.launcher.environment.KEY'", "config 'hydra.sweeper.storage'"]
    assert "mapping or ${oc.env:} with a secret name (MY_DB_PASSWORD)" in found[1]
    assert "URL with a password" in found[2]
    assert not any(s in " ".join(found) for s in (DB_PASSWORD, "hunter2", "abc-Planted"))
    # In a multirun the bincount sweeper masks its storage URL before multirun.yaml: that one leaf is its to handle.
    assert "config 'hydra.sweeper.storage'" not in " ".join(config_problems(cfg, frozenset({"hydra.sweeper.storage"})))


@pytest.mark.slow
def test_every_option_of_the_projects_conf_composes_clean():
    """No false refusal: every group option (and the SageMaker presets) of conf/, the hydra node included."""
    from hydra import compose, initialize_config_dir

    from bincount.resolvers import register_resolvers

    register_resolvers()
    conf = ROOT / "conf"
    groups = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in conf.iterdir()
              if g.is_dir() and g.name not in ("hydra", "launch")}
    runs = [[f"{g}={o}"] for g, opts in groups.items() for o in opts]
    runs += [[f"hydra/launcher={p.stem}"] for p in (conf / "hydra" / "launcher").glob("*.yaml")]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        found = {" ".join(o): config_problems(compose("train", overrides=o, return_hydra_config=True)) for o in runs}
    assert len(runs) > 40 and {k: v for k, v in found.items() if v} == {}


def test_a_quoted_variable_name_is_checked_like_a_bare_one(monkeypatch):
    """OmegaConf accepts ``${oc.env:"NAME"}`` and ``${oc.env:'NAME'}``: the quotes hid the variable from
    both checks (its name, and its value while the leaf cannot be resolved yet)."""
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    cfg = OmegaConf.create({
        "later_double": '${hydra:runtime.output_dir}/${oc.env:"DATABASE_URL"}',
        "later_single": "${hydra:runtime.output_dir}/${oc.env:'DATABASE_URL'}",
        "db_pw": '${oc.env:"MY_DB_PASSWORD"}',
    })
    found = config_problems(cfg)
    assert [line.split(":")[0] for line in found] == ["config 'later_double'", "config 'later_single'", "config 'db_pw'"]
    assert "URL with a password" in found[0] and "URL with a password" in found[1]
    assert "mapping or ${oc.env:} with a secret name (MY_DB_PASSWORD)" in found[2]
    assert not any(s in " ".join(found) for s in (DB_PASSWORD, "hunter2"))
