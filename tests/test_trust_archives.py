"""Archives from buckets (issue 24 items 1-4): a job's output.tar.gz and a bundle's model.tar.gz.

Each attack is built as an attacker with write access to the output prefix would build it. The archives
are real tar files; the S3 side is moto_server on loopback (tests/s3_server.py through the ``aws`` fixture).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import boto3
import pytest
import helpers.sagemaker
from helpers.sagemaker import APP, BUCKET, REMOTE


def cve_2025_4517(dest: Path) -> bytes:
    """The archive shape of CVE-2025-4517: directory symlinks whose expansion passes PATH_MAX, so the ``data``
    filter's realpath check sees a path inside ``dest``; ``escape/newfile`` then lands in ``dest``'s parent."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(dest.parent, "PC_PATH_MAX") - len(str(dest)) - 1) // (len(steps) + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, link="", data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o777
            tar.addfile(info, io.BytesIO(data))

        path = ""
        for step in steps:
            add(os.path.join(path, component), tarfile.DIRTYPE)
            add(os.path.join(path, step), tarfile.SYMTYPE, component)
            path = os.path.join(path, component)
        top = os.path.join(*steps, "l" * 254)
        add(top, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add("escape", tarfile.SYMTYPE, os.path.join(top, ".."))
        add("escape/newfile", data=b"written outside")
    return buf.getvalue()


def test_the_cve_archive_gets_past_tarfiles_own_filter_on_this_python(tmp_path):
    """The control: on this Python the archive is live against ``filter="data"`` alone (fixed in 3.11.13)."""
    dest = tmp_path / "job"
    dest.mkdir()
    try:
        with tarfile.open(fileobj=io.BytesIO(cve_2025_4517(dest))) as tar:
            tar.extractall(dest, filter="data")
        escaped = (tmp_path / "newfile").exists()
    except (OSError, tarfile.TarError):
        escaped = False
    if sys.version_info[:3] < (3, 11, 13):
        assert escaped, "the CVE archive no longer escapes the data filter here; keep our check, fix this control"


def test_a_job_output_shaped_like_the_cve_is_refused_and_writes_nothing(aws, tmp_path):
    from bincount.sagemaker.remote import download_output
    from bincount.sagemaker.spec import OutputRefused

    dest = tmp_path / "sweep" / "0"
    boto3.client("s3").put_object(Bucket=BUCKET, Key="j/output.tar.gz", Body=cve_2025_4517(dest))
    with pytest.raises(OutputRefused, match=r"s3://bincount-test/j/output.tar.gz: member 'a' is a symlink; only "
                                            r"regular files and directories are extracted; refusing the archive"):
        download_output(boto3.client("s3"), BUCKET, "j/output.tar.gz", dest, 2**30)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], "nothing written, inside or outside"


def test_a_bundle_archive_shaped_like_the_cve_is_refused(tmp_path):
    from bincount.bundle.archive import extract_bundle
    from bincount.bundle.format import BundleError

    dest = tmp_path / "x" / "bundle"
    (tmp_path / "model.tar.gz").write_bytes(cve_2025_4517(dest))
    with pytest.raises(BundleError, match="member 'a' is a symlink"):
        extract_bundle(tmp_path / "model.tar.gz", dest)
    assert not (tmp_path / "x").exists()


def archive(*members: tuple[str, str, bytes | str], fmt=tarfile.PAX_FORMAT) -> bytes:
    """(name, kind, data or link target) -> a .tar.gz. kinds: file, dir, sym, hard, chr, fifo."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            data = extra.encode() if isinstance(extra, str) and kind == "file" else extra
            if kind in ("sym", "hard"):
                info.linkname = extra
                data = b""
            info.size = len(data) if kind == "file" else 0
            tar.addfile(info, io.BytesIO(data if kind == "file" else b""))
    return buf.getvalue()


OK = ("result.json", "file", "{}")


@pytest.mark.parametrize("members,reason", [
    ([OK, ("link", "sym", "/etc")], "member 'link' is a symlink"),
    ([OK, ("hard", "hard", "result.json")], "member 'hard' is a hardlink"),
    ([OK, ("tty", "chr", b"")], "member 'tty' is a device"),
    ([OK, ("pipe", "fifo", b"")], "member 'pipe' is a FIFO"),
    ([OK, ("/tmp/abs.txt", "file", "x")], "member '/tmp/abs.txt': an absolute name"),
    ([OK, ("a/../../up.txt", "file", "x")], "member 'a/../../up.txt': a '..' component"),
    ([OK, ("./result.json", "file", "again")], "member './result.json' appears twice"),
    ([OK, ("d/" + "n" * 300, "file", "x")], "a path part longer than 255 bytes"),
    ([OK, ("/".join(["p" * 200] * 6), "file", "x")], "characters (the limit is 1024 bytes)"),
    ([OK, ("bad\x1b[2Jname", "file", "x")], "an empty name or one with a control character"),
    ([OK, (".", "file", "x")], "member '.': a file without a name"),
])
def test_unsafe_members_refuse_the_whole_archive_before_anything_is_written(members, reason, tmp_path):
    from bincount.untrusted_tar import UnsafeArchive, extract

    with pytest.raises(UnsafeArchive, match=rf"^out.tar.gz: .*{__import__('re').escape(reason)}.*; refusing the archive$"):
        extract(io.BytesIO(archive(*members)), tmp_path / "dest", "out.tar.gz")
    assert not (tmp_path / "dest").exists()
    assert sorted(tmp_path.rglob("*")) == []


def test_member_count_and_total_size_are_capped(tmp_path):
    from bincount.untrusted_tar import Limits, UnsafeArchive, extract

    many = archive(*[(f"f{i}", "file", "x") for i in range(6)])
    with pytest.raises(UnsafeArchive, match="more than 5 members"):
        extract(io.BytesIO(many), tmp_path / "a", "many", Limits(max_members=5))
    assert extract(io.BytesIO(many), tmp_path / "b", "many", Limits(max_members=6))[-1].name == "f5"
    big = archive(("a", "file", "x" * 600), ("b", "file", "y" * 500))
    with pytest.raises(UnsafeArchive, match="members add up to more than 1,000 bytes"):
        extract(io.BytesIO(big), tmp_path / "c", "big", Limits(max_bytes=1000))
    assert not (tmp_path / "c").exists()
    extract(io.BytesIO(big), tmp_path / "d", "big", Limits(max_bytes=1100))
    assert (tmp_path / "d" / "b").read_text() == "y" * 500


def test_regular_files_and_directories_are_written_and_links_planted_in_the_target_are_not_followed(tmp_path):
    from bincount.untrusted_tar import UnsafeArchive, extract

    dest = tmp_path / "dest"
    written = extract(io.BytesIO(archive(("d", "dir", b""), ("d/e/f.txt", "file", "deep"), OK)), dest, "ok")
    assert [str(p) for p in written] == ["d/e/f.txt", "result.json"]
    assert (dest / "d/e/f.txt").read_text() == "deep" and (dest / "d/e/f.txt").stat().st_mode & 0o7777 == 0o644
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (dest / "planted").symlink_to(outside)  # something else left a link where a file goes
    with pytest.raises(UnsafeArchive, match="cannot write .*planted"):
        extract(io.BytesIO(archive(("planted", "file", "overwrite"))), dest, "x")
    (dest / "linkdir").symlink_to(tmp_path)
    with pytest.raises(UnsafeArchive, match="linkdir exists and is not a directory"):
        extract(io.BytesIO(archive(("linkdir/outside.txt", "file", "overwrite"))), dest, "x")
    assert outside.read_text() == "keep"


def header_bomb(kind: bytes, size: int) -> bytes:
    """A gzip of a tar whose first header (GNU long name 'L' or PAX 'x') declares ``size`` bytes of payload."""
    def header(name: bytes, typeflag: bytes, length: int) -> bytes:
        block = bytearray(512)
        block[0:len(name)] = name
        block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
        block[124:136] = b"%011o\0" % length
        block[136:148] = b"00000000000\0"
        block[156:157] = typeflag
        block[257:265] = b"ustar  \0"
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
        return bytes(block)

    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(header(b"././@LongLink", kind, size))]
    chunk = b"a" * (1 << 20)
    for _ in range(size // len(chunk)):
        out.append(z.compress(chunk))
    out.append(z.compress(header(b"x", b"0", 0) + bytes(1024)))
    return b"".join(out) + z.flush()


@pytest.mark.slow
@pytest.mark.parametrize("kind,size,name", [(b"L", 1 << 30, "GNU long-name"), (b"x", 256 << 20, "PAX")])
def test_a_header_bomb_is_refused_before_its_payload_is_read(kind, size, name, tmp_path):
    """A 1 GiB long-name header costs 1 GiB if read: the cap must come first (peak memory measured)."""
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(header_bomb(kind, size))
    assert bomb.stat().st_size < 2 << 20
    probe = ("import resource, sys\nfrom bincount.untrusted_tar import UnsafeArchive, extract\n"
             "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\nbefore = peak()\n"
             "try:\n    extract(open(sys.argv[1], 'rb'), sys.argv[2], 'bomb')\nexcept UnsafeArchive as e:\n    print(e)\n"
             "print(peak() - before)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(bomb), str(tmp_path / "d")], capture_output=True,
                         text=True, timeout=120).stdout.splitlines()
    assert out[0] == f"bomb: a {name} header of {size:,} bytes (the limit is 65,536); refusing the archive"
    assert int(out[1]) < 50, f"peak +{out[1]} MB: the header was read before the cap"


def test_the_bundle_loader_refuses_a_header_bomb_too(tmp_path):
    from bincount.bundle.archive import extract_bundle
    from bincount.bundle.format import BundleError

    (tmp_path / "model.tar.gz").write_bytes(header_bomb(b"L", 8 << 20))
    with pytest.raises(BundleError, match="a GNU long-name header of 8,388,608 bytes"):
        extract_bundle(tmp_path / "model.tar.gz", tmp_path / "b")


# --- item 2: one bad output fails that job only ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("bad,reason", [
    (b"this is not a gzip file at all", r"output.tar.gz is not a readable tar archive \(ReadError"),
    (archive(OK, ("d/" + "n" * 120, "dir", b""), ("d/" + "n" * 120, "file", "x"), fmt=tarfile.GNU_FORMAT),
     r"appears twice"),
])
def test_one_bad_output_fails_that_job_and_the_others_go_on(bad, reason, fake_sagemaker, hydra_sweep_runner, tmp_path,
                                                           monkeypatch, caplog):
    good_tarball = helpers.sagemaker.tarball
    monkeypatch.setattr(helpers.sagemaker, "tarball", lambda files: files if isinstance(files, bytes)
                        else good_tarball(files))
    fake_sagemaker.output = lambda req: bad if "-0-" in req["TrainingJobName"] else {
        "result.json": json.dumps({"status": "COMPLETED", "return_value": 1})}
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=str(tmp_path / "sweep"),
                               overrides=[*REMOTE, f"hydra.launcher.source_dir={APP}", "+x=1,2"])
    with caplog.at_level("INFO"), pytest.raises(RuntimeError, match=rf"SageMaker job bincount-0-.* failed: .*{reason}"):
        with sweep:
            pass
    states = {d.name: json.loads((d / "sagemaker_job.json").read_text()) for d in (tmp_path / "sweep").iterdir()
              if (d / "sagemaker_job.json").is_file()}
    assert states["1"]["status"] == "Completed" and states["0"]["status"] == "Failed"
    assert "Launcher error" not in caplog.text and "stopping" not in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("bincount-0-") and "\n" not in errors[0]


# --- item 4: a job's error text reaches the terminal without escape sequences --------------------------

@pytest.mark.slow
def test_a_jobs_error_text_is_stripped_of_terminal_escapes(fake_sagemaker, hydra_sweep_runner, tmp_path, caplog):
    hostile = ("boom \x1b]0;owned\x07\x1b[2J\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ "
               "\u202egnp.exe\u202c done")
    fake_sagemaker.output = lambda req: {"result.json": json.dumps({"status": "FAILED", "error": hostile})}
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=None,
                               config_path="configs", config_name="compose.yaml", temp_dir=str(tmp_path / "sweep"),
                               overrides=[*REMOTE, f"hydra.launcher.source_dir={APP}"])
    with caplog.at_level("INFO"), pytest.raises(RuntimeError) as raised:
        with sweep:
            pass
    shown = str(raised.value) + caplog.text + (tmp_path / "sweep" / "0" / "sagemaker_job.json").read_text()
    assert "boom ]0;owned[2J]8;;http://evil.example" in str(raised.value) and "gnp.exe done" in str(raised.value)
    for bad in ("\x1b", "\x07", "\u202e", "\u202c", "\\u001b", "\\u202e"):
        assert bad not in shown
