"""Running bincount jobs as SageMaker training jobs.

Two sides (docs/architecture.md, "The SageMaker launcher, by where code runs"): the launcher side, the
modules here, runs on the user's machine and is what ``hydra_plugins.bincount_sagemaker_launcher`` calls;
the job side, ``bincount.sagemaker.job``, runs inside the container and imports only the standard library.
Nothing here is imported by local training runs except the job side's constants.
"""
