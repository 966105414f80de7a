"""bincount's Optuna sweeper for Hydra (``hydra/sweeper=bincount_optuna``); see docs/sweeps.md."""
