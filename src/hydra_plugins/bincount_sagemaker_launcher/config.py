"""Typed config of the SageMaker launcher: ``hydra/launcher=sagemaker_base`` / ``sagemaker_local_base``.

The fields, their defaults and what each does are ``bincount.sagemaker.settings.LauncherSettings``: the
launcher builds that same type from this node, so what a user sets and what the launcher reads are one schema.
Kept free of heavy imports: Hydra imports every plugin module at start-up, and the settings module imports
only the standard library. The project's presets in ``conf/hydra/launcher/`` (``sagemaker``,
``sagemaker_multi_gpu``, ``sagemaker_multi_node``, ``sagemaker_local``) extend these nodes; other Hydra apps
can use the ``*_base`` nodes directly.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from bincount.sagemaker.settings import LauncherSettings


@dataclass
class SageMakerLauncherConf(LauncherSettings):
    _target_: str = "hydra_plugins.bincount_sagemaker_launcher.launcher.SageMakerLauncher"


@dataclass
class SageMakerLocalLauncherConf(SageMakerLauncherConf):
    backend: str = "local"
    instance_type: str = "local"
    poll_interval_s: float = 0.5
    max_parallel_jobs: int = 2


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="sagemaker_base", node=SageMakerLauncherConf, provider="bincount")
cs.store(group="hydra/launcher", name="sagemaker_local_base", node=SageMakerLocalLauncherConf, provider="bincount")
