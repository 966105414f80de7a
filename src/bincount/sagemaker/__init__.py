"""Running bincount jobs as SageMaker training jobs.

Launcher side (``runner``, ``spec``, ``local``, ``remote``): what the Hydra plugin in
``hydra_plugins.bincount_sagemaker_launcher`` calls. Job side (``contract``, ``entry``, ``callback``,
``invoke``): what runs inside the container. Nothing here is imported by local training runs except
``contract``, which is standard library only.
"""
