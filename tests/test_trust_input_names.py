"""Errors about a bad image name the input, never a heap address (issue 24, item 11).

PIL says ``cannot identify image file <_io.BytesIO object at 0x7f...>`` about bytes it cannot read; that
reached users as is. The decode reason now says what failed, and each caller names the input: the file,
``image 3``, the request's ``instances[1]``.
"""

from __future__ import annotations

import io

import pytest
from conftest import write_tiny_bundle

from bincount.bundle import load_model
from bincount.samples import BadImage, check_image_header, decode_image_bytes

NOT_AN_IMAGE = b"GIF89a but nothing after it" + bytes(40)
TEXT = b"hello, this is not an image at all"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_tiny_bundle(tmp_path_factory.mktemp("names") / "model"))


@pytest.mark.parametrize("check", [decode_image_bytes, check_image_header])
@pytest.mark.parametrize("data", [NOT_AN_IMAGE, TEXT])
def test_the_decode_reason_has_no_object_repr(check, data):
    with pytest.raises(BadImage) as err:
        check(data)
    message = str(err.value)
    assert " at 0x" not in message and "BytesIO" not in message
    assert "UnidentifiedImageError: cannot identify image file the image bytes" in message


def test_predict_names_each_bad_input(model, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(TEXT)
    with open(path, "rb") as f:
        cases = [(TEXT, "image 0 (34 bytes): "), (io.BytesIO(TEXT), "image 0 (BytesIO): "),
                 (path, f"image 0 ({path}): "), (str(path), f"image 0 ({path}): "), (f, f"image 0 ({path}): ")]
        for image, name in cases:
            with pytest.raises(BadImage) as err:
                model.predict([image])
            message = str(err.value)
            assert message.startswith(name) and "cannot decode (UnidentifiedImageError" in message, message
            assert " at 0x" not in message
    with pytest.raises(BadImage, match=r"^image 1 \(34 bytes\): "):  # the bad one of several, by position
        model.predict([_png(), TEXT])
    with pytest.raises(TypeError, match=r"^image 0 \(image\): expected bytes, a path, .* got list$"):
        model.predict([[1, 2, 3]])
    with pytest.raises(BadImage, match=r"^request body: "):
        model.preprocess(io.BytesIO(TEXT), name="request body")


def test_a_good_image_from_a_file_object_predicts(model):
    out = model.predict([io.BytesIO(_png())])
    assert out["pred_count"].shape == (1,)


def test_the_server_names_the_instance(model):
    from bincount.serve.inputs import ServeError, decode

    with pytest.raises(ServeError) as err:
        decode(TEXT, model.max_pixels, "instances[1]")
    assert err.value.status == 400 and " at 0x" not in err.value.message
    assert err.value.message.startswith("instances[1]: cannot decode (UnidentifiedImageError: ")


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()
