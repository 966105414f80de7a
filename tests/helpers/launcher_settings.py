"""The SageMaker launcher's typed settings for tests, as the plugin's setup() builds them, or not yet checked."""

from __future__ import annotations

import dataclasses
from typing import Any

from bincount.sagemaker.settings import LauncherSettings, LocalSettings, settings_from


def settings(**changes: Any) -> LauncherSettings:
    """The schema's defaults with ``changes``, not validated (a test of one function may want a bad value).
    ``local`` may be a dict of LocalSettings' fields."""
    if isinstance(changes.get("local"), dict):
        changes["local"] = LocalSettings(**changes["local"])
    return dataclasses.replace(LauncherSettings(), **changes)


def local_settings(**changes: Any) -> LauncherSettings:
    """The ``sagemaker_local_base`` node's defaults with ``changes``, built and checked like setup() does."""
    from hydra_plugins.bincount_sagemaker_launcher.config import SageMakerLocalLauncherConf

    return settings_from({**dataclasses.asdict(SageMakerLocalLauncherConf()), **changes})
