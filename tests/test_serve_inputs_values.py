"""``bincount serve``'s request handling checked by value: each parser, limit and answer to the exact field.

The pure parts (media types, the body read within its limit, the JSON and its instances, S3 prefixes, image
decoding) are called directly with the exact status, code and message they must give, each limit at its
edge (N allowed, N+1 refused). The app-level parts share one module-scoped server (a bundle whose answer is
known: constant probabilities, a run id in its identity) and restore whatever state a test changes.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers.bundles import write_constant_bundle
from helpers.serve import read_until_closed, running
from PIL import Image
from s3_server import s3_client, s3_endpoint  # noqa: F401
from starlette.exceptions import HTTPException
from starlette.requests import Request

from bincount.serve import inputs
from bincount.serve.admission import DEADLINE_HEADER
from bincount.serve.app import Settings, State, _http_error, _serve_error, _unexpected
from bincount.serve.connections import ConnectionLimits
from bincount.serve.inputs import (
    Instance,
    Limits,
    ServeError,
    check_s3_allowed,
    decode,
    json_depth,
    media_type,
    parse_instances,
    parse_json,
    read_body,
    read_s3,
)
from bincount.serve.invocations import TOO_LATE, error, server_timing

SHAPE = 'expected {"instances": [{"b64": "<base64 image>"} or {"s3": "s3://bucket/key"}, ...]}'
MEDIA_HELP = ('is not accepted; send one image as image/jpeg, image/png, application/x-image, or application/json '
              'with {"instances": [{"b64": ...}, {"s3": ...}]}')
JSON = "application/json"


def refusal(call, *args) -> tuple[int, str, str]:
    """(status, code, message) of the ServeError ``call(*args)`` raises; its str() is the message."""
    with pytest.raises(ServeError) as info:
        call(*args)
    e = info.value
    assert str(e) == e.message
    return e.status, e.code, e.message


def png(size: tuple[int, int] = (10, 10), colour=(30, 90, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 90, 200)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def corrupt_png() -> bytes:
    """A 10x10 PNG whose header is intact (so its size reads) but whose pixel data is damaged."""
    data = bytearray(png())
    start = data.index(b"IDAT") + 4
    for k in range(start, start + 10):
        data[k] ^= 0xFF
    return bytes(data)


def decode_reason(data: bytes, max_pixels: int = 40_000_000) -> str:
    """What bincount.samples' decoder says about ``data`` (the reason inputs.decode must pass on, named)."""
    from bincount.samples import BadImage, decode_image_bytes

    with pytest.raises(BadImage) as info:
        decode_image_bytes(data, max_pixels)
    return str(info.value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- ServeError, Limits --------------------------------------------------------------------------------------
def test_a_serve_error_carries_status_code_and_message():
    e = ServeError(418, "teapot", "short and stout")
    assert (e.status, e.code, e.message, str(e), e.args) == (418, "teapot", "short and stout", "short and stout",
                                                             ("short and stout",))


def test_the_pixel_limit_is_the_bundles_never_above_the_servers():
    limits = Limits(max_pixels=10_000)
    assert limits.pixels(9_999) == 9_999
    assert limits.pixels(10_001) == 10_000
    assert limits.pixels("5000") == 5000  # the bundle's metadata value, whatever its type


# -- media_type ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header,kind", [
    ("image/jpeg", "image/jpeg"),
    ("IMAGE/PNG; q=1", "image/png"),
    (" application/x-image ;x=1", "application/x-image"),
    ("application/json; charset=utf-8; v=2", "application/json"),
    ("Application/JSON", "application/json"),
])
def test_media_type_is_the_lower_case_type_without_parameters(header, kind):
    assert media_type(header) == kind


@pytest.mark.parametrize("header,shown", [
    (None, "none"),
    ("", "none"),
    ("text/plain", "'text/plain'"),
    ("image/gif; q=1", "'image/gif; q=1'"),
    ("image/jpeg,image/png", "'image/jpeg,image/png'"),
])
def test_an_unsupported_media_type_is_a_415_naming_it_and_the_choices(header, shown):
    assert refusal(media_type, header) == (415, "unsupported_media_type", f"Content-Type {shown} {MEDIA_HELP}")


# -- read_body ----------------------------------------------------------------------------------------------
def read(parts: list[bytes], length: str | None, limit: int) -> tuple[bytes | tuple, int]:
    """(the body, or (status, code, message) when refused; how many chunks were taken from the stream)."""
    taken: list[bytes] = []

    async def chunks():
        for part in parts:
            taken.append(part)
            yield part

    try:
        return asyncio.run(read_body(chunks(), length, limit)), len(taken)
    except ServeError as e:
        return (e.status, e.code, e.message), len(taken)


def test_a_body_of_exactly_the_limit_is_read_whole():
    assert read([b"ab", b"cd"], None, 4) == (b"abcd", 2)
    assert read([b"abcd"], "4", 4) == (b"abcd", 1)
    assert read([b"a", b"b", b"c"], "3", 3) == (b"abc", 3)


def test_a_streamed_body_one_byte_past_the_limit_is_refused_where_it_passes():
    assert read([b"ab", b"cd", b"ef"], None, 3) == (
        (413, "payload_too_large", "the body passed the limit of 3 bytes (--max-body-bytes) while streaming; "
                                   "reading stopped there"), 2)
    assert read([b"x" * 600, b"x" * 400, b"x", b"x"], None, 1000) == (
        (413, "payload_too_large", "the body passed the limit of 1,000 bytes (--max-body-bytes) while streaming; "
                                   "reading stopped there"), 3)


def test_a_declared_length_above_the_limit_is_refused_before_reading():
    assert read([b"x"], "6291457", 6_291_456) == (
        (413, "payload_too_large", "the body declares 6,291,457 bytes, above the limit of 6,291,456 "
                                   "(--max-body-bytes); nothing was read"), 0)


def test_a_content_length_that_is_not_a_number_is_a_400():
    assert read([b"x"], "12a", 100) == ((400, "bad_request", "Content-Length '12a' is not a number"), 0)


@pytest.mark.parametrize("parts,length", [([], None), ([b""], "0"), ([b"", b""], None)])
def test_an_empty_body_is_a_400(parts, length):
    assert read(parts, length, 10) == ((400, "empty_body", "the body is empty; send an image or a JSON document"),
                                       len(parts))


# -- parse_instances ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", inputs.IMAGE_TYPES)
def test_an_image_body_is_one_instance_not_several(kind):
    assert parse_instances(kind, b"\xff\xd8 raw", 1) == ([Instance(data=b"\xff\xd8 raw")], False)


def test_json_instances_decode_b64_and_keep_s3_uris_in_order():
    body = json.dumps({"instances": [{"b64": "AAEC"}, {"s3": "s3://b/k.jpg"}, {"b64": b64(b"hello")}]}).encode()
    assert parse_instances(JSON, body, 3) == (
        [Instance(data=b"\x00\x01\x02"), Instance(s3="s3://b/k.jpg"), Instance(data=b"hello")], True)


def test_one_json_instance_is_still_several():
    assert parse_instances(JSON, b'{"instances": [{"b64": "AA=="}]}', 1) == ([Instance(data=b"\x00")], True)


def test_max_instances_allowed_and_one_more_refused():
    two = json.dumps({"instances": [{"b64": "AA=="}] * 2}).encode()
    assert parse_instances(JSON, two, 2) == ([Instance(data=b"\x00")] * 2, True)
    three = json.dumps({"instances": [{"b64": "AA=="}] * 3}).encode()
    assert refusal(parse_instances, JSON, three, 2) == (
        413, "too_many_instances", "3 instances, above the limit of 2 (--max-instances); split the request")


@pytest.mark.parametrize("body,kind", [(b"[1, 2]", "list"), (b'{"x": 1}', "dict"), (b'{"instances": {}}', "dict"),
                                       (b'"instances"', "str"), (b"null", "NoneType"), (b"7", "int")])
def test_a_document_without_an_instances_list_is_a_400_naming_its_type(body, kind):
    assert refusal(parse_instances, JSON, body, 8) == (
        400, "bad_shape", f"got a JSON {kind} without an 'instances' list; {SHAPE}")


def test_an_empty_instances_list_is_a_400():
    assert refusal(parse_instances, JSON, b'{"instances": []}', 8) == (
        400, "bad_shape", f"'instances' is empty; {SHAPE}")


@pytest.mark.parametrize("items,index,shown", [
    ([7], 0, "7"),
    ([{"b64": "AA==", "s3": "s3://b/k"}], 0, '{"b64": "AA==", "s3": "s3://b/k"}'),
    ([{"b64": 5}], 0, '{"b64": 5}'),
    ([{"s3": None}], 0, '{"s3": null}'),
    ([{"url": "x"}], 0, '{"url": "x"}'),
    ([{}], 0, "{}"),
    ([{"b64": "AA=="}, ["b64", "AA=="]], 1, '["b64", "AA=="]'),
    ([{"B64": "AA=="}], 0, '{"B64": "AA=="}'),
    ([{"url": "x" * 100}], 0, ('{"url": "' + "x" * 100 + '"}')[:80]),
])
def test_an_instance_of_the_wrong_shape_is_a_400_naming_it(items, index, shown):
    body = json.dumps({"instances": items}).encode()
    assert refusal(parse_instances, JSON, body, 8) == (400, "bad_shape", f"instances[{index}] is {shown}; {SHAPE}")


@pytest.mark.parametrize("text,reason", [("AAEC!", "Only base64 data is allowed"),
                                         ("AA EC", "Only base64 data is allowed"),
                                         ("A", "Invalid base64-encoded string: number of data characters (1) cannot "
                                               "be 1 more than a multiple of 4")])
def test_base64_that_is_not_strictly_base64_is_a_400(text, reason):
    body = json.dumps({"instances": [{"b64": "AA=="}, {"b64": text}]}).encode()
    assert refusal(parse_instances, JSON, body, 8) == (400, "bad_base64", f"instances[1].b64 is not base64 ({reason})")


# -- JSON: depth, integers, syntax ---------------------------------------------------------------------------
@pytest.mark.parametrize("body,depth", [
    (b"123", 0),
    (b'"[[[{"', 0),
    (b'{"a": [[1]]}', 3),
    (b"[][[]]", 2),
    (b"[{}, {}, [{}]]", 3),
    (b'{"k": "\\"[[[", "l": ["]"]}', 2),
    (b"{[", 2),
])
def test_json_depth_counts_brackets_outside_strings(body, depth):
    assert json_depth(body) == depth


def test_json_nested_to_the_limit_parses_and_one_more_level_is_refused():
    assert parse_json(b"[" * 8 + b"]" * 8) == [[[[[[[[]]]]]]]]
    assert refusal(parse_json, b"[" * 9 + b"]" * 9) == (
        400, "malformed_json", 'the JSON nests 9 levels deep, above the limit of 8; expected {"instances": '
                               '[{"b64": ...}]}')
    assert refusal(parse_json, b"{" * 1234)[2].startswith("the JSON nests 1,234 levels deep")


def test_integers_of_up_to_20_digits_parse_and_longer_ones_are_refused():
    big = 10 ** 20 - 1
    assert parse_json(b'{"n": %d, "m": -%d, "k": 5}' % (big, big)) == {"n": big, "m": -big, "k": 5}
    assert refusal(parse_json, b'{"n": 1%s}' % (b"0" * 20)) == (
        400, "malformed_json", "a JSON integer has 21 digits, above the limit of 20; no field of this API takes a "
                               "number that large")
    assert refusal(parse_json, b"[-%s]" % (b"9" * 1234))[2].startswith("a JSON integer has 1,234 digits,")


@pytest.mark.parametrize("body,reason", [
    (b'{"a": ', "Expecting value: line 1 column 7 (char 6)"),
    (b'"\xff"', "'utf-8' codec can't decode byte 0xff in position 1: invalid start byte"),
])
def test_json_that_does_not_parse_is_a_400_with_the_parsers_reason(body, reason):
    assert refusal(parse_json, body) == (400, "malformed_json", f"the body is not valid JSON ({reason})")


@pytest.mark.parametrize("exc,shown", [
    (RecursionError("maximum recursion depth exceeded"), "RecursionError: maximum recursion depth exceeded"),
    (ValueError("v" * 300), "ValueError: " + "v" * 200),
])
def test_other_parser_failures_are_a_400_naming_the_error_type(monkeypatch, exc, shown):
    def loads(*args, **kwargs):
        raise exc

    monkeypatch.setattr(inputs.json, "loads", loads)  # what json.loads may raise beyond its own errors
    assert refusal(parse_json, b"[1]") == (400, "malformed_json", f"the body is not acceptable JSON ({shown})")


# -- S3 ------------------------------------------------------------------------------------------------------
def test_s3_uris_inside_an_allowed_prefix_are_split_into_store_root_and_name():
    allowed = ("s3://bins/allowed", "s3://other")
    assert check_s3_allowed("s3://bins/allowed/x.jpg", allowed) == ("s3://bins/allowed", "x.jpg")
    assert check_s3_allowed("s3://bins/allowed/sub/y.png", allowed) == ("s3://bins/allowed/sub", "y.png")
    assert check_s3_allowed("s3://other/any/where/z.jpg", allowed) == ("s3://other/any/where", "z.jpg")
    assert check_s3_allowed("s3://other/z.jpg", allowed) == ("s3://other", "z.jpg")


@pytest.mark.parametrize("url", ["s3://bins/private/x.jpg", "s3://bins/allowed-not/x.jpg", "s3://bins/allowed",
                                 "s3://elsewhere/allowed/x.jpg"])
def test_s3_uris_outside_the_allowed_prefixes_are_a_403_listing_them(url):
    assert refusal(check_s3_allowed, url, ("s3://bins/allowed", "s3://more/p")) == (
        403, "s3_not_allowed", f"{url} is outside the allowed S3 prefixes: s3://bins/allowed, s3://more/p")


def test_with_no_allowed_prefix_nothing_in_s3_is_readable():
    assert refusal(check_s3_allowed, "s3://bins/allowed/x.jpg", ()) == (
        403, "s3_not_allowed", "s3://bins/allowed/x.jpg is outside the allowed S3 prefixes: none (start the server "
                               "with --allow-s3 PREFIX)")


@pytest.mark.parametrize("url,message", [
    ("http://bins/x.jpg", "'http://bins/x.jpg' is not an S3 URL; expected s3://BUCKET[/PREFIX]"),
    ("s3://bins/allowed/../private/x.jpg",
     "'s3://bins/allowed/../private/x.jpg': the prefix 'allowed/../private/x.jpg' has empty, '.' or '..' parts"),
    ("s3://bins", "'s3://bins' names a bucket, not an object"),
    ("s3://bins/", "'s3://bins/' names a bucket, not an object"),
])
def test_a_malformed_s3_uri_is_a_400(url, message):
    assert refusal(check_s3_allowed, url, ("s3://bins",)) == (400, "bad_s3_uri", message)


@pytest.fixture(scope="module")
def s3_limits(s3_endpoint):  # noqa: F811
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="serve-values")
    client.put_object(Bucket="serve-values", Key="ok/ten.bin", Body=b"0123456789")
    client.put_object(Bucket="serve-values", Key="ok/eleven.bin", Body=b"0123456789A")
    return Limits(allow_s3=("s3://serve-values/ok", "s3://no-such-bucket-here"), s3={"endpoint_url": s3_endpoint},
                  max_s3_bytes=10)


def test_an_s3_object_of_exactly_the_cap_is_read(s3_limits):
    assert read_s3("s3://serve-values/ok/ten.bin", s3_limits) == b"0123456789"


def test_s3_refusals_name_the_object(s3_limits):
    assert refusal(read_s3, "s3://serve-values/ok/eleven.bin", s3_limits) == (
        413, "s3_object_too_large", "s3://serve-values/ok/eleven.bin is 11 bytes, above the limit of 10 bytes for "
                                    "such a file (the cap on an S3 image)")
    assert refusal(read_s3, "s3://serve-values/ok/missing.bin", s3_limits) == (
        404, "s3_not_found", "s3://serve-values/ok/missing.bin does not exist")
    assert refusal(read_s3, "s3://no-such-bucket-here/k/x.jpg", s3_limits) == (
        502, "s3_error", "reading s3://no-such-bucket-here/k/x.jpg failed: s3://no-such-bucket-here/k/x.jpg: S3 error "
                         "NoSuchBucket (The specified bucket does not exist)")
    assert refusal(read_s3, "s3://serve-values/private/ten.bin", s3_limits)[:2] == (403, "s3_not_allowed")


# -- decode -------------------------------------------------------------------------------------------------
def test_decode_gives_the_pixels_up_to_the_pixel_limit():
    tensor = decode(png((10, 8), (30, 90, 200)), 80, "the image")
    assert tuple(tensor.shape) == (3, 8, 10) and str(tensor.dtype) == "torch.uint8"
    assert tensor[:, 0, 0].tolist() == [30, 90, 200]


def test_decode_refuses_one_pixel_over_the_limit_from_the_header_as_a_413():
    assert refusal(decode, png((10, 8)), 79, "instances[3]") == (
        413, "image_too_large", "instances[3]: image too large: 10x8 = 80 pixels declared, above the limit of 79 "
                                "(data.max_pixels); refused from the header")


@pytest.mark.parametrize("data", [b"GIF89a junk", corrupt_png(), jpeg()[:300]])
def test_decode_refuses_what_is_not_an_image_as_a_400_naming_it(data):
    assert refusal(decode, data, 1000, "instances[2]") == (400, "bad_image", f"instances[2]: {decode_reason(data)}")


# -- invocations: the error shape and Server-Timing ---------------------------------------------------------
def test_an_error_is_the_json_error_and_message_with_the_status_and_headers():
    r = error(418, "teapot", "short and stout", {"Retry-After": "7"})
    assert (r.status_code, json.loads(r.body), r.headers["retry-after"]) == (
        418, {"error": "teapot", "message": "short and stout"}, "7")
    assert "retry-after" not in error(400, "c", "m").headers


def test_server_timing_reports_the_slowest_images_queue_and_model():
    timings = [{"queue_ms": 10, "model_ms": 1, "preprocess_ms": 0.5, "batch": 1},
               {"queue_ms": 1, "model_ms": 9, "preprocess_ms": 0.25, "batch": 2},
               {"queue_ms": 6, "model_ms": 6, "preprocess_ms": 0.125, "batch": 3}]
    assert server_timing(1.234, 5.678, timings) == (
        'read;dur=1.23, decode;dur=5.68, queue;dur=6.00, preprocess;dur=0.12, model;dur=6.00;desc="batch of 3"')


def test_server_timing_reads_a_missing_time_as_zero():
    assert server_timing(0, 0, [{}]) == ('read;dur=0.00, decode;dur=0.00, queue;dur=0.00, preprocess;dur=0.00, '
                                         'model;dur=0.00;desc="batch of 0"')
    # a tie goes to the first: a missing time must count as 0, not more
    assert server_timing(0, 0, [{"queue_ms": 5, "batch": 1}, {"model_ms": 5, "batch": 2}]).endswith('"batch of 1"')
    assert server_timing(0, 0, [{"model_ms": 5, "batch": 1}, {"queue_ms": 5, "batch": 2}]).endswith('"batch of 1"')


# -- app: the error handlers and State ----------------------------------------------------------------------
def request_for(method: str, path: str) -> Request:
    return Request({"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                    "headers": [], "scheme": "http", "server": ("testserver", 80), "root_path": ""})


def answer(response) -> tuple[int, dict]:
    return response.status_code, json.loads(response.body)


def test_a_serve_error_outside_invocations_is_its_json_answer():
    got = asyncio.run(_serve_error(request_for("GET", "/ping"), ServeError(409, "conflict", "try again")))
    assert answer(got) == (409, {"error": "conflict", "message": "try again"})


@pytest.mark.parametrize("status,detail,code,message", [
    (404, None, "not_found", "no route /predict; routes: GET /ping, POST /invocations, GET /metrics"),
    (405, None, "method_not_allowed", "PUT is not allowed on /predict"),
    (400, "bad things", "http_error", "bad things"),
])
def test_http_errors_are_json_naming_the_route_or_method(status, detail, code, message):
    got = asyncio.run(_http_error(request_for("PUT", "/predict"), HTTPException(status, detail)))
    assert answer(got) == (status, {"error": code, "message": message})


def test_an_unexpected_error_is_a_500_naming_its_type_and_logged_with_its_traceback(caplog):
    exc = KeyError("secret detail")
    with caplog.at_level(logging.INFO, logger="bincount"):
        got = asyncio.run(_unexpected(request_for("GET", "/metrics"), exc))
    assert answer(got) == (500, {"error": "internal_error",
                                 "message": "KeyError while serving the request (logged by the server)"})
    records = [r for r in caplog.records if r.name == "bincount.serve"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.ERROR, "unexpected error on GET /metrics")]
    assert records[0].exc_info[1] is exc


def test_a_new_state_has_no_model_batcher_or_error_and_is_not_ready():
    from bincount.serve.admission import Budgets
    from bincount.serve.metrics import Metrics

    settings = Settings(model="m", max_batch_size=6, budgets=Budgets(max_queue_images=5))
    metrics = Metrics()
    state = State(settings, metrics)
    assert (state.settings, state.metrics, state.model, state.batcher, state.error) == (settings, metrics, None,
                                                                                         None, None)
    assert not state.ready.is_set()
    assert (state.admission.budgets, state.admission.max_batch_size, state.admission.metrics) == (
        settings.budgets, 6, metrics)
    assert State(settings).metrics is not None


def test_a_model_that_cannot_load_is_reported_to_on_fail_and_logged(tmp_path, caplog):
    failures: list[BaseException] = []
    missing = tmp_path / "nothing-here"
    state = State(Settings(model=str(missing), on_fail=failures.append))
    with caplog.at_level(logging.INFO, logger="bincount"):
        state.load()
    assert failures == [state.error] and state.error is not None and not state.ready.is_set()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bincount.serve"]
    assert lines == [(logging.ERROR, f"model {missing} could not be loaded: {type(state.error).__name__}: "
                                     f"{state.error}")]


# -- the app over HTTP (one server for the module) -----------------------------------------------------------
RUN_ID = "2024-05-06_12-00-00"
BODY_LIMIT = 64 << 10
MAX_PIXELS = 10_000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_values")
    return write_constant_bundle(root / "model", run_dir=root / "runs" / RUN_ID)


@pytest.fixture(scope="module")
def identity(bundle) -> dict:
    meta = json.loads((bundle / "bincount-model.json").read_text())
    return {"backbone": "test_resnet", "run": RUN_ID, "sha256": meta["weights"]["sha256"][:16]}


@pytest.fixture(scope="module")
def row(bundle) -> dict:
    """The model's answer for any image, computed in process."""
    from bincount.answers import answer_rows
    from bincount.bundle import load_model

    model = load_model(bundle)
    got = answer_rows(model.predict([jpeg()]), model.counts)[0]
    assert got["count"] == 3 and list(got["probabilities"]) == ["1", "2", "3", "4", "5"]
    return got


@pytest.fixture(scope="module")
def server(bundle):
    limits = Limits(max_body_bytes=BODY_LIMIT, max_instances=3, max_pixels=MAX_PIXELS)
    settings = Settings(model=str(bundle), limits=limits, max_batch_size=4, max_wait_ms=0,
                        connections=ConnectionLimits(body_timeout_s=1.0))
    with running(settings) as (url, app):
        yield url, app


def post(url: str, body: bytes, kind: str = "image/jpeg", timeout: float = 30, **headers) -> httpx.Response:
    return httpx.post(url + "/invocations", content=body, headers={"content-type": kind, **headers}, timeout=timeout)


def sample(app, name: str, **labels) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def counters(app) -> dict:
    return {"200": sample(app, "bincount_requests_total", status="200"),
            "400": sample(app, "bincount_requests_total", status="400"),
            "total": sample(app, "bincount_latency_seconds_count", stage="total"),
            "total_s": sample(app, "bincount_latency_seconds_sum", stage="total"),
            "decode": sample(app, "bincount_latency_seconds_count", stage="decode"),
            "decode_s": sample(app, "bincount_latency_seconds_sum", stage="decode")}


def wait_until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_ping_answers_ok_with_the_models_identity(server, identity):
    url, _ = server
    r = httpx.get(url + "/ping")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "model": identity})
    assert len(identity["sha256"]) == 16


def test_one_image_is_answered_alone_with_the_model_and_counted(server, row, identity):
    url, app = server
    before = counters(app)
    r = post(url, jpeg(), "image/jpeg; charset=binary")
    assert (r.status_code, r.json()) == (200, {**row, "model": identity})
    after = counters(app)
    assert (after["200"] - before["200"], after["total"] - before["total"], after["decode"] - before["decode"]) == (
        1, 1, 1)
    assert 0 < after["total_s"] - before["total_s"] < 5 and 0 < after["decode_s"] - before["decode_s"] < 5
    metrics = r.headers["server-timing"].split(", ")
    durations = {m.split(";")[0]: float(m.split("dur=")[1].split(";")[0]) for m in metrics}
    assert list(durations) == ["read", "decode", "queue", "preprocess", "model"]
    assert durations["read"] > 0 and durations["decode"] > 0  # milliseconds, not seconds
    assert r.headers["server-timing"].endswith(';desc="batch of 1"')
    assert app.state.bincount.admission.queued == 0 and app.state.bincount.admission.reserved == 0


def test_json_instances_are_answered_as_predictions_in_order(server, row, identity):
    url, app = server
    for n in (1, 3):
        body = json.dumps({"instances": [{"b64": b64(png((20 + i, 10)))} for i in range(n)]}).encode()
        r = post(url, body, "application/json")
        assert (r.status_code, r.json()) == (200, {"predictions": [{**row, "model": identity}] * n})
    assert app.state.bincount.admission.queued == 0 and app.state.bincount.admission.reserved == 0


def test_the_servers_pixel_limit_applies_at_its_edge(server, row, identity):
    url, _ = server
    assert post(url, png((100, 100)), "image/png").json() == {**row, "model": identity}
    r = post(url, png((101, 100)), "image/png")
    assert (r.status_code, r.json()) == (413, {"error": "image_too_large", "message": (
        "the image: image too large: 101x100 = 10,100 pixels declared, above the limit of 10,000 (data.max_pixels); "
        "refused from the header")})


def test_refusals_before_the_model_are_exact_json_without_connection_close(server):
    url, app = server
    before = counters(app)
    cases = [
        (jpeg(), "text/plain", 415, "unsupported_media_type", f"Content-Type 'text/plain' {MEDIA_HELP}"),
        (b'{"instances": [{"b64": "AA=="}, {"b64": "AA=="}, {"b64": "AA=="}, {"b64": "AA=="}]}', JSON, 413,
         "too_many_instances", "4 instances, above the limit of 3 (--max-instances); split the request"),
        (b"x" * (BODY_LIMIT + 1), "image/jpeg", 413, "payload_too_large",
         f"the body declares {BODY_LIMIT + 1:,} bytes, above the limit of {BODY_LIMIT:,} (--max-body-bytes); "
         "nothing was read"),
        (b"GIF89a junk", "image/gif; x=1", 415, "unsupported_media_type",
         f"Content-Type 'image/gif; x=1' {MEDIA_HELP}"),
        (json.dumps({"instances": [{"b64": b64(jpeg())}, {"b64": b64(b"GIF89a junk")}]}).encode(), JSON, 400,
         "bad_image",
         "instances[1]: cannot decode (UnidentifiedImageError: cannot identify image file the image bytes)"),
        (b"GIF89a junk", "image/png", 400, "bad_image",
         "the image: cannot decode (UnidentifiedImageError: cannot identify image file the image bytes)"),
    ]
    for body, kind, status, code, message in cases:
        r = post(url, body, kind)
        assert (r.status_code, r.json()) == (status, {"error": code, "message": message}), r.text
        assert "connection" not in r.headers and "retry-after" not in r.headers
    after = counters(app)
    assert after["400"] - before["400"] == 2 and after["total"] - before["total"] == len(cases)
    assert after["decode"] == before["decode"]  # nothing was decoded


def test_a_bad_deadline_header_is_a_400(server):
    url, _ = server
    r = post(url, jpeg(), **{DEADLINE_HEADER: "0"})
    assert (r.status_code, r.json()["error"]) == (400, "bad_deadline")


def test_an_image_whose_data_fails_to_decode_is_a_400_and_leaves_nothing_queued(server):
    url, app = server
    admission = app.state.bincount.admission
    reason = decode_reason(corrupt_png())
    r = post(url, corrupt_png(), "image/png")
    assert (r.status_code, r.json()) == (400, {"error": "bad_image", "message": f"the image: {reason}"})
    body = json.dumps({"instances": [{"b64": b64(png())}, {"b64": b64(corrupt_png())}]}).encode()
    r = post(url, body, JSON)
    assert (r.status_code, r.json()) == (400, {"error": "bad_image", "message": f"instances[1]: {reason}"})
    assert (admission.queued, admission.reserved) == (0, 0)
    assert sample(app, "bincount_queue_images") == 0 and sample(app, "bincount_decoded_bytes_reserved") == 0


def test_while_not_ready_invocations_answer_503_loading_with_retry_after_and_ping_names_a_failure(server):
    url, app = server
    state = app.state.bincount
    state.ready.clear()
    try:
        r = post(url, jpeg())
        assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {
            "error": "loading", "message": "the model is still loading; retry when GET /ping answers 200"}, "1")
        r = httpx.get(url + "/ping")
        assert (r.status_code, r.json()) == (503, {"error": "loading", "message": "the model is still loading"})
        state.error = RuntimeError("weights missing")
        r = httpx.get(url + "/ping")
        assert (r.status_code, r.json()) == (503, {"error": "model_failed",
                                                   "message": "the model could not be loaded: weights missing"})
    finally:
        state.error = None
        state.ready.set()
    assert post(url, jpeg()).status_code == 200


def test_routes_and_methods(server):
    url, _ = server
    r = httpx.post(url + "/ping")
    assert (r.status_code, r.json()) == (405, {"error": "method_not_allowed",
                                               "message": "POST is not allowed on /ping"})
    r = httpx.get(url + "/invocations")
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
    assert httpx.get(url + "/metrics").status_code == 200
    r = httpx.get(url + "/nothing")
    assert (r.status_code, r.json()) == (404, {"error": "not_found", "message": (
        "no route /nothing; routes: GET /ping, POST /invocations, GET /metrics")})




def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n"
                  + b"\xff" * 10)
        reply = read_until_closed(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 408 request timeout" and "connection: close" in lines[1:], head
    assert json.loads(body) == {"error": "body_timeout", "message": "the body did not arrive within 1 s "
                                                                    "(--body-timeout); the connection is closed"}


class ModelStandIn:
    """The loaded model, held until ``gate`` is set, or failing every batch."""

    def __init__(self, model, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.model, self.counts, self.gate, self.fail = model, model.counts, gate, fail

    def predict(self, batch):
        if self.gate is not None:
            assert self.gate.wait(20), "the test never released the model"
        if self.fail:
            raise RuntimeError("the device fell over")
        return self.model.predict(batch)


def test_a_failing_model_is_a_500_naming_the_error_type_logged_once(server, caplog):
    url, app = server
    batcher = app.state.bincount.batcher
    real = batcher.model
    batcher.model = ModelStandIn(real, fail=True)
    try:
        with caplog.at_level(logging.INFO, logger="bincount"):
            r = post(url, jpeg())
    finally:
        batcher.model = real
    assert (r.status_code, r.json()) == (500, {"error": "internal_error", "message": (
        "RuntimeError while serving the request (logged by the server)")})
    records = [r for r in caplog.records if r.name == "bincount.serve" and r.exc_info]
    assert [r.getMessage() for r in records] == ["unexpected error on POST /invocations"]
    assert str(records[0].exc_info[1]) == "the device fell over"
    assert post(url, jpeg()).status_code == 200


def test_a_client_that_leaves_is_499_and_a_deadline_that_passes_is_503_both_dropped(server, caplog):
    url, app = server
    state = app.state.bincount
    batcher, admission = state.batcher, state.admission
    real = batcher.model
    before = {k: sample(app, "bincount_abandoned_images_total", reason=k) for k in ("disconnect", "deadline")}
    gone_before = sample(app, "bincount_requests_total", status="499")
    busy_before = sample(app, "bincount_requests_total", status="503")
    gate = threading.Event()
    batcher.model = ModelStandIn(real, gate=gate)
    out: list = []
    first = threading.Thread(target=lambda: out.append(post(url, jpeg())), daemon=True)
    try:
        with caplog.at_level(logging.INFO, logger="bincount"):
            first.start()
            wait_until(lambda: admission.busy)  # the first image is in the model, held there
            body = jpeg()
            decoded = sample(app, "bincount_latency_seconds_count", stage="decode")
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as s:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d"
                          b"\r\n\r\n" % len(body) + body)
                # decoded, so submitted in the same step: it waits in the batcher's queue when its client leaves
                wait_until(lambda: sample(app, "bincount_latency_seconds_count", stage="decode") == decoded + 1)
                who = "%s:%d" % s.getsockname()
            line = f"client {who} went away before its answer; its request was dropped"
            wait_until(lambda: any(r.getMessage() == line for r in caplog.records if r.name == "bincount.serve"))
            start = time.monotonic()
            late = post(url, jpeg(), timeout=5, **{DEADLINE_HEADER: "150"})
            elapsed = time.monotonic() - start
            gate.set()  # the first is answered; the batcher then takes the other two and drops them
        first.join(10)
        wait_until(lambda: admission.queued == 0 and not admission.busy)
    finally:
        gate.set()
        batcher.model = real
    assert (late.status_code, late.json()) == (503, {"error": "overloaded", "message": TOO_LATE})
    assert int(late.headers["retry-after"]) >= 1
    assert elapsed < 0.9, f"answered after {elapsed:.2f} s, not at its 150 ms deadline"
    assert out[0].status_code == 200
    gone = [r for r in caplog.records if r.name == "bincount.serve" and "went away" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in gone] == [(logging.INFO, line)]
    after = {k: sample(app, "bincount_abandoned_images_total", reason=k) for k in ("disconnect", "deadline")}
    assert (after["disconnect"] - before["disconnect"], after["deadline"] - before["deadline"]) == (1, 1)
    assert sample(app, "bincount_requests_total", status="499") - gone_before == 1
    assert sample(app, "bincount_requests_total", status="503") - busy_before == 1
    gc.collect()  # an abandoned wait's futures, read or not: asyncio logs one never read as an error
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_loaded_state_says_ready_once_its_batcher_runs_and_logs_where(bundle, identity, caplog):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = State(Settings(model=str(bundle), device="auto", max_batch_size=2, max_wait_ms=0))
    # both loggers: an in-process `bincount serve` earlier in the session set bincount.serve's own level to INFO
    with caplog.at_level(logging.DEBUG, logger="bincount"), caplog.at_level(logging.DEBUG, logger="bincount.serve"):
        state.load()
        try:
            assert state.error is None, state.error  # a failed load says so at once: no wait for readiness
            assert state.ready.wait(30)
            assert state.identity == identity and state.error is None
            assert state.model.device.type == device
            assert state.batcher.transform is state.model.transform and state.batcher.hooks is state.admission
            assert state.batcher.metrics is state.metrics and state.batcher.max_batch_size == 2
            assert state.batcher.max_wait == 0 and state.batcher.calibrate is False
        finally:
            if state.batcher is not None:
                state.batcher.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "bincount.serve"]
    assert f"model {bundle} loaded on {device} (test_resnet); ready" in lines
    frozen = [m for m in lines if "frozen" in m]
    assert len(frozen) == 1 and frozen[0].split(" ", 1)[1] == (
        "objects from start-up frozen out of the garbage collector's full passes") and frozen[0].split()[0].isdigit()
