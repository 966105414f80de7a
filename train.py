"""Train a bin counter: ``python train.py [group=option ...] [key=value ...]``.

Hydra composes ``conf/train.yaml`` with the overrides; ``bincount.train.train`` does the work.
Examples::

    python train.py                                   # synthetic bins, ResNet18 on the CPU, a few minutes
    python train.py model=resnet50 data=abid_capstone trainer=gpu
    python train.py experiment=capstone_resnet50_tuned
    python train.py -m model=resnet50,efficientnet_b4 optimizer.lr=1e-4,3e-4
    python train.py resume=true                       # continue the last run of the same command

Heavy libraries (torch, lightning, timm) are imported inside the task, so ``--help`` and config
composition (``--cfg job``) stay fast.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bincount.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from bincount.config import ConfigError
    from bincount.train import train

    try:
        return train(cfg)
    except ConfigError as err:  # a mistake in the config: one line, exit 2, no run directory left behind
        from bincount.config import report_config_error

        report_config_error(err, cfg)  # returns only where the error should propagate (sweeps, HYDRA_FULL_ERROR)
        raise


class _Tee:
    """sys.stderr that also keeps the first 64 KB written (Hydra's one-line errors), for a hint afterwards."""

    def __init__(self, stream):
        self.stream, self.text, self.kept = stream, [], 0

    def write(self, s: str) -> int:
        if self.kept < 65536:
            self.text.append(s)
            self.kept += len(s)
        return self.stream.write(s)

    def __getattr__(self, name):
        return getattr(self.stream, name)


if __name__ == "__main__":
    from hydra._internal.utils import get_args_parser

    from bincount.secrets import SecretError, check, check_overrides

    args, _ = get_args_parser().parse_known_args(sys.argv[1:])  # Hydra's own split of flags and overrides
    try:  # before Hydra writes .hydra/, a log or a run directory: a refused credential is saved nowhere
        check_overrides(args.overrides)
        flags = {k: v for k, v in vars(args).items() if isinstance(v, str)}  # --config-dir PATH: only its value
        check(flags.items(), "option", names=False)
    except SecretError as e:
        sys.exit(f"train.py: {e}")
    stderr = sys.stderr
    sys.stderr = seen = _Tee(stderr)  # Hydra prints its own errors: an unknown key's message gets a suggestion
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: launchers have stopped their jobs and logged which; no traceback
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except SystemExit as stop:
        sys.stderr = stderr
        if stop.code == 1:
            from pathlib import Path

            from bincount.config import unknown_override_hint

            hint = unknown_override_hint("".join(seen.text), args.overrides, str(Path(__file__).parent / "conf"), "train")
            if hint:
                print(f"train.py: config error: {hint}", file=sys.stderr)
                sys.exit(2)  # a usage mistake, as for every config error
        raise
    finally:
        sys.stderr = stderr
