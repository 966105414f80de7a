"""``bincount.predict`` below the model: the Hydra config read as ``bincount predict``'s arguments, the ids
file, the items found under ``s3://`` inputs, and where an S3 output goes (a real ``moto_server``).

No model is loaded and nothing is trained: each test checks a value a user relies on before or after the
predictions (the parsed options, the words of a refusal, which objects are predicted, which keys are written).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from s3_server import s3_client, s3_endpoint, upload_abid  # noqa: F401

from conftest import write_abid
from bincount.layout import DataError
from bincount.predict.cli import add_arguments, s3_output, upload
from bincount.predict.config import SUMMARY_KEYS, PredictConfigError, _Parser, job_summary, predict_args
from bincount.predict.inputs import _s3_items, collect, read_ids

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "(e.g. bundle=logs/train/runs/RUN 'inputs=[data/abid/sample]')"
# What `bincount predict` uses for an option nobody set (its parser's defaults).
CLI_DEFAULTS = {"output": "predictions.csv", "batch_size": 32, "num_workers": 2, "accelerator": "auto",
                "precision": "32-true", "bad_input": "skip", "max_pixels": None, "ids": None, "endpoint_url": None,
                "no_progress": False}


def args_of(**values) -> dict:
    return vars(predict_args(OmegaConf.create(values)))


def refusal(**values) -> str:
    with pytest.raises(PredictConfigError) as err:
        predict_args(OmegaConf.create(values))
    return str(err.value)


# -- predict.py's config read as bincount predict's arguments ---------------------------------------------
def test_only_bundle_and_inputs_give_the_cli_defaults_with_the_progress_bar_on():
    assert args_of(bundle="runs/r1", inputs=["data/a", "s3://b/p"]) == {
        "model": "runs/r1", "inputs": ["data/a", "s3://b/p"], **CLI_DEFAULTS}


def test_every_option_reaches_its_argument():
    got = args_of(bundle="s3://b/models/model.tar.gz", inputs=["x"], output="out/p.csv", batch_size=8, num_workers=0,
                  accelerator="cpu", precision="bf16-mixed", bad_input="fail", max_pixels=1000, ids="keep.txt",
                  endpoint_url="http://127.0.0.1:9000", progress=False)
    assert got == {"model": "s3://b/models/model.tar.gz", "inputs": ["x"], "output": "out/p.csv", "batch_size": 8,
                   "num_workers": 0, "accelerator": "cpu", "precision": "bf16-mixed", "bad_input": "fail",
                   "max_pixels": 1000, "ids": "keep.txt", "endpoint_url": "http://127.0.0.1:9000", "no_progress": True}


def test_null_options_and_progress_true_leave_the_cli_defaults():
    got = args_of(bundle="m", inputs=["x"], output=None, batch_size=None, num_workers=None, accelerator=None,
                  precision=None, bad_input=None, max_pixels=None, ids=None, endpoint_url=None, progress=True)
    assert got == {"model": "m", "inputs": ["x"], **CLI_DEFAULTS}


@pytest.mark.parametrize("inputs, expected", [
    ("data/one", ["data/one"]),  # one string is one input, not its characters
    (["b", "a", "b"], ["b", "a", "b"]),  # a list keeps its order and repeats
    ([7, "s3://bkt/x"], ["7", "s3://bkt/x"]),  # YAML numbers become paths
])
def test_inputs_as_a_string_or_a_list(inputs, expected):
    assert args_of(bundle=42, inputs=inputs)["inputs"] == expected
    assert args_of(bundle=42, inputs=inputs)["model"] == "42"


def test_the_shipped_predict_yaml_reads_as_its_documented_values():
    cfg = OmegaConf.load(ROOT / "conf" / "predict.yaml")
    with pytest.raises(PredictConfigError) as err:  # bundle: ??? and inputs: ???
        predict_args(cfg)
    assert str(err.value) == f"set bundle and inputs {EXAMPLE}"
    cfg.output, cfg.num_workers = "p.csv", 3  # interpolations that need Hydra's runtime
    cfg.bundle, cfg.inputs = "runs/r1", ["data/abid/sample"]
    assert vars(predict_args(cfg)) == {"model": "runs/r1", "inputs": ["data/abid/sample"], "output": "p.csv",
                                       "batch_size": 64, "num_workers": 3, "accelerator": "auto",
                                       "precision": "32-true", "bad_input": "skip", "max_pixels": None, "ids": None,
                                       "endpoint_url": None, "no_progress": False}


@pytest.mark.parametrize("values, missing", [
    ({"inputs": ["x"]}, "bundle"),  # no key at all
    ({"bundle": "???", "inputs": ["x"]}, "bundle"),  # Hydra's MISSING
    ({"bundle": None, "inputs": ["x"]}, "bundle"),
    ({"bundle": "", "inputs": ["x"]}, "bundle"),
    ({"bundle": "m", "inputs": []}, "inputs"),
    ({"bundle": "m", "inputs": ""}, "inputs"),
    ({"bundle": "m", "inputs": "???"}, "inputs"),
    ({"bundle": None, "inputs": None}, "bundle and inputs"),
    ({}, "bundle and inputs"),
])
def test_a_missing_bundle_or_inputs_is_named_with_an_example(values, missing):
    assert refusal(**values) == f"set {missing} {EXAMPLE}"


@pytest.mark.parametrize("values, message", [
    ({"batch_size": 0}, "batch_size: expected a positive integer, got '0'"),
    ({"max_pixels": "lots"}, "max_pixels: expected a positive integer, got 'lots'"),
    ({"num_workers": -1}, "num_workers: expected an integer >= 0, got '-1'"),
])
def test_a_bad_number_is_named_by_its_config_key_and_value(values, message):
    assert refusal(bundle="m", inputs=["x"], **values) == message


@pytest.mark.parametrize("key, value, choices", [
    ("bad_input", "maybe", ["skip", "fail"]),
    ("accelerator", "tpu", ["auto", "cpu", "gpu", "cuda", "mps"]),
    ("precision", "fp8", ["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"]),
])
def test_a_bad_choice_is_named_by_its_config_key_with_the_valid_ones(key, value, choices):
    message = refusal(bundle="m", inputs=["x"], **{key: value})
    # argparse quotes the choices with repr up to 3.11 and may print them bare later: either, in this order
    listed = ", ".join(f"'?{re.escape(c)}'?" for c in choices)
    assert re.fullmatch(rf"{key}: invalid choice: '{value}' \(choose from {listed}\)", message), message


def test_the_parser_names_the_missing_positionals_as_config_keys():
    parser = _Parser(prog="predict.py", add_help=False)
    add_arguments(parser)
    with pytest.raises(PredictConfigError) as err:
        parser.parse_args([])
    assert str(err.value) == "bundle and inputs are required"
    with pytest.raises(PredictConfigError) as err:
        parser.parse_args(["m", "x", "--endpoint-url"])
    assert str(err.value) == "endpoint_url: expected one argument"


def test_values_and_paths_starting_with_a_dash_are_values_not_flags(capsys):
    """``inputs=[-h]`` is a file called ``-h``: argparse's help and exit status 0 would read as a finished job
    that predicted nothing, and ``output=-p.csv`` would be "expected one argument"."""
    got = args_of(bundle="--m", inputs=["-h", "--y"], output="-p.csv")
    assert (got["model"], got["inputs"], got["output"]) == ("--m", ["-h", "--y"], "-p.csv")
    assert "usage:" not in capsys.readouterr().out


def test_an_error_about_an_option_with_a_short_flag_is_named_by_its_config_key():
    with pytest.raises(PredictConfigError, match=r"^output: expected one argument$"):
        _Parser(prog="predict.py").error("argument -o/--output: expected one argument")


def test_job_summary_keeps_the_small_keys_in_order_and_adds_none():
    summary = {"bad": [{"name": "x.jpg", "reason": "no image"}], "warning": "w", "csv": "s3://b/p.csv", "model": "m",
               "images": 3, "predicted": 2, "bad_count": 1, "summary_json": "s3://b/p.summary.json",
               "metrics": {"n": 2, "acc": 0.5}}
    got = job_summary(summary)
    assert list(got) == list(SUMMARY_KEYS)
    assert got == {"model": "m", "images": 3, "predicted": 2, "bad_count": 1, "csv": "s3://b/p.csv",
                   "summary_json": "s3://b/p.summary.json", "metrics": {"n": 2, "acc": 0.5}}
    assert job_summary({"model": "m", "bad": [], "metrics": None}) == {"model": "m", "metrics": None}
    json.dumps(got)


# -- --ids ------------------------------------------------------------------------------------------------
def test_ids_from_a_text_file_one_a_line(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("00001\n  00002 \r\n\n   \n00001\n00010\t\n")
    assert read_ids(str(path)) == {"00001", "00002", "00010"}  # stripped; blank lines skipped; repeats once


def test_ids_from_a_predictions_csv_take_the_id_column(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("id,true_count,pred_count\n00007,3,3\n00002,1,2\n00007,3,3\n")
    assert read_ids(str(path)) == {"00007", "00002"}
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"pred_count,id\r\n3,00005\r\n1,00009\r\n")
    assert read_ids(str(crlf)) == {"00005", "00009"}  # the column by name, not position


def test_an_empty_ids_file_selects_nothing(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("")
    assert read_ids(str(path)) == set()


def test_a_csv_without_an_id_column_is_refused_naming_its_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("path,pred_count\nimgs/a.jpg,3\n")
    with pytest.raises(DataError) as err:
        read_ids(str(path))
    assert str(err.value) == f"--ids {path}: a CSV needs an 'id' column, got ['path', 'pred_count']"


# -- s3:// inputs -----------------------------------------------------------------------------------------
COUNTS = (2, 0, 5)  # bins 00001..00003
PHOTOS = {"photos/b.png": b"png-b", "photos/A.jpg": b"jpg-A", "photos/c.JPEG": b"jpeg-c", "photos/notes.txt": b"n",
          "photos/sub/d.jpg": b"nested", "deep/er/x.webp": b"webp-x", "imgs-only/bin-images/00004.jpg": b"j4",
          "imgs-only/bin-images/00003.jpg": b"j3", "batch-X/y.gif": b"gif-y"}


@pytest.fixture(autouse=True)
def _no_default_endpoint(monkeypatch):
    """A store that lost its ``s3`` settings fails at once here, instead of calling AWS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not-an-endpoint")


@pytest.fixture(scope="module")
def bucket(s3_endpoint, tmp_path_factory):  # noqa: F811
    """``pu-data``: an ABID root under ``abid/``, loose images, and one ABID root at a bucket's root
    (``pu-root``), one in a bucket named like an image (``pu-bins.jpg``), loose images at ``pu-loose``'s root;
    ``pu-out`` empty, for uploads."""
    local = write_abid(tmp_path_factory.mktemp("pu_abid"), COUNTS)
    client = s3_client(s3_endpoint)
    for name in ("pu-data", "pu-root", "pu-bins.jpg", "pu-loose", "pu-out"):
        client.create_bucket(Bucket=name)
    upload_abid(s3_endpoint, "pu-data", local, prefix="abid")
    upload_abid(s3_endpoint, "pu-root", local)
    upload_abid(s3_endpoint, "pu-bins.jpg", local)
    for key, body in PHOTOS.items():
        client.put_object(Bucket="pu-data", Key=key, Body=body)
    client.put_object(Bucket="pu-loose", Key="a.jpg", Body=b"loose-a")
    return {"s3": {"endpoint_url": s3_endpoint}, "local": local, "client": client}


def described(items) -> list[tuple]:
    return [(i.name, i.key, i.reader.url(), i.true_count, i.abid) for i in items]


@pytest.mark.parametrize("url", ["s3://pu-data/abid", "s3://pu-data/abid/"])
def test_an_abid_prefix_gives_its_ids_with_true_counts(bucket, url):
    items = _s3_items(url, None, bucket["s3"])
    assert described(items) == [(f"0000{i}", f"bin-images/0000{i}.jpg", "s3://pu-data/abid", c, True)
                                for i, c in enumerate(COUNTS, start=1)]
    assert items[2].reader(items[2].key) == (bucket["local"] / "bin-images" / "00003.jpg").read_bytes()


def test_ids_select_among_the_abid_bins(bucket):
    items = _s3_items("s3://pu-data/abid", {"00003", "00001", "99999"}, bucket["s3"])
    assert [(i.name, i.true_count) for i in items] == [("00001", 2), ("00003", 5)]


@pytest.mark.parametrize("url", ["s3://pu-root", "s3://pu-bins.jpg"])
def test_an_abid_bucket_root_is_read_even_when_named_like_an_image(bucket, url):
    assert described(_s3_items(url, None, bucket["s3"])) == [
        (f"0000{i}", f"bin-images/0000{i}.jpg", url, c, True) for i, c in enumerate(COUNTS, start=1)]


def test_bin_images_without_metadata_are_abid_without_true_counts(bucket):
    assert described(_s3_items("s3://pu-data/imgs-only", None, bucket["s3"])) == [
        ("00003", "bin-images/00003.jpg", "s3://pu-data/imgs-only", None, True),
        ("00004", "bin-images/00004.jpg", "s3://pu-data/imgs-only", None, True)]


@pytest.mark.parametrize("url", ["s3://pu-data/photos", "s3://pu-data/photos/"])
def test_a_plain_prefix_gives_its_images_sorted_not_other_files_nor_subfolders(bucket, url):
    items = _s3_items(url, None, bucket["s3"])
    assert described(items) == [
        ("s3://pu-data/photos/A.jpg", "photos/A.jpg", "s3://pu-data", None, False),
        ("s3://pu-data/photos/b.png", "photos/b.png", "s3://pu-data", None, False),
        ("s3://pu-data/photos/c.JPEG", "photos/c.JPEG", "s3://pu-data", None, False)]
    assert [i.reader(i.key) for i in items] == [b"jpg-A", b"png-b", b"jpeg-c"]


@pytest.mark.parametrize("url, parent, key, body", [
    ("s3://pu-data/deep/er", "s3://pu-data/deep", "er/x.webp", b"webp-x"),
    ("s3://pu-data/batch-X/", "s3://pu-data", "batch-X/y.gif", b"gif-y"),  # only slashes are stripped
])
def test_a_prefix_is_listed_from_its_own_parent(bucket, url, parent, key, body):
    items = _s3_items(url, None, bucket["s3"])
    assert described(items) == [(f"{parent}/{key}", key, parent, None, False)]
    assert items[0].reader(items[0].key) == body


@pytest.mark.parametrize("url, parent, key, body", [
    ("s3://pu-data/photos/b.png", "s3://pu-data/photos", "b.png", b"png-b"),
    ("s3://pu-data/photos/A.jpg", "s3://pu-data/photos", "A.jpg", b"jpg-A"),
    ("s3://pu-loose/a.jpg", "s3://pu-loose", "a.jpg", b"loose-a"),
])
def test_one_image_object_is_one_item_named_by_its_url(bucket, url, parent, key, body):
    items = _s3_items(url, None, bucket["s3"])
    assert described(items) == [(url, key, parent, None, False)]
    assert items[0].reader(items[0].key) == body


def test_an_empty_prefix_gives_nothing_and_collect_says_so(bucket):
    assert _s3_items("s3://pu-data/nothing-here", None, bucket["s3"]) == []
    with pytest.raises(DataError, match=r"^no images found in \['s3://pu-data/nothing-here'\]; image suffixes"):
        collect(["s3://pu-data/nothing-here"], s3=bucket["s3"])


@pytest.mark.parametrize("url", ["s3://pu-loose", "s3://pu-loose/"])
def test_a_bucket_root_that_is_not_abid_is_refused_naming_the_layout(bucket, url):
    with pytest.raises(DataError) as err:
        _s3_items(url, None, bucket["s3"])
    assert str(err.value) == f"input {url}: a bucket root must be in the ABID layout (bin-images/ and metadata/)"


def test_collect_keeps_the_order_of_s3_inputs(bucket):
    items = collect(["s3://pu-loose/a.jpg", "s3://pu-data/abid"], ids={"00002"}, s3=bucket["s3"])
    assert [i.name for i in items] == ["s3://pu-loose/a.jpg", "00002"]


# -- an s3:// output --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, expected", [
    ("s3://pu-out/run1/p.csv", ("s3://pu-out/run1", "p.csv")),
    ("s3://pu-out/a/b/predictions.csv", ("s3://pu-out/a/b", "predictions.csv")),
    ("s3://pu-out/p.csv", ("s3://pu-out", "p.csv")),
    ("s3://pu-out/run1/p.csv/", ("s3://pu-out/run1", "p.csv")),
    ("s3://pu-out/run1/P.CSV", ("s3://pu-out/run1", "P.CSV")),  # the key keeps its case
])
def test_s3_output_splits_the_prefix_from_the_csv_name(url, expected):
    assert s3_output(url) == expected


@pytest.mark.parametrize("url", ["s3://pu-out", "s3://pu-out/", "s3://p.csv", "s3://pu-out/run1/p.txt",
                                 "s3://pu-out/run1/", "s3://pu-out/run1/p.csvX"])
def test_an_s3_output_that_is_not_a_csv_key_is_refused_with_an_example(url):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        s3_output(url)
    assert str(err.value) == f"-o {url}: an S3 output is a CSV key, e.g. s3://bucket/out/predictions.csv"


@pytest.mark.parametrize("url, reason", [
    ("s3://pu-out/../p.csv", "'s3://pu-out/..': the prefix '..' has empty, '.' or '..' parts"),
    ("s3:///p.csv", "'s3://' has no valid bucket name; expected s3://BUCKET[/PREFIX]"),
])
def test_an_s3_output_with_a_bad_bucket_or_prefix_is_refused_naming_it(url, reason):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        s3_output(url)
    assert str(err.value) == f"-o {url}: {reason}"


def scratch(tmp_path: Path) -> tuple[Path, Path]:
    """What ``predict`` leaves before uploading: the CSV and its summary in a scratch folder of their own."""
    folder = tmp_path / "bincount-predict-scratch"
    folder.mkdir()
    csv_path, summary = folder / "p.csv", folder / "p.summary.json"
    csv_path.write_text("id,pred_count\n00001,2\n")
    summary.write_text('{"predicted": 1}\n')
    return csv_path, summary


def keys_under(client, bucket_name: str, prefix: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket_name, Prefix=prefix).get("Contents", [])]


def test_upload_puts_both_files_beside_each_other_and_removes_the_scratch_folder(bucket, tmp_path):
    client = bucket["client"]
    csv_path, summary = scratch(tmp_path)
    upload(csv_path, summary, "s3://pu-out/runs/r1/p.csv", bucket["s3"])
    assert keys_under(client, "pu-out", "runs/") == ["runs/r1/p.csv", "runs/r1/p.summary.json"]
    assert client.get_object(Bucket="pu-out", Key="runs/r1/p.csv")["Body"].read() == b"id,pred_count\n00001,2\n"
    assert client.get_object(Bucket="pu-out", Key="runs/r1/p.summary.json")["Body"].read() == b'{"predicted": 1}\n'
    assert not csv_path.parent.exists()


def test_a_scratch_folder_that_cannot_be_removed_does_not_fail_a_finished_upload(bucket, tmp_path):
    csv_path, summary = scratch(tmp_path)
    link = tmp_path / "scratch-link"  # rmtree refuses a symlink: the clean-up fails, the upload went through
    link.symlink_to(csv_path.parent, target_is_directory=True)
    upload(link / csv_path.name, link / summary.name, "s3://pu-out/kept/p.csv", bucket["s3"])
    assert keys_under(bucket["client"], "pu-out", "kept/") == ["kept/p.csv", "kept/p.summary.json"]
    assert csv_path.exists()


def test_a_failed_upload_names_the_url_and_keeps_the_local_files(bucket, tmp_path):
    csv_path, summary = scratch(tmp_path)
    url = "s3://pu-no-such-bucket/r1/p.csv"
    with pytest.raises(OSError) as err:
        upload(csv_path, summary, url, bucket["s3"])
    message = str(err.value)
    assert message.startswith(f"could not upload the predictions to {url} (s3://pu-no-such-bucket/r1/p.csv: ")
    assert "NoSuchBucket" in message and message.endswith(f"); they are kept in {csv_path.parent}")
    assert csv_path.read_text() == "id,pred_count\n00001,2\n" and summary.exists()


def test_upload_refuses_a_key_that_is_not_a_csv_before_writing(bucket, tmp_path):
    csv_path, summary = scratch(tmp_path)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^-o s3://pu-data/out/p\.txt: an S3 output is a CSV key"):
        upload(csv_path, summary, "s3://pu-data/out/p.txt", bucket["s3"])
    assert keys_under(bucket["client"], "pu-data", "out/") == [] and csv_path.exists()


def test_the_help_says_every_option_its_value_name_and_default(capsys, monkeypatch):
    """``bincount predict --help`` is the reference a user reads: its whole text, at 100 columns."""
    from bincount import cli

    monkeypatch.setenv("COLUMNS", "100")
    assert cli.main(["predict", "--help"]) == 0
    assert capsys.readouterr().out == HELP


HELP = '''\
usage: bincount predict [-h] [-o CSV] [--batch-size N] [--num-workers N]
                        [--accelerator {auto,cpu,gpu,cuda,mps}]
                        [--precision {32-true,16-mixed,bf16-mixed,16-true,bf16-true,64-true}]
                        [--bad-input {skip,fail}] [--max-pixels N] [--ids FILE]
                        [--endpoint-url URL] [--no-progress]
                        MODEL INPUT [INPUT ...]

predict counts with a model bundle for images, folders, ABID roots or s3://

positional arguments:
  MODEL                 a bundle dir, a run dir, a model.tar.gz, or an s3:// URI of one
  INPUT                 image files, folders (recursive), ABID roots (bin-images/ + metadata/),
                        s3:// prefixes

options:
  -h, --help            show this help message and exit
  -o CSV, --output CSV  the CSV, or s3://bucket/prefix/name.csv (default: predictions.csv)
  --batch-size N        images per batch (default: 32)
  --num-workers N       loader processes (default: 2)
  --accelerator {auto,cpu,gpu,cuda,mps}
                        Lightning accelerator (default: auto)
  --precision {32-true,16-mixed,bf16-mixed,16-true,bf16-true,64-true}
                        Lightning precision (default: 32-true)
  --bad-input {skip,fail}
                        skip: list bad files and go on; fail: stop at the first (exit 1)
  --max-pixels N        refuse larger images (default: the bundle's)
  --ids FILE            only these ids of ABID inputs: one a line, or a CSV with an id column
  --endpoint-url URL    S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3)
  --no-progress         no progress bar
'''
