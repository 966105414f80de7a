"""SageMaker real-time and serverless endpoints for a model bundle: ``deploy``, ``invoke``, ``undeploy``.

Why sagemaker-core's resources and not ``ModelBuilder``: the image is bincount's own (the Dockerfile;
SageMaker's PyTorch inference images serve through TorchServe, archived since August 2025), and it
needs no inference script, framework detection or local build step, so ``ModelBuilder``'s machinery
adds nothing but surprises. ``Model``, ``EndpointConfig`` and ``Endpoint`` from ``sagemaker.core`` are
SDK v3's own one-to-one view of the three resources an endpoint is, which is also what ``undeploy``
has to delete. Modules: :mod:`.model_data` (where the ``model.tar.gz`` comes from), :mod:`.endpoint`
(the three resources), and one CLI module per command.
"""
