"""The sweep's HMAC key (issue 24 item 1): where it lives and when it is refused (bincount.sagemaker.results)."""

from __future__ import annotations

import hashlib
import os

import pytest

from bincount.sagemaker.results import key_path, result_key
from bincount.sagemaker.spec import OutputRefused


def test_the_key_lives_in_the_users_state_directory_named_by_the_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "logs" / "sweep"
    digest = hashlib.sha256(str(sweep.resolve()).encode()).hexdigest()[:32]
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert key_path(sweep) == tmp_path / "state" / "bincount" / "result-keys" / f"{digest}.key"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert key_path(sweep) == tmp_path / "home" / ".local" / "state" / "bincount" / "result-keys" / f"{digest}.key"
    assert key_path(tmp_path / "other") != key_path(sweep), "one key per sweep"


def test_a_state_directory_inside_the_sweep_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "sweep" / "state"))
    with pytest.raises(OutputRefused, match=r"the sweep's result key would live under the sweep directory .*sweep "
                                            r"\(XDG_STATE_HOME=.*\), where job outputs are written"):
        key_path(tmp_path / "sweep")


def test_the_key_is_made_once_0600_in_a_0700_directory_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    key = result_key(tmp_path / "sweep")
    path = key_path(tmp_path / "sweep")
    assert len(key) == 32 and path.read_text() == key.hex()
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert result_key(tmp_path / "sweep") == key
    assert result_key(tmp_path / "other") != key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_others_can_read_or_write_is_refused(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result_key(tmp_path / "sweep")
    path = key_path(tmp_path / "sweep")
    os.chmod(path, mode)
    with pytest.raises(OutputRefused, match=rf"refusing the result key {path}: it must be a regular file of yours "
                                            rf"with mode 0600 \(it is {oct(mode)}\); delete it to make a new one"):
        result_key(tmp_path / "sweep")


def test_a_key_path_that_is_a_link_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = key_path(tmp_path / "sweep")
    path.parent.mkdir(parents=True)
    attacker = tmp_path / "attacker.key"
    attacker.write_text("ab" * 32)
    os.chmod(attacker, 0o600)
    path.symlink_to(attacker)
    with pytest.raises(OutputRefused, match="must be a regular file of yours"):
        result_key(tmp_path / "sweep")
