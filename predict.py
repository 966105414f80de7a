"""Predict counts as a Hydra app: ``python predict.py bundle=MODEL 'inputs=[INPUT,...]' [output=CSV]``.

The same work as ``bincount predict`` (its parser checks the values), here so that Hydra's launchers can
run it, e.g. as a SageMaker job over an ``s3://`` prefix writing its CSV to S3 (docs/serving.md)::

    python predict.py +launch=sagemaker bundle=s3://bucket/models/run/model.tar.gz \\
        'inputs=[s3://bucket/abid/]' output=s3://bucket/predictions/abid.csv

For interactive use ``bincount predict --help`` is the friendlier front door.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bincount.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> dict:
    from bincount.predict.cli import ERRORS, predict, report
    from bincount.predict.config import PredictConfigError, job_summary, predict_args

    try:
        summary = predict(predict_args(cfg))
    except (PredictConfigError, OSError, *ERRORS) as err:
        if not one_run():  # a sweep or a job records the failure; HYDRA_FULL_ERROR=1 asks for the trace
            raise
        from bincount.text import plain

        print(plain(f"predict.py: error: {err}"), file=sys.stderr)
        sys.exit(2 if isinstance(err, PredictConfigError) else 1)
    report(summary)
    return job_summary(summary)


def one_run() -> bool:
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return os.environ.get("HYDRA_FULL_ERROR") != "1" and HydraConfig.get().mode == RunMode.RUN


if __name__ == "__main__":
    from hydra._internal.utils import get_args_parser

    from bincount.secrets import SecretError, check_overrides

    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    try:  # before Hydra writes anything: a credential in an override is saved nowhere
        check_overrides(args.overrides)
    except SecretError as e:
        sys.exit(f"predict.py: {e}")
    main()
