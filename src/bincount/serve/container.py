"""The image's entry point: ``python -m bincount.serve.container serve`` is what SageMaker runs.

SageMaker starts an inference container as ``docker run IMAGE serve`` after unpacking the model's
``model.tar.gz`` into ``/opt/ml/model``. This serves that directory (``$SM_MODEL_DIR`` or
``--model-dir`` elsewhere) on 0.0.0.0:8080 (``$SAGEMAKER_BIND_TO_PORT`` when set) with the same
server as ``bincount serve``. A directory still holding a ``model.tar.gz`` instead of the bundle is
served from the archive (``load_model`` extracts only the bundle files, safely). Batch transform's
``$SAGEMAKER_MAX_PAYLOAD_IN_MB`` sets the body limit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bincount.bundle import BUNDLE_FILE


def model_source(model_dir: Path) -> Path:
    """The bundle directory itself, or the one ``model.tar.gz`` (or ``*.tar.gz``) found in it."""
    if (model_dir / BUNDLE_FILE).is_file() or (model_dir / "model" / BUNDLE_FILE).is_file():
        return model_dir
    archives = sorted(model_dir.glob("*.tar.gz")) if model_dir.is_dir() else []
    return archives[0] if archives else model_dir  # load_model names what is missing


def main(argv: list[str] | None = None) -> int:
    from bincount import cli

    parser = argparse.ArgumentParser(prog="bincount.serve.container", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"], help="what SageMaker passes")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", default=os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    args, rest = parser.parse_known_args(argv)
    extra = list(rest)
    payload_mb = os.environ.get("SAGEMAKER_MAX_PAYLOAD_IN_MB")
    if payload_mb and payload_mb.isdigit() and "--max-body-bytes" not in extra:
        extra += ["--max-body-bytes", str(int(payload_mb) << 20)]
    source = model_source(Path(args.model_dir))
    return cli.main(["serve", str(source), "--host", args.host, "--port", str(args.port), *extra])


if __name__ == "__main__":
    sys.exit(main())
