"""A Hydra app whose job sleeps ``seconds`` and returns it: trials of known, different lengths for the
dispatch benchmark (benchmarks/sweep_dispatch.py, and tests/test_sagemaker_async.py through it), run by the
SageMaker launcher's local backend."""

import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="sleep")
def main(cfg: DictConfig) -> float:
    time.sleep(float(cfg.seconds))
    return float(cfg.seconds)


if __name__ == "__main__":
    main()
