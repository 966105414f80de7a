"""What the SageMaker launcher computes, checked by value (issue 25, item 4): what pruning saved, when a relaunch
re-attaches, where the training quota's boundaries lie, and which region wins.

Each test pins a number or a choice a user relies on: a changed formula, a dropped check or an off-by-one
comparison makes one of them fail, where the end-to-end tests (which only see that a sweep ran) stay green.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.launcher_settings import settings
from omegaconf import OmegaConf

from bincount.sagemaker.job.contract import RESULT_FILE, Layout
from bincount.sagemaker.state import reattach, save_state
from bincount.sagemaker.spec import JobSpec

ROOT = Path(__file__).resolve().parents[1]


def job_spec(local_dir: Path, max_epochs: int | None = None, sha: str = "config-a", state_sha: str = "state-a",
             idx: int = 0) -> JobSpec:
    """A launcher's job as ``build_spec`` leaves it, for the fields the code under test reads."""
    config = OmegaConf.create({"trainer": {"max_epochs": max_epochs}} if max_epochs else {})
    return JobSpec(idx, [], config, local_dir, str(idx), ["python", "-m", "bincount.sagemaker.job.entry"], {}, sha,
                   f"bincount-{idx}", state_sha=state_sha)


# 1. What pruning saved ---------------------------------------------------------------------------------------

def test_saving_is_the_epochs_not_run_at_the_pace_so_far():
    """600 s for 2 of 10 epochs is 300 s an epoch: the 8 epochs not run would have taken 2400 s."""
    from bincount.sagemaker.pruning import saving

    assert saving(600.0, 2, 10) == pytest.approx(2400.0)
    assert saving(90.0, 3, 4) == pytest.approx(30.0)
    assert saving(50.0, 1, 2) == pytest.approx(50.0)
    # Nothing to estimate from: no max_epochs, no epoch done, or the job had no epoch left to save.
    assert [saving(600.0, 2, None), saving(600.0, 0, 10), saving(600.0, 10, 10), saving(600.0, 2, "10")] == [None] * 4


@pytest.fixture
def running_trial(tmp_path):
    """A RUNNING trial of a real sqlite study, and the variables a launcher's job carries to reach it."""
    optuna = pytest.importorskip("optuna")
    from bincount.sweep.pruning import ENV_STUDY, ENV_TRIAL
    from bincount.sweep.study import ENV_STORAGE

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="values", direction="maximize")
    return lambda: {ENV_STUDY: "values", ENV_TRIAL: str(study.ask().number), ENV_STORAGE: storage}


def pruned_job(local_dir: Path, trial_env: dict, progress: dict[int, float], max_epochs: int, elapsed: float,
               p) -> dict:
    """A job stopped after the epochs in ``progress``: its recorded state, as the launcher's loop writes it."""
    from bincount.sagemaker.pruning import JobPruner, pruned_state

    spec = job_spec(local_dir, max_epochs)
    spec.extra["pruner"] = JobPruner(trial_env)
    assert spec.extra["pruner"].observe(progress) is None, "the study's median pruner waits for 5 trials"
    save_state(spec, name=spec.base_name, status="Pruned", **pruned_state(spec, elapsed, p))
    (local_dir / ".hydra").mkdir()
    (local_dir / ".hydra" / "overrides.yaml").write_text("[]\n")  # what makes the sweep report see a job dir
    return json.loads((local_dir / "sagemaker_job.json").read_text())


def test_a_pruned_jobs_state_and_the_sweep_report_say_what_pruning_saved(tmp_path, running_trial):
    """Two ml.g5.xlarge ($1.408/h) pairs stopped early, by hand:
    job 0: 2 of 8 epochs in 300 s -> 6 x 150 s = 900 s; 2 instances x 900 s x $1.408/3600 s = $0.704;
    job 1: 1 of 4 epochs in 100 s -> 3 x 100 s = 300 s; 2 x 300 x 1.408/3600 = $0.234667 -> $0.2347;
    the report: 1200 s = 20.0 instance-minutes, $0.9387 -> $0.94."""
    from bincount.sweep.report import billing_summary, from_job_dirs

    p = settings(instance_type="ml.g5.xlarge", instance_count=2)
    sweep = tmp_path / "sweep"
    first = pruned_job(sweep / "0", running_trial(), {0: 0.31, 1: 0.42}, 8, 300.0, p)
    second = pruned_job(sweep / "1", running_trial(), {0: 0.25}, 4, 100.0, p)
    assert {k: first[k] for k in ("pruned_after_epochs", "last_value", "saved_s", "saved_usd")} == {
        "pruned_after_epochs": 2, "last_value": 0.42, "saved_s": 900.0, "saved_usd": 0.704}
    assert {k: second[k] for k in ("pruned_after_epochs", "last_value", "saved_s", "saved_usd")} == {
        "pruned_after_epochs": 1, "last_value": 0.25, "saved_s": 300.0, "saved_usd": 0.2347}
    summary = billing_summary(from_job_dirs(sweep))
    assert summary.endswith("; pruning stopped 2 jobs early, about 20.0 instance-minutes ($0.94) not spent"), summary


def test_a_job_pruned_without_max_epochs_records_no_saving(tmp_path, running_trial):
    """No max_epochs, no estimate: the state says None rather than a made-up number."""
    from bincount.sagemaker.pruning import JobPruner, pruned_state

    spec = job_spec(tmp_path)
    spec.extra["pruner"] = JobPruner(running_trial())
    spec.extra["pruner"].observe({0: 0.5, 1: 0.6, 2: 0.7})
    state = pruned_state(spec, 300.0, settings(instance_type="ml.g5.xlarge", instance_count=1))
    assert state == {"pruned_after_epochs": 3, "last_value": 0.7, "saved_s": None, "saved_usd": None}


# 2. Re-attaching after a relaunch ----------------------------------------------------------------------------

def local_backend(sweep_dir: Path):
    from bincount.sagemaker.local import LocalBackend

    return LocalBackend(settings(local={"root": str(sweep_dir / ".sagemaker_local")}), sweep_dir, sweep_dir, [],
                        b"k" * 32)


def finished_job(backend, spec: JobSpec, recorded_by: JobSpec) -> None:
    """An earlier launch's job for ``spec.idx`` that has since finished (its result in place, its process gone),
    recorded InProgress by that launch for ``recorded_by`` (its config and code)."""
    layout = Layout(backend.root / f"job{spec.idx}").make()
    (layout.output_data / RESULT_FILE).write_text(json.dumps({"status": "COMPLETED", "return_value": 1.0}))
    save_state(recorded_by, name="bincount-0-20250101000000", status="InProgress", started=1000.0, pid=0)


def test_a_relaunch_reattaches_to_the_job_recorded_for_the_same_config(tmp_path, caplog):
    backend = local_backend(tmp_path)
    spec = job_spec(tmp_path / "0")
    finished_job(backend, spec, recorded_by=job_spec(tmp_path / "0"))
    with caplog.at_level(logging.INFO):
        handle = reattach(backend, spec)
    assert handle is not None and handle.name == "bincount-0-20250101000000"
    assert (spec.extra["name"], spec.extra["started"]) == ("bincount-0-20250101000000", 1000.0)
    assert "bincount-0-20250101000000: re-attached (started by an earlier launch of this sweep)" in caplog.text


@pytest.mark.parametrize("recorded", [{"sha": "config-b", "state_sha": "state-b"},  # another config
                                      {"sha": "config-a", "state_sha": "state-b"}])  # same config, other code
def test_a_relaunch_never_reattaches_to_a_job_recorded_for_another_config(tmp_path, caplog, recorded):
    """The earlier job trained another config (or code): collecting it would give this trial another's result.
    ``reattach`` says no, and the launcher submits the job anew."""
    backend = local_backend(tmp_path)
    spec = job_spec(tmp_path / "0")
    finished_job(backend, spec, recorded_by=job_spec(tmp_path / "0", **recorded))
    with caplog.at_level(logging.INFO):
        assert reattach(backend, spec) is None
    assert "name" not in spec.extra and "re-attached" not in caplog.text


# 3. The training quota's boundaries --------------------------------------------------------------------------

@pytest.fixture
def quota_client():
    """``make(value)``: a real Service Quotas client whose one answer (botocore's Stubber) is an applied quota of
    ``value`` ml.g5.xlarge training instances; the quota cache is emptied around each test."""
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import Stubber

    from bincount.sagemaker import quotas

    def make(value: float):
        client = boto3.client("service-quotas", region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="y")
        stub = Stubber(client)
        stub.add_response("list_service_quotas", {"Quotas": [{
            "ServiceCode": "sagemaker", "QuotaName": "ml.g5.xlarge for training job usage", "QuotaCode": "L-G5",
            "QuotaArn": "arn:aws:servicequotas:us-east-1:123456789012:sagemaker/L-G5", "Value": value}]},
            {"ServiceCode": "sagemaker"})
        stub.activate()
        return client

    quotas._CHECKED.clear()
    yield make
    quotas._CHECKED.clear()


def check(client, instance_count: int, parallel: int) -> None:
    from bincount.sagemaker.quotas import check_training_quota

    check_training_quota(client, "us-east-1", "ml.g5.xlarge", instance_count, parallel, spot=False)


def test_a_quota_of_exactly_one_jobs_instances_lets_it_start(quota_client, caplog):
    with caplog.at_level(logging.WARNING):
        check(quota_client(2), instance_count=2, parallel=1)
    assert caplog.text == ""


def test_a_quota_one_below_one_jobs_instances_is_refused(quota_client):
    from bincount.sagemaker.quotas import QuotaError

    with pytest.raises(QuotaError, match=r"^the quota 'ml.g5.xlarge for training job usage' is 1 in us-east-1, and one "
                                         r"job needs 2: no job could start.*--quota-code L-G5 --desired-value 6"):
        check(quota_client(1), instance_count=2, parallel=3)


def test_a_quota_of_exactly_all_parallel_jobs_runs_them_all_quietly(quota_client, caplog):
    with caplog.at_level(logging.WARNING):
        check(quota_client(6), instance_count=2, parallel=3)
    assert caplog.text == ""


def test_a_quota_one_below_all_parallel_jobs_warns_how_many_can_run(quota_client, caplog):
    """5 instances for 3 jobs of 2: two jobs (4 instances) fit at once."""
    with caplog.at_level(logging.WARNING):
        check(quota_client(5), instance_count=2, parallel=3)
    assert "the quota 'ml.g5.xlarge for training job usage' is 5 in us-east-1: at most 2 of the 3 parallel jobs" \
           in caplog.text and "--desired-value 6" in caplog.text


# 4. Which region wins ----------------------------------------------------------------------------------------

def test_the_configured_region_wins_over_the_environments(monkeypatch, tmp_path):
    """hydra.launcher.region=us-east-1 with AWS_DEFAULT_REGION=eu-west-1: the jobs, their image and the API calls
    are all in us-east-1 (an image from another region's registry, or a job in another region than its bucket,
    fails only once it reaches AWS). The environment's region counts only when none is configured."""
    pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
    from bincount.sagemaker.offline import offline_session
    from bincount.sagemaker.preflight import make_boto_session
    from bincount.sagemaker.remote import SageMakerBackend

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    p = settings(region="us-east-1", dry_run=True, instance_type="ml.g5.xlarge", framework_version="2.5")
    assert make_boto_session("us-east-1").region_name == "us-east-1"
    assert make_boto_session(None).region_name == "eu-west-1"
    assert offline_session(replace(p, region=None)).region_name == "eu-west-1"
    session = offline_session(p)
    assert session.region_name == "us-east-1"
    (tmp_path / "app.py").write_text("print('job')\n")
    backend = SageMakerBackend(p, tmp_path / "sweep", tmp_path, ["app.py"], session, 0)
    assert backend.staged.image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"
    assert backend.session.boto_region_name == "us-east-1"
    assert backend.boto.client("sagemaker").meta.endpoint_url == "https://api.sagemaker.us-east-1.amazonaws.com"


@pytest.mark.slow  # a Hydra multirun through the launcher (launches nothing); the test above is the fast check
def test_a_dry_runs_request_names_the_configured_regions_image(hydra_sweep_runner, monkeypatch, tmp_path):
    """The same through Hydra: the CreateTrainingJob request the SDK builds in the dry run pulls its image from
    us-east-1's registry, not the environment's eu-west-1."""
    pytest.importorskip("sagemaker.train", reason="the sagemaker extra (sagemaker-train) is not installed")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=tmp_path,
                               overrides=["hydra/launcher=sagemaker_base", "hydra.launcher.dry_run=true",
                                          "hydra.launcher.region=us-east-1", "hydra.launcher.framework_version=2.5",
                                          "hydra.launcher.instance_type=ml.g5.xlarge",
                                          f"hydra.launcher.source_dir={ROOT / 'tests' / 'sagemaker_app'}"])
    with sweep:  # the runner deletes its temp dir on exit: read the request inside
        (job,) = sweep.returns[0]
        request = json.loads((Path(job.working_dir) / "create_training_job.json").read_text())
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"


# 5. The state file is written whole -----------------------------------------------------------------------------

def test_a_reader_never_sees_half_a_state_file(tmp_path):
    """A launcher re-attaching, or a test polling, reads the state while the sweep writes it: it must see
    the old state or the new one, never an empty or truncated file (write_text truncates first)."""
    import json
    import threading

    from bincount.sagemaker.state import STATE_FILE, saved_state

    spec = job_spec(tmp_path / "0")
    save_state(spec, status="InProgress", note="x" * 20_000)
    stop, seen, bad = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(saved_state(spec)["status"])
            except (json.JSONDecodeError, KeyError) as e:
                bad.append(repr(e))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        save_state(spec, status="InProgress" if i % 2 else "Stopping", note="x" * 20_000)
    stop.set()
    reader.join(10)
    assert bad == [] and seen, bad[:3]
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == [STATE_FILE], "no temporary file left behind"
