"""The SageMaker launcher's side, checked by value: what a job's result becomes (status, value, error), the warm
pool a sweep asks for and what it says about it, and what the launcher does with a trial's progress file.

Each test pins the whole tuple, number or line a caller or a user reads: a changed status string, a dropped
field, an off-by-one comparison or a reworded message makes one of them fail. Results and progress files are
real files in a job's directory (the local backend's layout); the Service Quotas client is botocore's own,
stubbed with the answers an account gives; the study is a real sqlite Optuna study.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bincount.sagemaker.job.contract import PICKLED_RESULT, PICKLED_RESULT_MAC, RESULT_FILE, result_mac
from bincount.sagemaker.job.progress import MAX_PROGRESS_BYTES
from bincount.sagemaker.spec import JobSpec, OutputRefused
from bincount.sagemaker.warm_pool import warm_pool_seconds

KEY = b"k" * 32


def job_spec(local_dir: Path, idx: int = 0, pickled_result: bool = False) -> JobSpec:
    """A launcher's job as ``build_spec`` leaves it, for the fields the code under test reads."""
    local_dir.mkdir(parents=True, exist_ok=True)
    return JobSpec(idx, [], OmegaConf.create({}), local_dir, f"multirun/s/{idx}",
                   ["python", "-m", "bincount.sagemaker.job.entry"], {}, "sha", f"bincount-{idx}",
                   pickle=b"task" if pickled_result else None, state_sha="state", pickled_result=pickled_result)


def messages(caplog, *loggers: str) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name in loggers]


# 1. A job's result (bincount.sagemaker.results) ---------------------------------------------------------------

def test_a_job_without_result_json_failed_and_says_why(tmp_path):
    from bincount.sagemaker.results import read_result

    assert read_result(job_spec(tmp_path / "0"), KEY) == (
        "Failed", None, "the job wrote no result.json (it died before Hydra finished)")


def test_a_completed_jobs_return_value_comes_back_whole(tmp_path):
    from bincount.sagemaker.results import read_result

    spec = job_spec(tmp_path / "0")
    (spec.local_dir / RESULT_FILE).write_text(json.dumps(
        {"status": "COMPLETED", "return_value": {"val/acc": 0.875, "epochs": 3}, "error": None}))
    assert read_result(spec, KEY) == ("Completed", {"val/acc": 0.875, "epochs": 3}, None)


@pytest.mark.parametrize("status", ["FAILED", "completed", "RUNNING", None])
def test_any_status_but_completed_is_failed_with_the_jobs_error_without_control_characters(tmp_path, status):
    from bincount.sagemaker.results import read_result

    spec = job_spec(tmp_path / "0")
    (spec.local_dir / RESULT_FILE).write_text(json.dumps(
        {"status": status, "return_value": 0.5, "error": "ValueError: optimizer.lr=-1\x1b[31m must be > 0\r\n"}))
    assert read_result(spec, KEY) == ("Failed", 0.5, "ValueError: optimizer.lr=-1[31m must be > 0\n")  # \r, ESC gone


def test_an_error_that_is_not_text_is_dropped(tmp_path):
    from bincount.sagemaker.results import read_result

    spec = job_spec(tmp_path / "0")
    (spec.local_dir / RESULT_FILE).write_text(json.dumps({"status": "FAILED", "error": {"not": "text"}}))
    assert read_result(spec, KEY) == ("Failed", None, None)


@pytest.mark.parametrize("content, error", [(b"not json", "JSONDecodeError"), (b"\xff\xfe", "JSONDecodeError"),
                                            (b"[1, 2]", "TypeError"), (b"null", "TypeError"),
                                            (b'{"no": "status"}', "KeyError")])
def test_a_damaged_result_json_names_the_failure(tmp_path, content, error):
    from bincount.sagemaker.results import read_result

    spec = job_spec(tmp_path / "0")
    (spec.local_dir / RESULT_FILE).write_bytes(content)
    assert read_result(spec, KEY) == ("Failed", None, f"unreadable result.json ({error})")


def test_a_result_pkl_not_asked_for_is_ignored_with_a_warning_naming_the_job(tmp_path, caplog):
    from bincount.sagemaker.results import read_result

    spec = job_spec(tmp_path / "3", idx=3)
    (spec.local_dir / RESULT_FILE).write_text(json.dumps({"status": "COMPLETED", "return_value": 7}))
    (spec.local_dir / PICKLED_RESULT).write_bytes(pickle.dumps("from the pickle"))
    with caplog.at_level(logging.WARNING, logger="bincount"):
        assert read_result(spec, KEY) == ("Completed", 7, None)
    assert messages(caplog, "bincount.sagemaker.results") == [
        ("WARNING", "job 3: ignored result.pkl in its output (results are read from result.json unless "
                    "hydra.launcher.payload=pickle)")]


def test_a_signed_pickle_replaces_the_json_value(tmp_path):
    from bincount.sagemaker.results import load_signed, read_result

    spec = job_spec(tmp_path / "2", idx=2, pickled_result=True)
    (spec.local_dir / RESULT_FILE).write_text(json.dumps({"status": "COMPLETED", "return_value": "repr"}))
    blob = pickle.dumps({"an": ("object", 1)})
    (spec.local_dir / PICKLED_RESULT).write_bytes(blob)
    (spec.local_dir / PICKLED_RESULT_MAC).write_text(result_mac(KEY, spec.rel_dir, blob) + "\n")
    assert load_signed(spec, KEY) == {"an": ("object", 1)}
    assert read_result(spec, KEY) == ("Completed", {"an": ("object", 1)}, None)


@pytest.mark.parametrize("mac, why", [
    ("0" * 64, "its HMAC does not match"),
    (None, "no result.pkl.hmac for"),
])
def test_an_unsigned_or_missigned_pickle_fails_the_job_with_the_whole_refusal(tmp_path, mac, why):
    from bincount.sagemaker.results import load_signed, read_result

    spec = job_spec(tmp_path / "2", idx=2, pickled_result=True)
    (spec.local_dir / RESULT_FILE).write_text(json.dumps({"status": "COMPLETED", "return_value": 1}))
    (spec.local_dir / PICKLED_RESULT).write_bytes(pickle.dumps("never unpickled"))
    if mac is not None:
        (spec.local_dir / PICKLED_RESULT_MAC).write_text(mac)
    refusal = (f"refused result.pkl of job 2: {why} this sweep's key (this launcher's job did not write it); "
               "not unpickled")
    with pytest.raises(OutputRefused) as raised:
        load_signed(spec, KEY)
    assert str(raised.value) == refusal
    assert read_result(spec, KEY) == ("Failed", None, refusal)


# 2. The warm pool a sweep asks for (bincount.sagemaker.quotas.warm_pool_seconds) -------------------------------

boto3 = pytest.importorskip("boto3")
from helpers.launcher_settings import settings  # noqa: E402
from helpers.quotas import stubbed_quotas_client  # noqa: E402

WARM = "ml.p4d.24xlarge for training warm pool usage"


def quotas_client(region: str, *responses):
    """botocore's Service Quotas client answering ``(operation, [(name, value, code), ...])`` pages."""
    return stubbed_quotas_client(*((operation, {"Quotas": [
        {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value,
         "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:sagemaker/{code}"}
        for name, value, code in quotas]}) for operation, quotas in responses), region=region)


def pool(**changes):
    return settings(**{"instance_type": "ml.p4d.24xlarge", "instance_count": 4, "max_parallel_jobs": 3, "spot": False,
                       "keep_alive_s": 3600, **changes})


def cost_line(seconds: int, most: str, instance_type: str = "ml.p4d.24xlarge") -> tuple[str, str]:
    return ("INFO", f"Warm pool: each job's instance stays up to {seconds} s after it ends, so the next trial on it "
                    f"starts in seconds instead of minutes; billed while idle, at most {most} a job ({instance_type}); "
                    "hydra.launcher.keep_alive_s=0 turns it off")


def test_spot_asks_for_no_warm_pool_and_says_so(fresh_quotas, caplog):
    client, stub = quotas_client("eu-west-1")
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_pool_seconds(client, "eu-west-1", pool(spot=True)) == 0
    assert messages(caplog, "bincount.sagemaker.warm_pool", "bincount.sagemaker.quotas") == [
        ("INFO", "Warm pool: none for spot jobs (SageMaker has no warm pools for managed spot training)")]
    stub.assert_no_pending_responses()


def test_the_warm_pool_costs_price_x_instances_x_hours_and_a_small_quota_warns(fresh_quotas, caplog):
    """$37.688/h x 4 instances x 3600 s = $150.752 -> $150.75 a job; a quota of 2 keeps none of the 4 warm,
    and the request asks for 4 instances x 3 parallel jobs = 12."""
    client, stub = quotas_client("eu-west-1", ("list_service_quotas", [(WARM, 2.0, "L-WARM")]))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_pool_seconds(client, "eu-west-1", pool()) == 3600
    assert messages(caplog, "bincount.sagemaker.warm_pool", "bincount.sagemaker.quotas") == [
        cost_line(3600, "$150.75"),
        ("WARNING", f"the quota '{WARM}' is 2 in eu-west-1: the jobs run, but no instance is kept warm; ask for 12 "
                    "(quota code L-WARM) to make the next trial start in seconds")]
    stub.assert_no_pending_responses()


def test_a_quota_of_exactly_one_jobs_instances_is_enough(fresh_quotas, caplog):
    """$20.36/h x 2 x 900 s = $10.18; a quota equal to instance_count keeps the instances warm: no warning."""
    client, _ = quotas_client("us-east-1", ("list_service_quotas",
                                            [("ml.g5.48xlarge for training warm pool usage", 2.0, "L-G5")]))
    with caplog.at_level(logging.INFO, logger="bincount"):
        seconds = warm_pool_seconds(client, "us-east-1", pool(instance_type="ml.g5.48xlarge",
                                                                           instance_count=2, keep_alive_s=900))
    assert seconds == 900
    assert messages(caplog, "bincount.sagemaker.warm_pool", "bincount.sagemaker.quotas") == [cost_line(900, "$10.18", "ml.g5.48xlarge")]


def test_an_unpriced_type_and_an_unknown_quota_still_ask_for_the_pool(fresh_quotas, caplog):
    """No price in the table: the cost line says "the idle time"; no such quota in this region: not checked."""
    name = "ml.trn1.32xlarge for training warm pool usage"
    client, stub = quotas_client("eu-west-1", ("list_service_quotas", []), ("list_aws_default_service_quotas", []))
    with caplog.at_level(logging.INFO, logger="bincount"):
        assert warm_pool_seconds(client, "eu-west-1", pool(instance_type="ml.trn1.32xlarge",
                                                                        keep_alive_s=60)) == 60
    assert messages(caplog, "bincount.sagemaker.warm_pool", "bincount.sagemaker.quotas") == [
        cost_line(60, "the idle time", "ml.trn1.32xlarge"),
        ("INFO", f"no quota named '{name}' in eu-west-1's Service Quotas; not checked")]
    stub.assert_no_pending_responses()


def test_each_region_reads_its_own_warm_pool_quota(fresh_quotas, caplog):
    """The quota is cached per region: a second region is asked, and its own answer counts."""
    ok, ok_stub = quotas_client("us-east-1", ("list_service_quotas", [(WARM, 8.0, "L-WARM")]))
    zero, zero_stub = quotas_client("eu-west-1", ("list_service_quotas", [(WARM, 0.0, "L-WARM")]))
    with caplog.at_level(logging.WARNING, logger="bincount"):
        assert warm_pool_seconds(ok, "us-east-1", pool()) == 3600
        assert warm_pool_seconds(zero, "eu-west-1", pool()) == 3600
    assert messages(caplog, "bincount.sagemaker.warm_pool", "bincount.sagemaker.quotas") == [
        ("WARNING", f"the quota '{WARM}' is 0 in eu-west-1: the jobs run, but no instance is kept warm; ask for 12 "
                    "(quota code L-WARM) to make the next trial start in seconds")]
    ok_stub.assert_no_pending_responses()
    zero_stub.assert_no_pending_responses()


# 3. Pruning a running trial (bincount.sagemaker.pruning) ------------------------------------------------------

def progress_file(values: dict) -> bytes:
    """What a job's ``bincount.sagemaker.job.progress.write_progress`` leaves: ``{"values": {"<epoch>": value}}``."""
    return json.dumps({"values": {str(k): v for k, v in values.items()}}).encode()


def test_parse_progress_reads_epochs_and_values_as_numbers():
    from bincount.sagemaker.job.progress import parse_progress

    assert parse_progress(b'{"values": {"0": 0.5, "1": "0.25", "10": 1}, "monitor": "val/acc"}') == {
        0: 0.5, 1: 0.25, 10: 1.0}
    assert parse_progress(b'{"values": {}}') == {}


def test_the_progress_file_is_written_whole_and_read_back(tmp_path):
    """The job's writer and the launcher's reader share one format: the exact bytes, and nothing left beside."""
    from bincount.sagemaker.job.progress import parse_progress, write_progress

    path = tmp_path / "checkpoints" / "bincount_progress.json"
    write_progress(path, "val/acc", {"0": 0.25, "1": 0.5})
    assert path.read_text() == '{"metric": "val/acc", "values": {"0": 0.25, "1": 0.5}}'
    write_progress(path, "val/acc", {"0": 0.25, "1": 0.5, "2": 0.75})
    assert parse_progress(path.read_bytes()) == {0: 0.25, 1: 0.5, 2: 0.75}
    assert sorted(p.name for p in path.parent.iterdir()) == ["bincount_progress.json"]


@pytest.mark.parametrize("data", [None, b"", b"not json", b'{"VALUES": {"0": 1}}', b'{"values": [1, 2]}',
                                  b'{"values": {"x": 1}}', b'{"values": {"0": "high"}}', b'{"values": {"0": null}}',
                                  b"[1]"])
def test_a_malformed_progress_file_is_no_progress(data):
    from bincount.sagemaker.job.progress import parse_progress

    assert parse_progress(data) == {}


def test_a_progress_file_is_read_up_to_its_size_limit_and_not_beyond():
    from bincount.sagemaker.job.progress import parse_progress

    body = progress_file({0: 0.5})
    at_limit = body + b" " * (MAX_PROGRESS_BYTES - len(body))
    assert len(at_limit) == MAX_PROGRESS_BYTES and parse_progress(at_limit) == {0: 0.5}
    assert parse_progress(at_limit + b" ") == {}


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A real sqlite study whose pruner stops a trial below 0.5; ``trial()`` is one RUNNING trial's variables,
    as a launcher's job carries them (the storage URL is in the sweeper's environment)."""
    optuna = pytest.importorskip("optuna")
    from bincount.sweep.pruning import ENV_PRUNER, ENV_STUDY, ENV_TRIAL
    from bincount.sweep.study import ENV_STORAGE

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv(ENV_STORAGE, storage)
    created = optuna.create_study(storage=storage, study_name="values", direction="maximize")
    pruner = base64.urlsafe_b64encode(json.dumps({"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5})
                                      .encode()).decode()

    def trial() -> dict[str, str]:
        return {ENV_STUDY: "values", ENV_TRIAL: str(created.ask().number), ENV_PRUNER: pruner}

    created.trial = trial
    return created


@pytest.fixture
def local_job(tmp_path):
    """The local backend and one of its jobs, ended (as a re-attached job's process is): ``write(values)``
    puts its progress file where the job's checkpoint dir is; ``backend.stop`` on it records the stop."""
    from bincount.sagemaker.job.contract import Layout
    from bincount.sagemaker.job.progress import PROGRESS_FILE
    from bincount.sagemaker.local import LocalBackend, LocalJob, OrphanProcess

    sweep = tmp_path / "sweep"
    backend = LocalBackend(settings(local={"root": str(tmp_path / "local")}), sweep, sweep, [], KEY)

    def make(idx: int, trial_env: dict | None):
        spec = job_spec(sweep / str(idx), idx=idx)
        if trial_env is not None:
            spec.extra["trial"] = trial_env
        layout = Layout(backend.root / f"job{idx}").make()
        job = LocalJob(f"bincount-{idx}-20250101000000", spec, OrphanProcess(0, layout), layout, 0.0, None)
        job.write = lambda values: (layout.checkpoints / PROGRESS_FILE).write_bytes(progress_file(values))
        return spec, job

    return backend, make


def test_new_epochs_are_reported_to_the_trial_and_a_good_job_runs_on(study, local_job, caplog):
    from bincount.sagemaker.pruning import JobPruner, prune_if_asked

    backend, make = local_job
    env = study.trial()
    spec, job = make(4, env)
    job.write({0: 0.6, 1: 0.7})
    with caplog.at_level(logging.INFO, logger="bincount"):
        prune_if_asked(backend, spec, job)
    pruner = spec.extra["pruner"]
    assert isinstance(pruner, JobPruner) and pruner.trial.number == int(env["BINCOUNT_OPTUNA_TRIAL"])
    assert (pruner.reported, pruner.last) == ({0, 1}, (1, 0.7))
    assert set(spec.extra) == {"trial", "pruner"} and spec.extra["trial"] == env
    assert job.stopped is None and messages(caplog, "bincount.sagemaker.pruning") == []
    assert study.trials[pruner.trial.number].intermediate_values == {0: 0.6, 1: 0.7}

    job.write({0: 0.6, 1: 0.7, 2: 0.8})  # the next poll: the same pruner, one new epoch
    prune_if_asked(backend, spec, job)
    assert spec.extra["pruner"] is pruner and (pruner.reported, pruner.last) == ({0, 1, 2}, (2, 0.8))
    assert study.trials[pruner.trial.number].intermediate_values == {0: 0.6, 1: 0.7, 2: 0.8}
    assert job.stopped is None and "pruned" not in spec.extra


def test_a_job_with_no_progress_yet_reports_nothing(study, local_job):
    from bincount.sagemaker.pruning import prune_if_asked

    backend, make = local_job
    spec, job = make(0, study.trial())
    prune_if_asked(backend, spec, job)  # no progress file: the job has not finished an epoch
    assert (spec.extra["pruner"].reported, spec.extra["pruner"].last) == (set(), None)
    assert job.stopped is None and "pruned" not in spec.extra


def test_the_pruner_kept_for_a_job_is_asked_again_and_the_study_is_not_reloaded(study, local_job):
    """Once made, the job's pruner is reused: its study is not loaded again at each poll."""
    from bincount.sagemaker.pruning import JobPruner, prune_if_asked

    backend, make = local_job
    spec, job = make(1, None)
    pruner = JobPruner(study.trial())
    spec.extra.update(pruner=pruner, trial={"BINCOUNT_OPTUNA_STUDY": "gone", "BINCOUNT_OPTUNA_TRIAL": "0"})
    job.write({0: 0.9})
    prune_if_asked(backend, spec, job)
    assert spec.extra["pruner"] is pruner and pruner.last == (0, 0.9)
    assert "trial" in spec.extra, "the job's pruner was made again, from its (now unreachable) study"


def test_a_pruned_job_is_stopped_once_with_the_pruners_reason(study, local_job, caplog):
    from bincount.sagemaker.pruning import prune_if_asked

    backend, make = local_job
    spec, job = make(5, study.trial())
    job.write({0: 0.75, 1: 0.125})
    with caplog.at_level(logging.INFO, logger="bincount"):
        prune_if_asked(backend, spec, job)
    reason = "pruned by the study's pruner after epoch 2 (value 0.125)"
    assert spec.extra["pruned"] == reason
    assert job.stopped == "stopped by the launcher", "the launcher stopped this job"
    assert messages(caplog, "bincount.sagemaker.pruning") == [
        ("INFO", f"bincount-5-20250101000000: {reason}; stopping it")]

    # The next poll, before the job has ended: a later epoch is below the threshold too; it is not stopped again.
    job.stopped = None
    caplog.clear()
    job.write({0: 0.75, 1: 0.125, 2: 0.0625})
    with caplog.at_level(logging.INFO, logger="bincount"):
        prune_if_asked(backend, spec, job)
    assert spec.extra["pruner"].last == (2, 0.0625)
    assert spec.extra["pruned"] == reason and job.stopped is None
    assert messages(caplog, "bincount.sagemaker.pruning") == []


def test_an_unreachable_study_leaves_the_job_running_unpruned_and_says_why(study, local_job, caplog, monkeypatch):
    from bincount.sagemaker.pruning import prune_if_asked
    from bincount.sweep.study import ENV_STORAGE

    backend, make = local_job
    monkeypatch.delenv(ENV_STORAGE)  # the sweeper's environment lost the storage URL
    spec, job = make(6, study.trial())
    job.write({0: 0.1})
    with caplog.at_level(logging.INFO, logger="bincount"):
        prune_if_asked(backend, spec, job)
    assert messages(caplog, "bincount.sagemaker.pruning") == [
        ("WARNING", "bincount-6-20250101000000: cannot ask the pruner (KeyError: 'BINCOUNT_OPTUNA_STORAGE'); "
                    "the job runs unpruned")]
    assert spec.extra == {}, "the trial is dropped: the launcher stops asking for this job"
    assert job.stopped is None
