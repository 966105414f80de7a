"""The run config's schema and the checks that make a mistake fail before training.

Hydra already refuses overrides of keys that do not exist; it does not check YAML files (experiments)
for misspelled keys, values for their types, or names (backbone, head, optimizer arguments) against
what exists. ``check_config`` does all of that in a second or so, with messages that name the bad value
and the valid choices, the way LightningCLI's typed configs do. ``schema``: the dataclasses; ``targets``:
``_target_`` nodes against their signatures; ``checks``: the whole check; ``hints``: what the user sees.
"""

from bincount.config.checks import check_config
from bincount.config.hints import report_config_error, unknown_override_hint
from bincount.config.schema import ConfigError, check_schema
from bincount.config.targets import check_target_node

__all__ = ["ConfigError", "check_config", "check_schema", "check_target_node", "report_config_error",
           "unknown_override_hint"]
