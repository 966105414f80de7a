"""``hydra.sweeper.warm_start=DIR`` opens only that sweep's own study, or a URL the user passed (issue 24, item 9).

``DIR/sweep.json`` may come from a copied directory or a colleague: the storage URL it names is opened only
when it is the sweep's own SQLite file inside DIR; anything else (a SQLite path elsewhere, a server) is
refused by name, masked, before anything is opened, so no database file appears elsewhere. A broken
``sweep.json`` or a missing study is one line, not a ``KeyError`` traceback. Real Optuna studies in SQLite
files under tmp_path; the last tests run real sweeps through Hydra in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.distributions import FloatDistribution  # noqa: E402

from bincount.sweep.study import StudyConfigError, default_storage, open_study, write_sweep_info  # noqa: E402
from bincount.sweep.warmstart import check_given, source_storage, warm_start  # noqa: E402

DISTS = {"x": FloatDistribution(0, 1)}


def old_sweep(sweep_dir: Path, values=(0.2, 0.7), storage: str | None = None, name: str = "old") -> str:
    """A finished sweep as the sweeper leaves it: a study with ``values`` as trials, and its sweep.json."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(sweep_dir)
    study = open_study(storage, name, "maximize", None, None, [], ["x"])
    for v in values:
        trial = study.ask(DISTS)
        study.tell(trial, trial.params["x"] + v)
    write_sweep_info(sweep_dir, storage, name, "maximize", "score")
    return storage


def new_study(tmp_path: Path):
    return open_study(default_storage(tmp_path / "new"), "new", "maximize", None, None, [], ["x"])


def plant(sweep_dir: Path, info) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(info if isinstance(info, str) else json.dumps(info))


def refused(call) -> str:
    with pytest.raises(StudyConfigError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_real_warm_start_from_the_sweeps_own_study_copies_its_trials(tmp_path):
    old_sweep(tmp_path / "old")
    (tmp_path / "new").mkdir()
    study = new_study(tmp_path)
    assert warm_start(study, tmp_path / "old", DISTS) == 2
    old = optuna.load_study(study_name="old", storage=default_storage(tmp_path / "old"))
    assert [t.params for t in study.trials] == [t.params for t in old.trials]
    assert [t.value for t in study.trials] == [t.value for t in old.trials]
    assert all(t.user_attrs["warm_start_from"].startswith(str(tmp_path / "old")) for t in study.trials)


def test_a_sqlite_file_elsewhere_is_refused_and_never_created(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "elsewhere.db"
    elsewhere.parent.mkdir()
    url = f"sqlite:///{elsewhere}"
    plant(tmp_path / "evil", {"storage": url, "study_name": "s", "direction": "maximize"})
    (tmp_path / "new").mkdir()
    message = refused(lambda: warm_start(new_study(tmp_path), tmp_path / "evil", DISTS))
    assert f"hydra.sweeper.warm_start={tmp_path / 'evil'}: its sweep.json names the storage {url!r}" in message
    assert "hydra.sweeper.warm_start_storage=URL" in message and "BINCOUNT_OPTUNA_STORAGE" in message
    assert not elsewhere.exists() and list(elsewhere.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "missing", "uri", "query", "memory", "server"])
def test_only_an_existing_plain_sqlite_file_inside_the_dir_is_opened(tmp_path, kind):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    outside = tmp_path / "outside.db"
    url = {"dotdot": f"sqlite:///{sweep_dir}/../outside.db", "symlink": f"sqlite:///{sweep_dir}/optuna.db",
           "missing": f"sqlite:///{sweep_dir}/optuna.db",
           "uri": f"sqlite:///file:{sweep_dir}/optuna.db?uri=true", "query": f"sqlite:///{sweep_dir}/optuna.db?uri=true",
           "memory": "sqlite:///:memory:",
           "server": "postgresql://tuner:hunter2@db.example.com/optuna"}[kind]
    if kind == "symlink":
        old_sweep(tmp_path / "real", storage=f"sqlite:///{outside}")
        (sweep_dir / "optuna.db").symlink_to(outside)
    if kind in ("uri", "query"):
        old_sweep(sweep_dir)
    message = refused(lambda: source_storage(sweep_dir, url, env={}))
    assert "hunter2" not in message and "not that sweep's own SQLite file" in message
    assert not (sweep_dir / "optuna.db").exists() if kind == "missing" else True
    assert not outside.exists() if kind in ("dotdot", "missing") else True


def test_a_url_the_user_passed_opens_a_study_elsewhere(tmp_path, monkeypatch):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    old_sweep(tmp_path / "old", storage=shared)
    (tmp_path / "new").mkdir()
    monkeypatch.delenv("BINCOUNT_OPTUNA_STORAGE", raising=False)
    refused(lambda: warm_start(new_study(tmp_path), tmp_path / "old", DISTS))  # sweep.json alone: not opened
    assert warm_start(new_study(tmp_path), tmp_path / "old", DISTS, given=shared) == 2  # warm_start_storage
    assert source_storage(tmp_path / "old", shared, current=shared, env={}) == shared  # this sweep's storage
    assert source_storage(tmp_path / "old", shared, env={"BINCOUNT_OPTUNA_STORAGE": shared}) == shared
    # a password stays in the environment: sweep.json records the masked URL, the variable gives the real one
    secret = "postgresql://tuner:hunter2@db.example.com/optuna"
    masked = "postgresql://tuner:***@db.example.com/optuna"
    assert source_storage(tmp_path / "old", masked, env={"BINCOUNT_OPTUNA_STORAGE": secret}) == secret
    assert "hunter2" not in refused(lambda: check_given(secret))
    check_given(shared)


def test_a_moved_sweep_dir_is_opened_through_warm_start_storage(tmp_path):
    old_sweep(tmp_path / "old")
    (tmp_path / "old").rename(tmp_path / "moved")  # sweep.json still names old/optuna.db
    (tmp_path / "new").mkdir()
    refused(lambda: warm_start(new_study(tmp_path), tmp_path / "moved", DISTS))
    assert not (tmp_path / "old").exists()
    assert warm_start(new_study(tmp_path), tmp_path / "moved", DISTS,
                      given=default_storage(tmp_path / "moved")) == 2


@pytest.mark.slow
@pytest.mark.parametrize("info, expected", [
    (None, "no sweep.json there"),
    ("{not json", "is not readable JSON (JSONDecodeError"),
    (b"\xff\xfe", "is not readable JSON (UnicodeDecodeError"),
    ([1, 2], "has no study_name or storage"),
    ({"storage": "sqlite:///x.db"}, "has no study_name (a non-empty string each)"),
    ({"study_name": "s"}, "has no storage"),
    ({"study_name": "s", "storage": 7}, "has no storage"),
])
def test_a_broken_sweep_json_is_one_line(tmp_path, info, expected):
    sweep_dir = tmp_path / "old"
    sweep_dir.mkdir()
    if isinstance(info, bytes):
        (sweep_dir / "sweep.json").write_bytes(info)
    elif info is not None:
        plant(sweep_dir, info)
    (tmp_path / "new").mkdir()
    message = refused(lambda: warm_start(new_study(tmp_path), sweep_dir, DISTS))
    assert message.startswith(f"hydra.sweeper.warm_start={sweep_dir}: ") and expected in message


def test_a_missing_study_is_one_line_not_a_key_error(tmp_path):
    old_sweep(tmp_path / "old")
    info = json.loads((tmp_path / "old" / "sweep.json").read_text())
    plant(tmp_path / "old", {**info, "study_name": "gone"})
    (tmp_path / "new").mkdir()
    message = refused(lambda: warm_start(new_study(tmp_path), tmp_path / "old", DISTS))
    assert "cannot load study 'gone' from sqlite:///" in message and "(KeyError: " in message


# -- through Hydra: the sweeper's own process --------------------------------------------------------------

APP = '''
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    return float(cfg.x)

if __name__ == "__main__":
    main()
'''
CONF = '''
defaults:
  - override hydra/sweeper: bincount_optuna
  - override hydra/sweeper/sampler: random
  - override hydra/sweeper/pruner: none
  - _self_
x: 0.5
optimized_metric: score
hydra:
  sweeper: {study_name: app, direction: maximize, n_trials: 2, sampler: {seed: 0}}
'''


def sweep(app: Path, sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "BINCOUNT_OPTUNA_STORAGE")}
    return subprocess.run([sys.executable, str(app / "app.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
                           "x=interval(0,1)", *extra], cwd=app, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def app(tmp_path) -> Path:
    (tmp_path / "app" / "conf").mkdir(parents=True)
    (tmp_path / "app" / "app.py").write_text(APP)
    (tmp_path / "app" / "conf" / "app.yaml").write_text(CONF)
    return tmp_path / "app"


@pytest.mark.slow
def test_through_hydra_a_planted_sweep_json_is_one_line_and_opens_nothing(app, tmp_path):
    elsewhere = tmp_path / "elsewhere.db"
    plant(tmp_path / "evil", {"storage": f"sqlite:///{elsewhere}", "study_name": "app"})
    proc = sweep(app, tmp_path / "new", f"hydra.sweeper.warm_start={tmp_path / 'evil'}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "KeyError" not in proc.stderr, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("hydra.sweeper.warm_start=")]  # Optuna logs too
    assert line.startswith(f"hydra.sweeper.warm_start={tmp_path / 'evil'}: its sweep.json names the storage "
                           f"'sqlite:///{elsewhere}'"), proc.stderr
    assert not elsewhere.exists()
    broken = tmp_path / "broken"
    plant(broken, {"study_name": "app"})
    proc = sweep(app, tmp_path / "new2", f"hydra.sweeper.warm_start={broken}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"\nhydra.sweeper.warm_start={broken}: {broken / 'sweep.json'} has no storage (a non-empty string " \
           "each); it was not written by a bincount_optuna sweep\n" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_through_hydra_a_password_in_warm_start_storage_is_refused_before_anything_is_written(app, tmp_path):
    proc = sweep(app, tmp_path / "new", "hydra.sweeper.warm_start_storage=postgresql://tuner:hunter2@db.example.com/o",
                 f"hydra.sweeper.warm_start={tmp_path / 'old'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "hydra.sweeper.warm_start_storage='postgresql://tuner:***@db.example.com/o' holds a password" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert not (tmp_path / "new" / "multirun.yaml").exists()


@pytest.mark.slow
def test_through_hydra_a_real_warm_start_still_works(app, tmp_path):
    assert sweep(app, tmp_path / "old").returncode == 0
    proc = sweep(app, tmp_path / "new", f"hydra.sweeper.warm_start={tmp_path / 'old'}", "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr
    assert "2 trial(s) copied" in proc.stdout + proc.stderr
    new = optuna.load_study(study_name="app", storage=default_storage(tmp_path / "new")).trials
    old = optuna.load_study(study_name="app", storage=default_storage(tmp_path / "old")).trials
    assert [t.params for t in new[:2]] == [t.params for t in old] and len(new) == 3


@pytest.mark.parametrize("content,needle", [
    (None, "names the storage 'sqlite:///{elsewhere}', which is not that sweep's own SQLite file"),
    ("{not json", "sweep.json is not readable JSON (JSONDecodeError"),
    ('{"study_name": "s"}', "has no storage (a non-empty string each)"),
    ('{"study_name": "s", "storage": "sqlite:///{own}"}', "has no optimized_metric or no direction"),
])
def test_sweep_report_opens_only_the_sweeps_own_study_and_says_why_in_one_line(content, needle, tmp_path, capsys):
    """`bincount sweep-report DIR` reads the same sweep.json as a warm start: the same guard, one line, exit 1."""
    from bincount import cli

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    elsewhere, own = tmp_path / "elsewhere.db", sweep / "optuna.db"
    own.write_bytes(b"")
    text = content or json.dumps({"study_name": "s", "storage": f"sqlite:///{elsewhere}",
                                  "optimized_metric": "val/acc", "direction": "maximize"})
    (sweep / "sweep.json").write_text(text.replace("{elsewhere}", str(elsewhere)).replace("{own}", str(own)))
    assert cli.main(["sweep-report", str(sweep)]) == 1
    err = capsys.readouterr().err
    assert needle.replace("{elsewhere}", str(elsewhere)) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not elsewhere.exists()
