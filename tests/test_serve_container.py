"""The image's entry (``python -m bincount.serve.container serve``): what it serves, where, with which limits.

SageMaker runs ``docker run IMAGE serve`` with the model in /opt/ml/model (``$SM_MODEL_DIR``), the port in
``$SAGEMAKER_BIND_TO_PORT`` and, for batch transform, the body limit in ``$SAGEMAKER_MAX_PAYLOAD_IN_MB``. The
serving itself is ``bincount serve`` (tested on its own); here, the command line the entry hands it.
"""

from __future__ import annotations

import pytest

import bincount.cli
from bincount.bundle import BUNDLE_FILE
from bincount.serve.container import main, model_source

ENV = ("SM_MODEL_DIR", "SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_MAX_PAYLOAD_IN_MB")


@pytest.fixture
def handed(monkeypatch):
    """The argv the entry passes to ``bincount``'s CLI (which would start a server)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(bincount.cli, "main", lambda argv: calls.append(argv) or 0)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return calls


def test_sagemakers_defaults_serve_opt_ml_model_on_every_interface_at_8080(handed):
    assert main(["serve"]) == 0
    assert handed == [["serve", "/opt/ml/model", "--host", "0.0.0.0", "--port", "8080"]]


def test_the_environment_sets_the_model_dir_the_port_and_the_body_limit(handed, monkeypatch, tmp_path):
    (tmp_path / BUNDLE_FILE).write_text("{}")
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6")
    assert main([]) == 0
    assert handed[-1] == ["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "9090",
                          "--max-body-bytes", str(6 * 1024 * 1024)]
    main(["serve", "--max-body-bytes", "1000", "--max-queue", "8"])  # the user's own limit wins
    assert handed[-1][-4:] == ["--max-body-bytes", "1000", "--max-queue", "8"]
    assert handed[-1].count("--max-body-bytes") == 1
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots")  # not a number: no limit from it
    main(["--model-dir", str(tmp_path / "elsewhere"), "--port", "7000", "--host", "127.0.0.1"])
    assert handed[-1] == ["serve", str(tmp_path / "elsewhere"), "--host", "127.0.0.1", "--port", "7000"]


def test_the_model_is_the_bundle_dir_or_the_archive_in_it(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / BUNDLE_FILE).write_text("{}")
    (bundle / "model.tar.gz").write_bytes(b"")
    assert model_source(bundle) == bundle, "an unpacked bundle wins over an archive beside it"
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / BUNDLE_FILE).write_text("{}")
    assert model_source(run) == run
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("b.tar.gz", "a.tar.gz", "notes.txt"):
        (packed / name).write_bytes(b"")
    assert model_source(packed) == packed / "a.tar.gz"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert model_source(empty) == empty and model_source(tmp_path / "missing") == tmp_path / "missing"


def test_any_command_but_serve_is_refused_naming_the_choice_and_help_says_what_it_is(handed, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train"])
    assert stop.value.code == 2 and handed == []
    assert "argument command: invalid choice: 'train' (choose from 'serve')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: bincount.serve.container [-h]") and "[{serve}]" in help_text
    assert "{serve}" in help_text and "what SageMaker passes" in help_text.split("{serve}", 2)[2]
    assert "The image's entry point" in help_text
