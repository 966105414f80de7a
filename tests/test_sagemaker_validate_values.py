"""The launcher's settings check (``bincount.sagemaker.settings.validate``): each bound accepted at its edge and
refused one past it, and each refusal's whole message (the key, the bad value and what is valid)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from helpers.launcher_settings import settings

from bincount.sagemaker.settings import LauncherConfigError, validate
from bincount.secrets import SecretError

ROLE = "arn:aws:iam::123456789012:role/bincount-jobs"
S3 = "s3://bincount-bucket/runs"


def params(**changes):
    """The launcher's typed defaults with a role and bucket set (a launch that would go ahead), then ``changes``."""
    return settings(**{"role": ROLE, "output_s3_uri": S3, **changes})


def refusal(**changes) -> str:
    with pytest.raises(LauncherConfigError) as e:
        validate(params(**changes))
    return str(e.value)


@pytest.mark.parametrize("changes", [
    {}, {"keep_alive_s": 0}, {"keep_alive_s": 3600}, {"max_retry_attempts": 0}, {"max_retry_attempts": 30},
    {"max_parallel_jobs": 1, "instance_count": 1}, {"spot": True, "max_wait_s": 14400, "max_runtime_s": 14400},
    {"spot": True, "max_wait_s": None}, {"spot": False, "max_wait_s": 10, "max_runtime_s": 14400},
    {"framework_version": "2.9"}, {"framework_version": "2.9.0"}, {"requirements": "requirements/job.txt"},
    {"backend": "local", "role": None, "output_s3_uri": None}, {"dry_run": True, "role": None, "output_s3_uri": None},
])
def test_settings_at_their_bounds_are_accepted(changes):
    assert validate(params(**changes)) is None


@pytest.mark.parametrize("changes, message", [
    ({"backend": "cloud"}, "hydra.launcher.backend='cloud'; valid: ['sagemaker', 'local']"),
    ({"payload": "zip"}, "hydra.launcher.payload='zip'; valid: ['auto', 'script', 'pickle']"),
    ({"max_parallel_jobs": 0}, "hydra.launcher.max_parallel_jobs and instance_count must be >= 1"),
    ({"instance_count": 0}, "hydra.launcher.max_parallel_jobs and instance_count must be >= 1"),
    ({"keep_alive_s": -1}, "hydra.launcher.keep_alive_s=-1: 0 (no warm pool) to 3600 seconds"),
    ({"keep_alive_s": 3601}, "hydra.launcher.keep_alive_s=3601: 0 (no warm pool) to 3600 seconds"),
    ({"max_retry_attempts": -1}, "hydra.launcher.max_retry_attempts=-1: 0 (never) to 30"),
    ({"max_retry_attempts": 31}, "hydra.launcher.max_retry_attempts=31: 0 (never) to 30"),
    ({"spot": True, "max_wait_s": 14399, "max_runtime_s": 14400},
     "hydra.launcher.max_wait_s=14399 must be >= max_runtime_s=14400 (spot waits count against it)"),
    ({"framework_version": "latest"}, "hydra.launcher.framework_version='latest': a PyTorch version such as 2.9 or "
                                      "2.9.0, or null for the newest image the SDK knows"),
    ({"framework_version": "2.9." + "x" * 60}, "hydra.launcher.framework_version='2.9." + "x" * 36 + "': a PyTorch "
                                             "version such as 2.9 or 2.9.0, or null for the newest image the SDK knows"),
    ({"requirements": "../x\n.txt"}, "hydra.launcher.requirements='../x?.txt': a path relative to source_dir, of "
                                     "letters, digits, '.', '_', '-' and '/' (no '..')"),
    ({"requirements": "r/" + "a" * 100 + " x"}, "hydra.launcher.requirements='r/" + "a" * 78 + "': a path relative to "
                                         "source_dir, of letters, digits, '.', '_', '-' and '/' (no '..')"),
])
def test_a_bad_setting_is_refused_naming_the_value_and_what_is_valid(changes, message):
    assert refusal(**changes) == message


@pytest.mark.parametrize("missing, variable", [("role", "SAGEMAKER_ROLE_ARN"), ("output_s3_uri", "BINCOUNT_SM_S3")])
def test_a_missing_role_or_bucket_names_its_variable_and_both(missing, variable):
    assert refusal(**{missing: None}) == (
        f"hydra.launcher.{missing} is not set: export {variable} (or pass hydra.launcher.{missing}=...); "
        "backend=sagemaker needs both SAGEMAKER_ROLE_ARN and BINCOUNT_SM_S3: the jobs' IAM role ARN and the "
        "s3://bucket/prefix for code, outputs and checkpoints (docs/sagemaker.md, Set-up)")


def test_a_secret_reference_may_have_a_secret_name_but_an_environment_value_may_not_look_like_one():
    assert validate(params(secrets={"WANDB_API_KEY": "bincount/wandb"})) is None
    with pytest.raises(SecretError, match=r"^refused: setting 'hydra\.launcher\.environment\.DB': the value looks "
                                          r"like a URL with a password"):
        validate(params(environment={"DB": "postgres://u:hunter2@db.example/x"}))


def test_a_sweeps_key_is_its_folder_name_made_safe_and_cut_then_8_hex_digits_of_its_absolute_path(tmp_path):
    import hashlib

    from bincount.sagemaker.spec import sweep_key

    folder = tmp_path / ("My sweep_2026.12.07" + "x" * 40)
    digest = hashlib.sha1(str(folder.absolute()).encode()).hexdigest()[:8]
    assert sweep_key(folder) == ("My-sweep-2026-12-07" + "x" * 40)[:40] + "-" + digest
    assert sweep_key(tmp_path / "a" / "s") != sweep_key(tmp_path / "b" / "s")  # same name, other sweep


@pytest.mark.parametrize("key, value, message", [
    ("instance_type", "g5.xlarge", "hydra.launcher.instance_type: "),
    ("checkpoint_s3_uri", "http://bucket/x", "hydra.launcher.checkpoint_s3_uri: "),
    ("output_s3_uri", "bucket/x", "hydra.launcher.output_s3_uri: "),
])
def test_a_malformed_aws_name_is_refused_by_its_key(key, value, message):
    assert refusal(**{key: value}).startswith(message)


def test_an_override_with_a_control_character_is_refused_in_full(tmp_path):
    from bincount.sagemaker.spec import check_overrides

    config = OmegaConf.create({"hydra": {"overrides": {"hydra": [], "task": ["ok=1"]}}})
    key = "k" * 70 + "\tx"
    with pytest.raises(LauncherConfigError) as e:
        check_overrides(config, [[f"{key}=1\nrm -rf ~"]], params())
    assert str(e.value) == (
        f"override {'k' * 60!r} contains a control character ('\\t'); overrides become the job's shell command, "
        "where a newline can end the SDK's heredoc and run the rest as shell. Valid: printable characters only (put "
        "multi-line text in a config file)")
    interpolated = OmegaConf.create({"hydra": {"overrides": {"hydra": [], "task": ["a=${b}"]}}, "b": "x\ny"})
    assert check_overrides(interpolated, [], params()) is None, "the override's text is checked, not its value"


# The settings object built from the launcher node (bincount.sagemaker.settings.settings_from) -------------------

def node(**changes) -> dict:
    """The launcher node as Hydra passes it to the plugin: every field, ``_target_`` gone, then ``changes``."""
    from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLocalLauncherConf

    fields = OmegaConf.to_container(OmegaConf.structured(SageMakerLocalLauncherConf))
    return {**{k: v for k, v in fields.items() if k != "_target_"}, **changes}


def test_the_settings_are_the_nodes_values_typed():
    from bincount.sagemaker.settings import LauncherSettings, LocalSettings, settings_from

    built = settings_from(node(max_parallel_jobs="3", spot="true", poll_interval_s=1, local={"num_gpus": 2},
                               environment={"N": 5}, base_job_name="${instance_type}-x"))
    assert type(built) is LauncherSettings and type(built.local) is LocalSettings
    assert (built.max_parallel_jobs, built.spot, built.poll_interval_s) == (3, True, 1.0)
    assert built.local == LocalSettings(num_gpus=2) and built.environment == {"N": "5"}
    assert built.base_job_name == "local-x" and built.backend == "local"
    assert settings_from({**node(), "_target_": "anything"}) == settings_from(node()), "Hydra's _target_ is not a key"


@pytest.mark.parametrize("changes, message", [
    ({"instance_typo": "ml.g5.xlarge"}, "hydra.launcher.instance_typo: Key 'instance_typo' not in 'LauncherSettings'; "
                                        "valid keys there: backend, role, region, instance_type, "),
    ({"local": {"gpus": 1}}, "hydra.launcher.local.gpus: Key 'gpus' not in 'LocalSettings'; valid keys there: root, "
                             "copy_code, python, num_gpus"),
    ({"max_parallel_jobs": "many"}, "hydra.launcher.max_parallel_jobs: Value 'many' of type 'str' could not be "
                                    "converted to Integer; valid keys there: backend, "),
    ({"max_parallel_jobs": 0}, "hydra.launcher.max_parallel_jobs and instance_count must be >= 1"),
])
def test_a_bad_node_is_refused_naming_the_key_and_the_valid_ones(changes, message):
    from bincount.sagemaker.settings import settings_from

    with pytest.raises(LauncherConfigError) as e:
        settings_from(node(**changes))
    assert str(e.value).startswith(message), str(e.value)
    if "valid keys there" in message and "LocalSettings" not in message:
        assert str(e.value).endswith("max_output_mb, dry_run, local")


@pytest.mark.parametrize("changes, message", [
    ({"environment": {"WANDB_PROJECT": "${oc.env:BC_T_NO_SUCH_VARIABLE}"}},
     "hydra.launcher.environment.WANDB_PROJECT: KeyError raised while resolving interpolation: \"Environment "
     "variable 'BC_T_NO_SUCH_VARIABLE' not found\"; hydra.launcher.environment maps names to text"),
    ({"tags": {"team": "${nope}"}},
     "hydra.launcher.tags.team: Interpolation key 'nope' not found; hydra.launcher.tags maps names to text"),
    ({"environment": {"A": [1, 2]}}, "hydra.launcher.environment.A: a list, not text; hydra.launcher.environment "
                                     "maps names to text"),
    ({"secrets": {"B": {"c": 1}}}, "hydra.launcher.secrets.B: a dict, not text; hydra.launcher.secrets maps names "
                                   "to text"),
])
def test_a_bad_entry_of_a_map_setting_is_refused_by_its_key(changes, message, monkeypatch):
    """An error inside environment/secrets/tags was a TypeError from the message builder; a list went through."""
    from bincount.sagemaker.settings import settings_from

    monkeypatch.delenv("BC_T_NO_SUCH_VARIABLE", raising=False)
    with pytest.raises(LauncherConfigError) as e:
        settings_from(node(**changes))
    assert str(e.value) == message
