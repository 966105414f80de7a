"""The launcher's trust boundaries (docs/security.md), attacked as issue 14 did: what leaks out.

No credential in an override, the environment or a tag of a job; the code channel (which lands in a
bucket) holds only allowlisted files, never ``.env`` or keys beside the code; a planted secret reaches no
request, no upload, no file and no log line; an ``output.tar.gz`` above the limit is not read.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import boto3
import pytest
from helpers.sagemaker import APP, BUCKET, REMOTE, sweep_of, tarball
from helpers.secrets import AWS_SECRET, WANDB_KEY, files_containing


def launcher_params(**changes) -> dict:
    """The launcher node as Hydra passes it to the plugin, whatever set it (a preset YAML, an override)."""
    from omegaconf import OmegaConf

    from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLocalLauncherConf

    return {**OmegaConf.to_container(OmegaConf.structured(SageMakerLocalLauncherConf)), **changes}


@pytest.mark.parametrize("changes, key", [
    ({"environment": {"MLFLOW_TRACKING_URI": "https://u:planted@h"}}, "environment.MLFLOW_TRACKING_URI"),
    ({"environment": {"HTTPS_PROXY": "http://u:planted@proxy:3128"}}, "environment.HTTPS_PROXY"),
    ({"environment": {"DB_PASS": "planted"}}, "environment.DB_PASS"),
    ({"tags": {"owner": AWS_SECRET}}, "tags.owner"),
    ({"tags": {"GH_PAT": "planted"}}, "tags.GH_PAT"),
    ({"secrets": {"WANDB_API_KEY": WANDB_KEY}}, "secrets.WANDB_API_KEY"),  # a value, not a Secrets Manager name
])
def test_environment_tags_and_secret_names_are_checked_by_name_and_value(changes, key):
    from bincount.sagemaker.settings import settings_from as validate
    from bincount.secrets import SecretError

    with pytest.raises(SecretError) as e:
        validate(launcher_params(**changes))
    assert f"'hydra.launcher.{key}'" in str(e.value)
    assert "planted" not in str(e.value) and AWS_SECRET not in str(e.value) and WANDB_KEY not in str(e.value)
    validate(launcher_params(environment={"FOO": "bar"}, tags={"team": "vision"}, secrets={"WANDB_API_KEY": "bincount/wandb"}))


@pytest.mark.parametrize("override, key", [
    (f"+paths.x=a,{AWS_SECRET}", "paths.x"),  # a sweep: the secret is one job's value
    ("+wandb.api_key=planted", "wandb.api_key"),
    ("hydra.launcher.job_overrides=['+db.pass=planted']", "db.pass"),  # the launcher's own overrides for every job
])
def test_the_launcher_refuses_secret_overrides_of_any_app(override, key, hydra_sweep_runner, tmp_path):
    """Any Hydra app can use the launcher, without train.py's check in front of it."""
    from bincount.secrets import SecretError

    with pytest.raises(SecretError) as e:
        with sweep_of(hydra_sweep_runner, tmp_path / "sweep", ["hydra/launcher=sagemaker_local_base", override]):
            pass
    assert f"override {key!r}" in str(e.value) and "planted" not in str(e.value) and AWS_SECRET not in str(e.value)
    assert not (tmp_path / "sweep" / ".sagemaker").exists()


def project_with_local_secrets(root: Path, secret: str) -> Path:
    """A project directory as people have them: code, and credentials beside it."""
    files = {"src/app/__init__.py": "", "conf/x.yaml": "a: 1\n", "train.py": "", "pyproject.toml": "",
             ".env": f"WANDB_API_KEY={secret}\n", ".aws/credentials": f"aws_secret_access_key={secret}\n",
             "deploy.pem": secret, "src/app/.env.local": secret, "conf/id_rsa": secret, "data/big.bin": "x",
             "notes.txt": secret}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "experiments").mkdir()
    (root / "experiments" / "e.yaml").write_text("b: 2\n")
    (root / "conf" / "experiment").symlink_to("../experiments", target_is_directory=True)  # as bincount's is
    (root / "conf" / "loop").symlink_to("..", target_is_directory=True)  # not a way around the allowlist
    (root / "private").mkdir()
    (root / "private" / "token.txt").write_text(secret)
    (root / "conf" / "private").symlink_to("../private", target_is_directory=True)  # not in include
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "token.txt").write_text(secret)
    (root / "conf" / "elsewhere").symlink_to(outside, target_is_directory=True)  # not followed out of the project
    return root


def uploaded(bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, tarballs opened (a secret must not hide in a compressed code channel)."""
    s3, found = boto3.client("s3"), {}
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        found[obj["Key"]] = body
        try:
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                found.update({f"{obj['Key']}!{m.name}": tar.extractfile(m).read() for m in tar if m.isfile()})
        except tarfile.ReadError:  # not a tarball
            pass
    return found


@pytest.mark.slow
def test_planted_secrets_reach_no_request_no_upload_and_no_file(fake_sagemaker, hydra_sweep_runner, tmp_path,
                                                                 monkeypatch, caplog):
    secret = WANDB_KEY
    project = project_with_local_secrets(tmp_path / "project", secret)
    monkeypatch.setenv("WANDB_API_KEY", secret)  # the laptop's own key: the job reads its own from Secrets Manager
    sweep_dir = tmp_path / "sweep"
    with caplog.at_level("INFO"), sweep_of(hydra_sweep_runner, sweep_dir, [
            *REMOTE, f"hydra.launcher.source_dir={project}", "+hydra.launcher.secrets.WANDB_API_KEY=bincount/wandb",
            "+hydra.launcher.tags.team=vision"]) as sweep:
        assert sweep.returns[0][0].status.name == "COMPLETED"
        assert files_containing(sweep_dir, secret) == []
        code = sorted(p.relative_to(sweep_dir / ".sagemaker" / "code").as_posix()
                      for p in (sweep_dir / ".sagemaker" / "code").rglob("*") if p.is_file())
    assert code == ["_sagemaker_jobs/job0.pkl", "_sagemaker_jobs/job0.requirements.txt", "conf/experiment/e.yaml",
                    "conf/x.yaml", "experiments/e.yaml", "pyproject.toml", "src/app/__init__.py", "train.py"]
    assert "Code channel from" in caplog.text
    assert "6 files: conf/ (2), experiments/ (1), pyproject.toml, src/ (1), train.py" in caplog.text
    (request,) = fake_sagemaker.requests
    assert secret not in json.dumps(request)
    objects = uploaded(BUCKET)
    assert [k for k, v in objects.items() if secret.encode() in v] == []
    assert not [k for k in objects if ".env" in k or ".aws" in k or k.endswith((".pem", "notes.txt"))]
    assert secret not in caplog.text


@pytest.mark.slow
def test_dry_run_lists_the_code_channel(aws, hydra_sweep_runner, tmp_path, caplog):
    project = project_with_local_secrets(tmp_path / "project", "planted-value")
    with caplog.at_level("INFO"), sweep_of(hydra_sweep_runner, tmp_path / "sweep", [
            *REMOTE, "hydra.launcher.dry_run=true", f"hydra.launcher.source_dir={project}"]):
        assert files_containing(tmp_path / "sweep", "planted-value") == []  # the staged code, the job dirs
    listed = re.search(r"\[dry run\] code channel files: (.*)", caplog.text).group(1)
    assert listed.split(", ") == ["conf/experiment/e.yaml", "conf/x.yaml", "experiments/e.yaml", "pyproject.toml",
                                  "src/app/__init__.py", "train.py"]
    assert "planted-value" not in caplog.text


# --- 12. the size of output.tar.gz ----------------------------------------------------------------------

def test_an_output_above_the_limit_is_refused_unread(aws, tmp_path):
    from bincount.sagemaker.remote import download_output
    from bincount.sagemaker.spec import OutputRefused

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="big/output.tar.gz", Body=os.urandom(3 * 2**20))
    with pytest.raises(OutputRefused, match=r"s3://bincount-test/big/output.tar.gz is 3.0 MB, above "
                                            r"hydra.launcher.max_output_mb=2: not downloaded"):
        download_output(s3, BUCKET, "big/output.tar.gz", tmp_path / "job", 2 * 2**20)
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as tar:  # 64 KB in S3, 3 MB unpacked
        info = tarfile.TarInfo("result.json")
        info.size = 3 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert len(bomb.getvalue()) < 2**20
    s3.put_object(Bucket=BUCKET, Key="bomb/output.tar.gz", Body=bomb.getvalue())
    with pytest.raises(OutputRefused, match=r"output.tar.gz: members add up to more than 2,097,152 bytes; refusing the "
                                            r"archive \(hydra.launcher.max_output_mb=2\)"):
        download_output(s3, BUCKET, "bomb/output.tar.gz", tmp_path / "job", 2 * 2**20)
    assert not list((tmp_path / "job").rglob("*"))
    s3.put_object(Bucket=BUCKET, Key="ok/output.tar.gz", Body=tarball({"result.json": "{}"}))
    assert download_output(s3, BUCKET, "ok/output.tar.gz", tmp_path / "job", 2 * 2**20)
    assert (tmp_path / "job" / "result.json").read_text() == "{}"


@pytest.mark.slow
def test_a_refused_output_fails_that_job_with_the_reason(fake_sagemaker, hydra_sweep_runner, tmp_path):
    fake_sagemaker.output = lambda req: {"result.json": "{}", "big.bin": os.urandom(2 * 2**20)}
    with pytest.raises(RuntimeError, match=r"failed: s3://bincount-test/out/bincount-0-\w+-\d+/output/output.tar.gz "
                                           r"is 2.0 MB, above hydra.launcher.max_output_mb=1: not downloaded"):
        with sweep_of(hydra_sweep_runner, tmp_path / "sweep", [*REMOTE, f"hydra.launcher.source_dir={APP}",
                                                               "hydra.launcher.max_output_mb=1"]):
            pass
