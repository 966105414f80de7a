"""Hydra launcher that runs each job as a SageMaker training job (or a local stand-in of one)."""
