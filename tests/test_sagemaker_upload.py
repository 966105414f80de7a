"""The code channel, attacked as issue 24 (item 6) did: what of a project reaches the bucket.

A project tree with every credential name the issue found uploaded (in odd case too), inside the
directories ``include`` allows, plus a hard link to a file outside the project and a 200 MB file. Two guards,
each tested on its own: the never-upload list holds when ``upload_patterns=['*']`` turns the allowlist of
kinds off, and the allowlist of kinds stops a secret in a file whose name no list knows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import pytest
from helpers.sagemaker import REMOTE, sweep_of
from helpers.secrets import files_containing

from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLauncherConf

DEFAULTS = SageMakerLauncherConf()
INCLUDE, IGNORE = DEFAULTS.include, DEFAULTS.ignore_patterns
SECRET = "planted-credential-7f3a"
LOGGER = "bincount.sagemaker.upload"

CODE = {"src/app/__init__.py": "", "src/app/model.py": "x = 1\n", "src/app/settings.json": "{}",
        "conf/config.yaml": "a: 1\n", "conf/data/small.yml": "b: 2\n", "experiments/e.yaml": "c: 3\n",
        "train.py": "", "pyproject.toml": "", "constraints.txt": "", "README.md": "# app\n"}
# Every name issue 24 found uploaded, and the rest of the list, inside allowlisted directories (in the case
# people write them): what the warning names -> the pattern that refuses it. A directory is named once.
CREDENTIALS = {
    "conf/.ENV": ".env", "src/app/.env.production": ".env.*", "conf/prod.env": "*.env",
    "src/app/DEPLOY.PEM": "*.pem", "conf/server.key": "*.key", "conf/cert.P12": "*.p12", "conf/AuthKey.p8": "*.p8",
    "conf/ID_RSA": "id_rsa*", "conf/id_rsa.pub": "id_rsa*", "conf/id_dsa": "id_dsa*", "src/id_ecdsa": "id_ecdsa*",
    "src/id_ed25519": "id_ed25519*", "src/app/Credentials.json": "credentials*", "conf/credentials": "credentials*",
    "conf/service-account.json": "service-account*.json", "conf/service_account_prod.json": "service_account*.json",
    "src/app/application_default_credentials.json": "application_default_credentials.json",
    "conf/.config/gcloud/": ".config/gcloud", "conf/.docker/": ".docker", "src/.kube/": ".kube",
    "conf/.gnupg/": ".gnupg", "conf/.ssh/": ".ssh", "src/.AWS/": ".aws", "conf/.azure/": ".azure",
    "conf/kubeconfig": "kubeconfig", "conf/.pgpass": ".pgpass", "src/.s3cfg": ".s3cfg", "src/.BOTO": ".boto",
    "conf/.vault-token": ".vault-token", "conf/putty.PPK": "*.ppk", "src/app/release.JKS": "*.jks",
    "conf/app.keystore": "*.keystore", "conf/.htpasswd": ".htpasswd", "conf/terraform.tfvars": "*.tfvars",
    "conf/prod.tfvars.json": "*.tfvars.json", "conf/terraform.tfstate": "*.tfstate",
    "conf/terraform.tfstate.backup": "*.tfstate.*", "conf/.netrc": ".netrc",
    "conf/.git-credentials": ".git-credentials",
    "conf/.pypirc": ".pypirc", "conf/.npmrc": ".npmrc", "conf/.dockercfg": ".dockercfg", "conf/.my.cnf": ".my.cnf",
    "conf/.bash_history": "*_history", "src/.zsh_history": "*_history", "conf/.python_history": "*_history",
    "conf/vault.kdbx": "*.kdbx", "conf/server.PFX": "*.pfx", "src/access_tokens.db": "access_tokens.db",
    "conf/_netrc": "_netrc", "conf/.zhistory": ".zhistory", "src/.histfile": ".histfile",
}
# What sits in the credential directories (never walked into).
IN_DIRS = {"conf/.config/gcloud/": ["application_default_credentials.json", "credentials.db", "access_tokens.db"],
           "conf/.docker/": ["config.json"], "src/.kube/": ["config"], "conf/.ssh/": ["id_ed25519", "config"],
           "conf/.gnupg/": ["private-keys-v1.d/0A1B.key", "pubring.kbx"], "src/.AWS/": ["credentials", "config"],
           "conf/.azure/": ["msal_token_cache.json"]}
# No list knows these names; only the allowlist of kinds keeps them (and the secret in one) at home.
NOT_A_KIND = {"conf/prod.ini": f"password = {SECRET}\n", "src/app/notes.md": f"token {SECRET}\n",
              "src/app/run.sh": "aws s3 ls\n", "conf/labels.csv": "a,b\n"}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def project(root: Path, big_mb: int = 200) -> Path:
    """The tree of issue 24: code, credentials beside it in every case, links, a hard link out, big files."""
    write(root, CODE)
    write(root, {name: f"{SECRET}\n" for name in CREDENTIALS if not name.endswith("/")})
    write(root, {d + f: f"{SECRET}\n" for d, fs in IN_DIRS.items() for f in fs})
    write(root, NOT_A_KIND)
    write(root, {".env": f"WANDB_API_KEY={SECRET}\n"})  # at the root: not in include, never walked
    home = root.parent / "home" / ".aws"
    write(home, {"credentials": f"aws_secret_access_key={SECRET}\n"})
    os.link(home / "credentials", root / "conf" / "aws.yaml")  # a hard link out: a .yaml holding ~/.aws/credentials
    os.link(root / ".env", root / "conf" / "dotenv.yaml")  # a hard link to the project's .env, which is not uploaded
    write(root, {"conf/a.yaml": "d: 4\n"})
    os.link(root / "conf" / "a.yaml", root / "conf" / "b.yaml")  # both links uploaded: provably inside
    (root / "conf" / "experiment").symlink_to("../experiments", target_is_directory=True)  # as bincount's is
    (root / "conf" / "key.yaml").symlink_to("../src/app/DEPLOY.PEM")  # a link to a refused file
    (root / "conf" / "home.yaml").symlink_to(home / "credentials")  # a link out of the project
    for name in ("src/app/table.json", "src/app/weights.bin"):  # sparse: 200 MB that cost no disk
        with open(root / name, "wb") as f:
            f.truncate(big_mb * 2**20)
    return root


UPLOADED = ["README.md", "conf/a.yaml", "conf/b.yaml", "conf/config.yaml", "conf/data/small.yml",
            "conf/experiment/e.yaml", "constraints.txt", "experiments/e.yaml", "pyproject.toml",
            "src/app/__init__.py", "src/app/model.py", "src/app/settings.json", "src/app/table.json", "train.py"]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


def refused(caplog) -> dict[str, str]:
    """The path -> reason of every 'not uploaded: PATH REASON' warning; a path named twice fails the test."""
    named = [re.fullmatch(r"not uploaded: (\S+) (.*)", w).groups() for w in warnings(caplog)
             if w.startswith("not uploaded: ")]
    assert len(named) == len({p for p, _ in named}), named
    return dict(named)


def test_only_what_a_job_needs_is_uploaded_and_every_refusal_is_named(tmp_path, caplog):
    from bincount.sagemaker.upload import select_code

    root = project(tmp_path / "project")
    with caplog.at_level("WARNING"):
        files = select_code(root, INCLUDE, IGNORE)
    assert files == UPLOADED
    home = (tmp_path / "home" / ".aws" / "credentials").resolve()
    assert refused(caplog) == {
        **{name: f"matches the never-upload list ({pat!r})" for name, pat in CREDENTIALS.items()},
        "conf/aws.yaml": "has 2 hard links and only 1 of them is uploaded: another may be a file outside the "
                         "project (copy it instead of linking)",
        "conf/dotenv.yaml": "has 2 hard links and only 1 of them is uploaded: another may be a file outside the "
                            "project (copy it instead of linking)",
        "conf/key.yaml": "links to src/app/DEPLOY.PEM, which is not uploaded",
        "conf/home.yaml": f"links to {home}, outside what include uploads",
    }
    rest = [w for w in warnings(caplog) if not w.startswith("not uploaded: ")]
    assert rest == [
        "not uploaded, not a kind of file a job needs (hydra.launcher.upload_patterns adds kinds, e.g. '*.csv'): "
        "conf/labels.csv, conf/prod.ini, src/app/notes.md, src/app/run.sh, src/app/weights.bin",
        "uploading src/app/table.json: 200.0 MB, above hydra.launcher.max_upload_file_mb=10 (data or weights belong "
        "in a data channel; add it to hydra.launcher.ignore_patterns to leave it out)",
        "the code channel is 200.0 MB, above hydra.launcher.max_upload_mb=100 (largest: src/app/table.json 200.0 MB, "
        "README.md 0.0 MB, src/app/model.py 0.0 MB)"]
    assert SECRET not in caplog.text


def test_the_never_upload_list_holds_whatever_the_allowlist_says(tmp_path, caplog):
    """Guard 2 alone: every kind allowed, and credentials named in include itself, at the root and inside."""
    from bincount.sagemaker.upload import select_code

    root = project(tmp_path / "project", big_mb=1)
    named = [".env", "conf/ID_RSA", "conf/.docker", "src/.AWS/credentials", "conf/.config/gcloud"]
    with caplog.at_level("WARNING"):
        files = select_code(root, sorted({*INCLUDE, *named}), IGNORE, patterns=["*"])
    assert files == sorted([*UPLOADED, *NOT_A_KIND, "src/app/weights.bin"])
    assert [f for f in files if SECRET in (root / f).read_text(errors="replace")] == sorted(["conf/prod.ini",
                                                                                             "src/app/notes.md"])
    got = refused(caplog)
    assert {name for name in got if got[name].startswith("matches the never-upload list")} == {
        *CREDENTIALS, ".env", "src/.AWS/credentials"}
    assert got[".env"] == "matches the never-upload list ('.env')"  # named in include: refused all the same


def test_only_the_kinds_a_job_needs_leave_an_include_directory(tmp_path, caplog):
    """Guard 1 alone: a secret in a file no never-upload pattern knows stays home; the user can add kinds,
    and a file named in include goes whatever its kind."""
    from bincount.sagemaker.upload import select_code

    root = project(tmp_path / "project", big_mb=1)
    assert not {"conf/prod.ini", "src/app/notes.md"} & set(select_code(root, INCLUDE, IGNORE))
    with caplog.at_level("WARNING"):
        files = select_code(root, [*INCLUDE, "src/app/notes.md"], IGNORE, patterns=["*.CSV"])
    assert set(files) - set(UPLOADED) == {"conf/labels.csv", "src/app/notes.md"}
    assert ("not uploaded, not a kind of file a job needs (hydra.launcher.upload_patterns adds kinds, e.g. '*.csv'): "
            "conf/prod.ini, src/app/run.sh, src/app/weights.bin") in warnings(caplog)


def test_an_app_whose_config_dir_is_the_project_root_uploads_the_kinds_only(tmp_path, caplog):
    """``@hydra.main(config_path=".")`` makes the whole project an entry: both guards still apply."""
    from bincount.sagemaker.upload import select_code

    root = project(tmp_path / "project", big_mb=1)
    write(root, {"notes.txt": "todo\n", "data/raw.bin": "x"})
    with caplog.at_level("WARNING"):
        files = select_code(root, ["."], IGNORE)
    assert files == sorted({*UPLOADED, "notes.txt"} - {"README.md"})  # README.md is a kind only when named
    assert refused(caplog)[".env"] == "matches the never-upload list ('.env')"
    assert "conf/dotenv.yaml" in refused(caplog)


def test_a_hard_link_is_uploaded_only_when_every_link_is(tmp_path, caplog):
    from bincount.sagemaker.upload import select_code

    root = tmp_path / "project"
    write(root, {"conf/x.yaml": "a: 1\n", "conf/y.yaml": "b: 2\n"})
    os.link(root / "conf" / "x.yaml", root / "conf" / "x2.yaml")
    assert select_code(root, ["conf"], IGNORE) == ["conf/x.yaml", "conf/x2.yaml", "conf/y.yaml"]
    os.link(root / "conf" / "y.yaml", tmp_path / "y-elsewhere.yaml")  # a third name, outside the project
    os.link(root / "conf" / "x.yaml", root / "x3.yaml")  # in the project, outside include
    with caplog.at_level("WARNING"):
        assert select_code(root, ["conf"], IGNORE) == []
    assert refused(caplog) == {
        "conf/x.yaml": "has 3 hard links and only 2 of them are uploaded: another may be a file outside the project "
                       "(copy it instead of linking)",
        "conf/x2.yaml": "has 3 hard links and only 2 of them are uploaded: another may be a file outside the project "
                        "(copy it instead of linking)",
        "conf/y.yaml": "has 2 hard links and only 1 of them is uploaded: another may be a file outside the project "
                       "(copy it instead of linking)"}


def test_the_size_budgets_are_settings(tmp_path, caplog):
    from bincount.sagemaker.upload import select_code

    root = tmp_path / "project"
    write(root, {"conf/x.yaml": "a: 1\n"})
    with open(root / "conf" / "big.json", "wb") as f:
        f.truncate(3 * 2**20)
    with caplog.at_level("WARNING"):
        assert select_code(root, ["conf"], IGNORE) == ["conf/big.json", "conf/x.yaml"]
        assert warnings(caplog) == []
        select_code(root, ["conf"], IGNORE, max_file_mb=2, max_total_mb=2)
    assert warnings(caplog) == [
        "uploading conf/big.json: 3.0 MB, above hydra.launcher.max_upload_file_mb=2 (data or weights belong in a data "
        "channel; add it to hydra.launcher.ignore_patterns to leave it out)",
        "the code channel is 3.0 MB, above hydra.launcher.max_upload_mb=2 (largest: conf/big.json 3.0 MB, "
        "conf/x.yaml 0.0 MB)"]


@pytest.mark.parametrize("path", [
    "src/bincount/secrets.py", "src/app/tokenizer.py", "src/app/history.py", "conf/env/prod.yaml", "conf/keys.yaml",
    "conf/environment.yaml", "src/app/credential_check.py", "conf/config/gcloud.yaml", "src/docker/x.py",
    "src/app/history_test.py",
])
def test_code_that_merely_sounds_like_a_credential_is_not_on_the_list(path):
    from bincount.sagemaker.upload import never_upload

    assert never_upload(PurePosixPath(path)) is None


def test_bincounts_own_code_channel_loses_nothing():
    """The kinds are wide enough for this project: every file of src/, conf/ and experiments/ goes."""
    from bincount.sagemaker.upload import select_code

    repo = Path(__file__).resolve().parents[1]
    files = set(select_code(repo, ["src", "conf", "experiments"], IGNORE))
    ours = {p.relative_to(repo).as_posix() for top in ("src", "conf", "experiments") for p in (repo / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not any(x.endswith(".egg-info") for x in p.parts)}
    assert ours <= files


@pytest.mark.slow
def test_the_dry_run_lists_the_channel_and_the_settings_reach_it(aws, hydra_sweep_runner, tmp_path, caplog):
    root = project(tmp_path / "project", big_mb=2)
    sweep = tmp_path / "sweep"
    with caplog.at_level("INFO"), sweep_of(hydra_sweep_runner, sweep, [
            *REMOTE, "hydra.launcher.dry_run=true", f"hydra.launcher.source_dir={root}",
            "hydra.launcher.upload_patterns=[*.csv]", "hydra.launcher.max_upload_file_mb=1"]):
        assert files_containing(sweep, SECRET) == []  # the staged code channel, the job dirs
        staged = sweep / ".sagemaker" / "code"
        code = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    listed = re.search(r"\[dry run\] code channel files: (.*)", caplog.text).group(1).split(", ")
    assert listed == sorted([*UPLOADED, "conf/labels.csv"])
    assert [f for f in code if not f.startswith("_sagemaker_jobs/")] == listed  # what the SDK would upload
    assert "uploading src/app/table.json: 2.0 MB, above hydra.launcher.max_upload_file_mb=1" in caplog.text
    assert "not uploaded: conf/.ENV matches the never-upload list ('.env')" in caplog.text
    assert "not uploaded: conf/aws.yaml has 2 hard links" in caplog.text
    assert SECRET not in caplog.text
