"""``bincount.secrets``: every secret word and value shape is caught, harmless names and values pass.

The cases are literal lists, not loops over the module's own word list: dropping a word (``TOKEN``) or a
shape from the module must fail a test here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.secrets import AWS_KEY_ID, AWS_SECRET, WANDB_KEY

from bincount.secrets import SecretError, check, check_overrides, secret_name, secret_shape

SECRET_NAMES = [  # one per word and suffix, in the spellings people use
    "API_KEY", "WANDB_API_KEY", "wandb.api_key", "apiKey", "HF_TOKEN", "MYTOKEN", "CLIENT_SECRET", "clientsecret",
    "PASSWORD", "DBPASSWORD", "db.passwd", "MYPASSWD", "DB_PWD", "DB_PASS", "ssh.passphrase", "GH_PAT",
    "GOOGLE_APPLICATION_CREDENTIALS", "aws.credential", "my_creds", "AWS_SECRET_ACCESS_KEY", "awsAccessKey",
    "secretkey", "privatekey", "APIKEY", "AWSACCESSKEY", "hydra.job.env_set.WANDB_API_KEY",
]
HARMLESS_NAMES = [
    "model", "optimizer.lr", "trainer.max_epochs", "callbacks.early_stopping.patience", "data.path", "data.root",
    "keypoints", "monkey", "sort_keys", "compass", "passes", "tokens", "hydra.launcher.environment.FOO",
    "hydra.launcher.tags.team", "hydra.callbacks.bincount_sagemaker._target_", "hydra.job.config.override_dirname.exclude_keys",
]
SECRET_VALUES = {  # value -> a word of the label the message gives
    "https://user:pw@mlflow.example.com": "password", "http://:pw@proxy:3128": "password",
    "postgresql://optuna:hunter2@db:5432/optuna": "password", AWS_KEY_ID: "access key id",
    "ASIAIOSFODNN7EXAMPLE": "access key id", AWS_SECRET: "secret access key", WANDB_KEY: "W&B",
    "-----BEGIN OPENSSH PRIVATE KEY-----": "private key", "ghp_" + "aB3" * 12: "GitHub",
    "github_pat_" + "aB3_" * 10: "GitHub", "hf_" + "aB3" * 11: "Hugging Face", "sk-" + "aB3" * 8: "sk-",
    "xoxb-123456789012-abcdef": "Slack", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig": "JSON web token",
    "{api_key: abc}": "api_key", "${oc.env:WANDB_API_KEY}": "WANDB_API_KEY", f"0.1,{WANDB_KEY}": "W&B",
}
HARMLESS_VALUES = [
    "resnet50", "1e-4", "0.0001,0.0003", "s3://bucket/prefix/abid", "/Users/John2/Projects/bincount/data/abid",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "abc1234", "https://example.com/x",
    "ssh://git@github.com/org/repo", "${oc.env:SAGEMAKER_ROLE_ARN,null}", "[trainer=gpu,resume=true]", "{FOO: bar}",
    "arn:aws:iam::123456789012:role/SageMakerBincount", "bincount/wandb", "'/opt/ml/input/data/code/multirun/x/0'",
    "ThisIsALongCamelCaseIdentifierOfFortyChr",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert secret_name(name)


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_names(name):
    assert not secret_name(name)


@pytest.mark.parametrize("value, label", SECRET_VALUES.items())
def test_secret_values(value, label):
    shape = secret_shape(value)
    assert shape is not None
    assert label is None or label in shape


@pytest.mark.parametrize("value", HARMLESS_VALUES)
def test_harmless_values(value):
    assert secret_shape(value) is None


def test_overrides_are_refused_by_key_never_echoing_the_value():
    with pytest.raises(SecretError) as e:
        check_overrides(["model=resnet50", f"+paths.x={AWS_SECRET}", "+wandb.api_key=hunter2",
                         f"+hydra.job.env_set.TOKEN={WANDB_KEY}"])
    msg = str(e.value)
    assert "'paths.x': the value looks like an AWS secret access key" in msg
    assert "'wandb.api_key': the name looks like a credential" in msg
    assert "'hydra.job.env_set.TOKEN': the name looks like a credential" in msg
    assert "hydra.launcher.secrets.<ENV_NAME>=<secret name>" in msg, "the message says what to do instead"
    for secret in (AWS_SECRET, "hunter2", WANDB_KEY):
        assert secret not in msg
    assert "model" not in msg


def test_a_key_that_is_itself_a_secret_is_named_by_position():
    with pytest.raises(SecretError) as e:
        check_overrides(["model=resnet50", f"+{AWS_KEY_ID}=1"])
    assert "override #2" in str(e.value) and AWS_KEY_ID not in str(e.value)


def test_secret_references_are_allowed_but_their_values_checked():
    check_overrides(["+hydra.launcher.secrets.WANDB_API_KEY=bincount/wandb",
                     "hydra.launcher.secrets={WANDB_API_KEY: bincount/wandb, HF_TOKEN: bincount/hf}"])
    with pytest.raises(SecretError, match="'hydra.launcher.secrets.WANDB_API_KEY': the value looks like a W&B"):
        check_overrides([f"+hydra.launcher.secrets.WANDB_API_KEY={WANDB_KEY}"])


def test_check_names_every_bad_item():
    with pytest.raises(SecretError) as e:
        check([("hydra.launcher.environment.DB_PASS", "x"), ("hydra.launcher.tags.team", AWS_KEY_ID),
               ("hydra.launcher.environment.FOO", "bar")])
    assert "DB_PASS': the name" in str(e.value) and "tags.team': the value looks like an AWS access key id" in str(e.value)
    assert "FOO" not in str(e.value)
    check([("hydra.launcher.secrets.WANDB_API_KEY", "bincount/wandb")], names=False)


def test_import_light():
    """train.py runs the check before Hydra starts: it must not pull in torch, Lightning, Hydra or OmegaConf."""
    code = ("import sys, bincount.secrets; heavy = {'torch', 'lightning', 'hydra', 'omegaconf', 'timm'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
