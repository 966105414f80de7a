"""Issue 24, item 5: the value shapes ``bincount.secrets`` missed, and the sweeper's masking of query-string
passwords.

Literal cases, one per shape (dropping a pattern from the module fails its case), next to the harmless
look-alikes each pattern must let through: a masked URL, an empty or plural parameter, a short prefix.
"""

from __future__ import annotations

import pytest

from bincount.secrets import SecretError, check_overrides, mask_query, query_secrets, secret_name, secret_shape

GOOGLE = "AIzaSyD" + "Planted0Google1Key2abcdefghijklm"  # 39 characters, as Google issues them
AZURE_KEY = "Planted0Azure1Key2" + "abcdEFGH0123+/" * 5 + "=="
SECRET_VALUES = {  # value -> a word of the label the message gives
    GOOGLE: "Google",
    f"https://maps.example.com/api?key={GOOGLE}": "Google",
    "sk_live_" + "Planted0Stripe1Key2abcd": "Stripe",
    "rk_live_" + "Planted0Stripe1Key2abcd": "Stripe",
    "sk_test_" + "Planted0Stripe1Key2abcd": "Stripe",
    "glpat-" + "Planted0GitLab1Tok2en3": "GitLab",
    "gldt-" + "Planted0GitLab1Tok2en3": "GitLab",
    f"DefaultEndpointsProtocol=https;AccountName=bins;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net": "Azure",
    f"AccountKey={AZURE_KEY}": "Azure",
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=Planted0Bus1Key=": "Azure",
    "https://bins.blob.core.windows.net/c?sv=2022-11-02&ss=b&sp=r&sig=Planted0Sas%2BSig%3D": "sig=",
    "BlobEndpoint=https://bins.blob.core.windows.net;SharedAccessSignature=sv=2022-11-02&sig=Planted0Sas": "sig=",
    "https://mlflow.example.com/?password=Planted-pw": "password=",
    "https://mlflow.example.com/api?user=a&token=Planted-tok": "token=",
    "https://hooks.example.com/x?secret=Planted": "secret=",
    "https://api.example.com/v1?api_key=Planted": "api_key=",
    "https://api.example.com/v1?access_token=Planted": "access_token=",
    "postgresql://tuner@db:5432/optuna?password=Planted-pw&sslmode=require": "password=",
    "Server=db;Database=optuna;User Id=tuner;Password=Planted-pw": "Password=",
    "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AK%2F20250101&X-Amz-Signature=abc123": "X-Amz-Credential=",
}
HARMLESS_VALUES = [
    "postgresql://tuner:***@db:5432/optuna",  # what safe_url writes: a masked password is none
    "https://mlflow.example.com/?password=***",
    "https://mlflow.example.com/?password=",  # no value
    "https://example.com/search?q=token&page=2",  # "token" as a value, not a parameter
    "https://example.com/x?tokens=5&keypoints=1&monkey=3&passes=2&sort=key",
    "AIza-short", "AIzaSyD-too-short", "sk_live_", "sk_test_abc", "desk_live_1234567890abcdefghijkl",
    "glpat-short", "glpat", "AccountName=bins;EndpointSuffix=core.windows.net", "AccountKey=***",
    "https://bins.blob.core.windows.net/c/x.jpg", "a && b=c", "key=value", "resnet50;lr=0.1",
]


@pytest.mark.parametrize("value, label", SECRET_VALUES.items())
def test_new_secret_shapes(value, label):
    shape = secret_shape(value)
    assert shape is not None and label in shape, shape


@pytest.mark.parametrize("value", HARMLESS_VALUES)
def test_harmless_look_alikes_pass(value):
    assert secret_shape(value) is None


def test_an_override_with_a_new_shape_is_refused_by_key_never_echoing_the_value():
    with pytest.raises(SecretError) as e:
        check_overrides(["model=tiny", f"+maps.url=https://maps.example.com/api?key={GOOGLE}",
                         "data.s3.endpoint_url=https://s3.example.com/?token=Planted-tok"])
    message = str(e.value)
    assert "override 'maps.url': the value looks like a Google API key" in message
    assert "override 'data.s3.endpoint_url': the value looks like a URL with a credential in its query string (token=" \
        in message
    assert GOOGLE not in message and "Planted-tok" not in message


def test_query_secrets_and_mask_query():
    url = "postgresql://tuner@db/optuna?sslmode=require&password=p%40ss&token=t0k&sig=***"
    assert query_secrets(url) == [("password", "p%40ss"), ("token", "t0k")]
    assert mask_query(url) == "postgresql://tuner@db/optuna?sslmode=require&password=***&token=***&sig=***"
    assert mask_query("https://example.com/x?page=2") == "https://example.com/x?page=2"


@pytest.mark.parametrize("name, strict, loose", [
    ("profiler.sort_by_key", True, False),  # Lightning's PyTorchProfiler argument: a sort key, not a secret
    ("KEY", True, False), ("ssh.key", True, False),
    ("wandb.api_key", True, True), ("AWS_ACCESS_KEY_ID", True, True), ("ssh.private_key", True, True),
    ("db.password", True, True), ("HF_TOKEN", True, True), ("secret_key", True, True), ("GH_PAT", True, True),
    ("monkey", False, False), ("keypoints", False, False),
])
def test_key_alone_is_secret_on_the_command_line_but_not_in_config_files(name, strict, loose):
    assert secret_name(name) is strict
    assert secret_name(name, bare_key=False) is loose


# --- the sweeper's storage URL: a password in the query string is masked like one after "user:" ---

from bincount.sweep.study import redact, safe_url  # noqa: E402

PASSWORD = "Planted-Query-pw-4411"
URL = f"postgresql://tuner@127.0.0.1:1/optuna?password={PASSWORD}&sslmode=disable"
MASKED = "postgresql://tuner@127.0.0.1:1/optuna?password=***&sslmode=disable"


def test_safe_url_masks_a_query_string_password():
    assert safe_url(URL) == MASKED
    assert safe_url("postgresql://tuner:pw@db/optuna?token=t") == "postgresql://tuner:***@db/optuna?token=***"
    assert safe_url("not a url?token=Planted") == "***", "a text SQLAlchemy cannot read is hidden whole"
    assert safe_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


def test_redact_hides_a_query_string_password_as_written_and_decoded():
    url = "postgresql://tuner@db.example/optuna?password=p%40ss-Planted"
    message = f"could not connect to {url}: password 'p@ss-Planted' rejected (raw p%40ss-Planted)"
    shown = redact(message, url)
    assert "p@ss-Planted" not in shown and "p%40ss-Planted" not in shown
    assert "optuna?password=***" in shown
