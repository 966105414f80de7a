"""``bincount predict MODEL INPUT... -o predictions.csv``: counts for images with a bundle, on CPU or GPU.

Why Lightning's predict loop: batching, device placement, precision and the progress bar are the
Trainer's, and the same ``predict_step`` serves a notebook (``load_model(...).predict``) and this
command. Rows stream to the CSV (:mod:`.writer`); bad files are listed with their reason, counted,
and written to ``<csv stem>.summary.json`` with the scores when the inputs carry true counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

from bincount.bundle import BundleError
from bincount.cli_values import count, positive
from bincount.layout import BAD_INPUT_CHOICES, DataError
from bincount.s3.endpoint import S3Error
from bincount.s3.store import S3ReadError
from bincount.text import plain


class PredictSetupError(ValueError):
    """A setting this machine cannot honour (an accelerator it lacks)."""


ERRORS = (BundleError, DataError, S3Error, S3ReadError, PredictSetupError)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a bundle dir, a run dir, a model.tar.gz, or an s3:// URI of one")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image files, folders (recursive), ABID roots (bin-images/ + metadata/), s3:// prefixes")
    parser.add_argument("-o", "--output", metavar="CSV", default="predictions.csv",
                        help="the CSV, or s3://bucket/prefix/name.csv (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive, default=32, metavar="N", help="images per batch (default: 32)")
    parser.add_argument("--num-workers", type=count, default=2, metavar="N", help="loader processes (default: 2)")
    parser.add_argument("--accelerator", choices=ACCELERATORS, default="auto", help="Lightning accelerator (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true", help="Lightning precision (default: 32-true)")
    parser.add_argument("--bad-input", choices=BAD_INPUT_CHOICES, default="skip",
                        help="skip: list bad files and go on; fail: stop at the first (exit 1)")
    parser.add_argument("--max-pixels", type=positive, metavar="N", help="refuse larger images (default: the bundle's)")
    parser.add_argument("--ids", metavar="FILE", help="only these ids of ABID inputs: one a line, or a CSV with an id column")
    parser.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _quiet_lightning() -> None:
    """Lightning's banner (GPU available..., tips) is not a result; warnings and errors still show, but for
    the ones a user cannot act on (:mod:`bincount.quiet`: torch's ``LeafSpec`` deprecation in Lightning's code)."""
    from bincount.quiet import quiet_lightning

    quiet_lightning()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def show_progress(args: argparse.Namespace, images: int) -> bool:
    """A bar only where someone watches it (stderr is a terminal) and for more than one batch: in a log file
    it is a line of escape codes, and for a handful of images it says "0.00it/s" and nothing else."""
    return not args.no_progress and sys.stderr.isatty() and images > args.batch_size


def warn_mismatch(metadata: dict, inputs: list[str], items: list) -> str | None:
    """Say once, on stderr, when the inputs look unlike the model's training data (issue 27)."""
    from bincount.bundle.provenance import input_mismatch

    warning = input_mismatch(metadata, inputs, [item.true_count for item in items])
    if warning:
        print(plain(f"bincount predict: warning: {warning}"), file=sys.stderr, flush=True)
    return warning


def s3_output(url: str) -> tuple[str, str]:
    """``s3://bucket/dir/p.csv`` -> (``s3://bucket/dir``, ``p.csv``); refused before any prediction runs."""
    from bincount.s3.endpoint import parse_s3_url

    base, _, name = url.rstrip("/").rpartition("/")
    if base == "s3:/" or not name.lower().endswith(".csv"):  # p.CSV too, as a local -o p.CSV is
        raise argparse.ArgumentTypeError(f"-o {url}: an S3 output is a CSV key, e.g. s3://bucket/out/predictions.csv")
    try:
        parse_s3_url(base)
    except S3Error as e:  # a bad bucket or prefix: a usage mistake, found before predicting
        raise argparse.ArgumentTypeError(f"-o {url}: {e}") from None
    return base, name


def upload(local_csv: Path, summary_path: Path, url: str, s3: dict | None) -> None:
    """Both files next to each other under ``url``'s prefix; the local copies stay if the upload fails."""
    from bincount.s3.store import open_store

    base, name = s3_output(url)
    store = open_store(base, s3)
    try:
        store.write(name, local_csv.read_bytes())
        store.write(summary_path.name, summary_path.read_bytes())
    except Exception as e:
        raise OSError(f"could not upload the predictions to {url} ({e}); they are kept in {local_csv.parent}") from None
    shutil.rmtree(local_csv.parent, ignore_errors=True)


def predict(args: argparse.Namespace) -> dict:
    if str(args.output).startswith("s3://"):  # written here first (rows stream to disk), uploaded at the end
        import tempfile

        url = args.output
        base, name = s3_output(url)
        scratch = Path(tempfile.mkdtemp(prefix="bincount-predict-"))
        local = argparse.Namespace(**{**vars(args), "output": str(scratch / name)})
        summary = predict(local)
        local_summary = Path(summary["summary_json"])
        final = {**summary, "csv": url, "summary_json": f"{base}/{local_summary.name}"}
        write_summary(local_summary, final)  # the uploaded one names the S3 CSV, not the scratch copy
        s3 = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
        upload(Path(local.output), local_summary, url, s3)
        return final
    import lightning as L

    from bincount.bundle import load_model
    from bincount.predict.dataset import PredictDataset, predict_loader
    from bincount.predict.inputs import collect, read_ids
    from bincount.predict.writer import CSVPredictionWriter

    _quiet_lightning()
    s3 = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    model = load_model(args.model, s3=s3)
    items = collect(args.inputs, read_ids(args.ids) if args.ids else None, s3=s3)
    dataset = PredictDataset(items, model.transform, args.max_pixels or model.max_pixels)
    warning = warn_mismatch(model.metadata, list(args.inputs), items)
    writer = CSVPredictionWriter(args.output, items, model.metadata["classes"], args.bad_input)
    callbacks: list = [writer]
    progress = show_progress(args, len(items))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(console_kwargs={"stderr": True}))
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, logger=False,
                            enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks,
                            enable_progress_bar=progress, default_root_dir=str(Path(args.output).parent))
    except MisconfigurationException as e:  # an accelerator this machine lacks: a usage error, not a traceback
        raise PredictSetupError(f"--accelerator {args.accelerator} --precision {args.precision}: {e} "
                                f"(choose from {', '.join(ACCELERATORS)}; auto picks what this machine has)") from None
    trainer.predict(model.module, dataloaders=predict_loader(dataset, args.batch_size, args.num_workers),
                    return_predictions=False)
    summary = {"model": str(args.model), **writer.summary(), **({"warning": warning} if warning else {})}
    out = Path(args.output)
    summary_path = out.with_name(f"{out.stem}.summary.json")
    write_summary(summary_path, summary)
    summary["summary_json"] = str(summary_path)
    return summary


def write_summary(path: Path, summary: dict) -> None:
    """``<csv stem>.summary.json``: the summary less its own location."""
    path.write_text(json.dumps({k: v for k, v in summary.items() if k != "summary_json"}, indent=2) + "\n")


def report(summary: dict) -> None:
    """The summary on stdout: counts, scores where the inputs carry true counts, every bad file."""
    print(plain(f"{summary['predicted']} of {summary['images']} images predicted -> {summary['csv']}"))
    metrics = summary.get("metrics")
    if metrics and metrics.get("n"):
        print(f"scored {metrics['n']} with true counts ({metrics['unscored']} outside the model's classes): "
              f"acc {metrics['acc']:.4f}, rmse {metrics['rmse']:.4f}, mae {metrics['mae']:.4f}, "
              f"within one {metrics['within_one']:.4f}")
    if summary["bad"]:
        print(f"{summary['bad_count']} bad files skipped:")
        for bad in summary["bad"]:
            print(plain(f"  {bad['name']}: {bad['reason']}"))
    print(plain(f"summary -> {summary['summary_json']}"))
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    report(predict(args))
    return 0
