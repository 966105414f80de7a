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


@mark.parametrize("launcher_name, overrides", [("sagemaker_local_base", FAST)])
class TestSageMakerLocalLauncher(LauncherTestSuite):
    pass


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
