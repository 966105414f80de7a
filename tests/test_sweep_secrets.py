"""A password in the Optuna storage URL (issue 14, item 7): masked in every saved config and message,
handed to jobs and the report through the environment. The whole sweep is in ``test_sweep_e2e.py``;
these are its parts, fast, on real Hydra overrides and real (unreachable) database URLs."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

pytest.importorskip("optuna")
from bincount.sweep import pruning  # noqa: E402
from bincount.sweep.study import ENV_STORAGE, redact, safe_url, write_sweep_info  # noqa: E402
from bincount.sweep.sweeper import OptunaSweep  # noqa: E402

PASSWORD = "Planted-pw-8134"
URL = f"postgresql://tuner:{PASSWORD}@127.0.0.1:1/optuna"
MASKED = "postgresql://tuner:***@127.0.0.1:1/optuna"


def sweep_with(hydra_overrides: list[str], storage: str) -> OptunaSweep:
    sweep = OptunaSweep(sampler=None, pruner=None, direction="auto", study_name="s", storage=storage, n_trials=1,
                        n_jobs=1, dispatch="auto", max_failure_rate=0.5, params={}, enqueue_trials=[])
    sweep.config = OmegaConf.create({"hydra": {"sweeper": {"storage": storage},
                                               "overrides": {"hydra": hydra_overrides, "task": ["seed=1"]}}})
    OmegaConf.set_readonly(sweep.config, True)  # as Hydra hands it over
    return sweep


def test_saved_config_and_job_composition_get_the_masked_url():
    sweep = sweep_with(["hydra.mode=MULTIRUN", f"hydra.sweeper.storage={URL}"], URL)
    sweep._mask_storage(URL)
    saved = OmegaConf.to_yaml(sweep.config)  # what multirun.yaml holds
    assert PASSWORD not in saved and MASKED in saved
    overrides = list(sweep.config.hydra.overrides.hydra)  # what each job's config is composed from again
    assert overrides[0] == "hydra.mode=MULTIRUN" and len(overrides) == 2
    parsed = OverridesParser.create().parse_override(overrides[1])
    assert (parsed.key_or_group, parsed.value()) == ("hydra.sweeper.storage", MASKED)
    assert sweep.storage == URL, "the sweeper itself still opens the real study"


def test_a_url_from_a_config_file_is_masked_by_an_override_put_last():
    """No storage override on the command line: the job's composition would read the file's value."""
    sweep = sweep_with(["hydra.mode=MULTIRUN"], URL)
    sweep._mask_storage(URL)
    assert list(sweep.config.hydra.overrides.hydra)[-1] == f"hydra.sweeper.storage='{MASKED}'"


def test_a_url_without_password_is_left_as_it_is():
    url = "sqlite:////tmp/optuna.db"
    sweep = sweep_with(["hydra.mode=MULTIRUN"], url)
    sweep._mask_storage(url)
    assert list(sweep.config.hydra.overrides.hydra) == ["hydra.mode=MULTIRUN"]
    assert sweep.config.hydra.sweeper.storage == url


def test_trial_overrides_never_carry_the_storage(monkeypatch):
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    overrides = pruning.env_overrides("s", 3, {"_target_": "optuna.pruners.MedianPruner"})
    assert not any(ENV_STORAGE in o for o in overrides)
    pruning.export_storage(URL)
    assert __import__("os").environ[ENV_STORAGE] == URL


def test_redact_hides_the_password_as_written_and_decoded():
    url = "postgresql://tuner:p%40ss-word@db.example/optuna"
    message = f"could not connect to {url}: password 'p@ss-word' rejected (raw p%40ss-word)"
    shown = redact(message, url)
    assert "p@ss-word" not in shown and "p%40ss-word" not in shown
    assert safe_url(url) in shown
    assert redact("no url here", "sqlite:///x.db") == "no url here"


def test_report_takes_the_url_from_the_environment_only_for_its_own_study(tmp_path):
    from bincount.sweep.study import StudyConfigError
    from bincount.sweep.warmstart import source_storage

    recorded = safe_url(URL)
    assert source_storage(tmp_path, recorded, env={ENV_STORAGE: URL}) == URL
    other = "postgresql://tuner:pw@elsewhere/optuna"
    with pytest.raises(StudyConfigError, match=r"^bincount sweep-report X: its sweep.json names the storage "
                                               r"'postgresql://tuner:\*\*\*@127.0.0.1:1/optuna', which is not "
                                               r".*--storage URL"):
        source_storage(tmp_path, recorded, env={ENV_STORAGE: other}, asked_by="bincount sweep-report X",
                       how_to_pass="--storage URL")  # another study's URL is not used, nor the recorded one opened
    assert source_storage(tmp_path, recorded, "sqlite:///given.db", env={ENV_STORAGE: URL}) == "sqlite:///given.db"
    (tmp_path / "optuna.db").write_bytes(b"")
    own = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert source_storage(tmp_path, own, env={}) == own


QUERY_PASSWORD = "Planted-Query-pw-4411"  # a password in the query string (issue 24 item 5)
QUERY_URL = f"postgresql://tuner@127.0.0.1:1/optuna?password={QUERY_PASSWORD}&sslmode=disable"
QUERY_MASKED = "postgresql://tuner@127.0.0.1:1/optuna?password=***&sslmode=disable"


@pytest.mark.parametrize("url,password,masked", [(URL, PASSWORD, MASKED), (QUERY_URL, QUERY_PASSWORD, QUERY_MASKED)])
def test_sweep_report_error_shows_no_password(url, password, masked, tmp_path, capsys, monkeypatch):
    from bincount.cli import main

    monkeypatch.delenv(ENV_STORAGE, raising=False)
    write_sweep_info(tmp_path, url, "s", "maximize", "val/acc")
    assert password not in (tmp_path / "sweep.json").read_text()
    assert main(["sweep-report", str(tmp_path), "--storage", url]) == 1
    out, err = capsys.readouterr()
    assert "cannot open study 's'" in err and masked in err
    assert password not in out + err
    monkeypatch.setenv(ENV_STORAGE, url)  # the same study through the environment
    assert main(["sweep-report", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert masked in err and password not in out + err
