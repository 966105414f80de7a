"""Hydra's own launcher test suites against the local backend of the SageMaker launcher.

Parametrized like Hydra's plugins (hydra_joblib_launcher's tests). The in-process suites run pickled
task functions (Hydra's test apps are closures, not scripts); the integration suite runs real
``python task.py -m`` apps, which take the script payload, in place in the launch directory, since it
asserts the job's working directory and ``get_original_cwd()`` on the laptop's paths.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (BatchedSweeperTestSuite, IntegrationTestSuite,
                                                    LauncherTestSuite)
from pytest import mark

from hydra_plugins.bincount_sagemaker_launcher.launcher import SageMakerLauncher

FAST = ["hydra.launcher.poll_interval_s=0.05", f"hydra.launcher.source_dir={Path(__file__).parent / 'sagemaker_app'}"]


def test_discovery() -> None:
    assert SageMakerLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@mark.slow  # each test runs SageMaker local jobs
@mark.parametrize("launcher_name, overrides", [("sagemaker_local_base", FAST)])
class TestSageMakerLocalLauncher(LauncherTestSuite):
    pass


@mark.slow
@mark.parametrize("launcher_name, overrides", [("sagemaker_local_base", [*FAST, "hydra/sweeper=basic",
                                                                    "hydra.sweeper.max_batch_size=2"])])
class TestSageMakerLocalLauncherBatched(BatchedSweeperTestSuite):
    pass


@mark.slow  # 11 subprocess apps, each starting Hydra twice (launcher and job)
@mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/launcher=sagemaker_local_base", "hydra.launcher.local.copy_code=false",
          "hydra.launcher.poll_interval_s=0.05"]),
])
class TestSageMakerLocalLauncherIntegration(IntegrationTestSuite):
    pass


def test_local_progress_is_the_last_epoch_in_the_job_log(tmp_path):
    """The status line shows a local job's epoch as Lightning's progress bar wrote it (issue 17: status as it happens)."""
    from types import SimpleNamespace

    from bincount.sagemaker.local import LocalBackend

    job = SimpleNamespace(layout=SimpleNamespace(ml=tmp_path))
    backend = LocalBackend.__new__(LocalBackend)
    assert backend.progress(job) is None  # no log yet
    (tmp_path / "job.log").write_text("noise\n" * 5000 + "Epoch 0/5 ━━ 6/6\nEpoch 1/5 ━━ 3/6 train/loss: 1.2\n")
    assert backend.progress(job) == "epoch 2/6"
    assert backend.log_location(job) == str(tmp_path / "job.log")
