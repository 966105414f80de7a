"""Hyperparameter sweeps: the Optuna sweeper's logic, the pruning hook and the sweep report (docs/sweeps.md)."""
