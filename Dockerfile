# bincount's inference image: the same server as `bincount serve`, on SageMaker's container contract.
#
# SageMaker runs `docker run IMAGE serve` after unpacking the model's model.tar.gz into /opt/ml/model;
# the exec-form ENTRYPOINT below takes that `serve` argument and answers /ping and /invocations on
# 0.0.0.0:8080 (bincount.serve.container). The SageMaker PyTorch inference images serve through
# TorchServe, archived since August 2025, so this image brings its own server instead.
#
# One file, two variants (torch's CUDA wheels carry their own CUDA runtime; the host gives the driver):
#   CPU  (ml.m5.large):  docker build -t bincount-serve:cpu .
#   CUDA (ml.g5.xlarge): docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t bincount-serve:gpu .
# Rehearse it locally, as SageMaker would run it, over a run's bundle:
#   docker run --rm -p 8080:8080 -v "$PWD/outputs/<run>/model:/opt/ml/model:ro" bincount-serve:cpu serve
# Push it to ECR and deploy: docs/serving.md.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/bincount
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# torch and torchvision first, from the variant's index, at the versions constraints.txt pins (a pin
# without a local label matches 2.x.y+cpu / +cu128); then bincount with the serve and s3 extras, pinned.
RUN pip install --index-url "${TORCH_INDEX}" \
        "$(grep -E '^torch==' constraints.txt)" "$(grep -E '^torchvision==' constraints.txt)" \
 && pip install -c constraints.txt ".[serve,s3]" \
 && useradd --create-home --uid 1000 bincount

# The model directory is only read (a model.tar.gz left in it is unpacked to a temporary directory).
USER bincount
EXPOSE 8080
ENTRYPOINT ["python", "-m", "bincount.serve.container"]
CMD ["serve"]
