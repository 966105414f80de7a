"""``bincount fetch`` through its real command line against ``moto_server`` (an ``aft-vbi-pds`` look-alike)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_server import FAKE_KEY_ID, FAKE_SECRET, public_bucket, s3_client, s3_endpoint, tiny_bucket  # noqa: F401

from conftest import TINY_COUNTS

ROOT = Path(__file__).resolve().parents[1]


def fetch(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bincount.cli", "fetch", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def file_list(path: Path, ids_by_count: dict[int, list[str]]) -> Path:
    path.write_text(json.dumps({str(c): [f"data/metadata/{i}.json" for i in ids] for c, ids in ids_by_count.items()}))
    return path


def report(dest: Path) -> dict:
    return json.loads((dest / ".bincount" / "fetch-report.json").read_text())


@pytest.mark.slow
def test_file_list_fetch_is_resumable_and_reports_missing(public_bucket, tmp_path):
    ids = public_bucket.synthetic_ids[:10]
    listing = file_list(tmp_path / "list.json", {1: ids[:5], 2: ids[5:], 3: ["999999"]})
    dest = tmp_path / "abid"
    src = ["--source", "s3://aft-vbi-pds", "--source-endpoint-url", public_bucket.endpoint]
    first = fetch(str(dest), "--file-list", str(listing), *src)
    assert report(dest)["fetched"] == 20 and report(dest)["missing_upstream"] == ["bin-images/999999.jpg", "metadata/999999.json"]
    assert "missing upstream: 2" in first.stderr
    client = s3_client(public_bucket.endpoint)
    for id_ in ids:
        assert (dest / "bin-images" / f"{id_}.jpg").read_bytes() == client.get_object(
            Bucket="aft-vbi-pds", Key=f"bin-images/{id_}.jpg")["Body"].read()
    damaged = dest / "bin-images" / f"{ids[0]}.jpg"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a partial file from some other tool
    fetch(str(dest), "--file-list", str(listing), *src)
    again = report(dest)
    assert (again.get("fetched", 0), again["skipped"], again["replaced"]) == (0, 19, 1)
    assert damaged.stat().st_size > 100
    assert not list(dest.rglob("*.part"))


@pytest.mark.parametrize("bad", ["data/metadata/../../evil.json", "/etc/metadata/x.json", "data/other/1.json"])
def test_unsafe_list_is_refused_before_any_write(public_bucket, tmp_path, bad):
    listing = file_list(tmp_path / "list.json", {1: public_bucket.synthetic_ids[:2]})
    content = json.loads(listing.read_text())
    content["1"].append(bad)
    listing.write_text(json.dumps(content))
    proc = fetch(str(tmp_path / "abid"), "--file-list", str(listing), "--source-endpoint-url", public_bucket.endpoint, check=1)
    assert bad in proc.stderr
    assert not (tmp_path / "abid").exists()


@pytest.mark.slow
def test_count_range_into_own_bucket_through_faults(tiny_bucket, tmp_path):
    client = s3_client(tiny_bucket.endpoint)
    client.create_bucket(Bucket="mine")
    src = ["--source", tiny_bucket.url, "--source-signed", "--dest-endpoint-url", tiny_bucket.endpoint,
           "--report", str(tmp_path / "report.json")]
    with FaultProxy(tiny_bucket.endpoint, slowdown=0.05, reset=0.03, body_reset=0.03, seed=3) as proxy:
        fetch("s3://mine/abid", "--counts", "0-2", "--source-endpoint-url", proxy.url, *src)
    assert proxy.counts["slowdown"] + proxy.counts["reset"] + proxy.counts["body_reset"] > 0
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="mine", Prefix="abid/")["Contents"]}
    wanted = {i for i, c in zip(tiny_bucket.synthetic_ids, TINY_COUNTS) if c <= 2}
    assert {k for k in keys if k.startswith("abid/bin-images/")} == {f"abid/bin-images/{i}.jpg" for i in wanted}
    assert {k for k in keys if k.startswith("abid/metadata/")} == {f"abid/metadata/{i}.json" for i in tiny_bucket.synthetic_ids}
    second = fetch("s3://mine/abid", "--counts", "0-2", "--source-endpoint-url", tiny_bucket.endpoint, *src)
    assert "fetched 0" in second.stderr and "failed 0" in second.stderr


@pytest.mark.slow
def test_real_sample_subset_of_capstone_list(public_bucket, abid_sample_dir, tmp_path):
    path = abid_sample_dir.parent / "file_list.json"  # the capstone list lies next to the sample
    if not path.exists():
        pytest.skip(f"no capstone file_list.json next to the sample: {path} not present")
    capstone = json.loads(path.read_text())
    sample = set(public_bucket.sample_ids)
    subset = {c: [p for p in paths if Path(p).stem in sample][:3] + [p for p in paths if Path(p).stem not in sample][:1]
              for c, paths in capstone.items()}
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(subset))
    dest = tmp_path / "abid"
    fetch(str(dest), "--file-list", str(listing), "--source-endpoint-url", public_bucket.endpoint)
    got = report(dest)
    assert got["fetched"] == 2 * sum(len(v) - 1 for v in subset.values())
    assert len(got["missing_upstream"]) == 2 * len(subset)
    some = Path(subset["1"][0]).stem
    assert (dest / "bin-images" / f"{some}.jpg").read_bytes() == (abid_sample_dir / "bin-images" / f"{some}.jpg").read_bytes()


@pytest.mark.slow
def test_credentials_never_printed(public_bucket, tmp_path):
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET
    outputs = [
        fetch(str(tmp_path / "a"), "--all", "--max-attempts", "2", "--source", "s3://no-such-bucket", "--source-signed",
              "--source-endpoint-url", public_bucket.endpoint, check=1),
        fetch(str(tmp_path / "b"), "--all", "--source-endpoint-url", "http://127.0.0.1:9", "--max-attempts", "2", check=1),  # nothing listens
        fetch("s3://no-such-dest/x", "--file-list", str(file_list(tmp_path / "l.json", {1: public_bucket.synthetic_ids[:1]})),
              "--source-endpoint-url", public_bucket.endpoint, "--dest-endpoint-url", public_bucket.endpoint,
              "--max-attempts", "2", "--report", str(tmp_path / "r.json"), check=1),
    ]
    for proc in outputs:
        text = proc.stdout + proc.stderr
        assert "error" in text.lower() or "failed" in text.lower()
        assert FAKE_SECRET not in text and FAKE_KEY_ID not in text
    assert "no-such-bucket" in outputs[0].stderr and "127.0.0.1:9" in outputs[1].stderr


@pytest.mark.parametrize("text, expected", [("0-5", (0, 5)), ("3", (3, 3)), ("2-2", (2, 2))])
def test_parse_counts(text, expected):
    from bincount.commands.fetch import parse_counts

    assert parse_counts(text) == expected


@pytest.mark.parametrize("text", ["5-0", "a-b", "-1", "1-x", ""])
def test_parse_counts_refuses(text):
    from argparse import ArgumentTypeError

    from bincount.commands.fetch import parse_counts

    with pytest.raises(ArgumentTypeError, match="--counts"):
        parse_counts(text)
