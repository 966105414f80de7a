"""What ``POST /invocations`` accepts: the body read within its limit, then one image or a list of instances.

Why so strict: the server faces clients it does not know. The body is refused from its Content-Length
before a byte is read, and counted while it streams (chunked bodies have no length), so an oversized
body is never held in memory. Every refusal is a :class:`ServeError` carrying the HTTP status, a short
code and a message saying what was wrong and why; the app turns it into ``{"error", "message"}``.

Images are decoded by :func:`bincount.samples.decode_image_bytes`, the rules of training and
``bincount predict``: a truncated JPEG or a bomb declaring 30000x30000 pixels is refused from its
header, before any pixel is allocated. ``s3://`` instances are read only under ``--allow-s3`` prefixes,
through :mod:`bincount.s3.store`, with a size cap checked before the object's body is read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_BODY_BYTES = 6_291_456  # SageMaker real-time endpoints' payload limit
DEFAULT_MAX_INSTANCES = 64
DEFAULT_MAX_S3_BYTES = 32 << 20
DEFAULT_MAX_PIXELS = 40_000_000  # = bincount.samples' (a test checks): importing samples would load numpy at start-up
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
MAX_JSON_DEPTH = 8  # {"instances": [{"b64": ...}]} is 3 deep; Python's parser recurses, so depth is bounded first
MAX_JSON_INT_DIGITS = 20  # no field takes a number; int() of a 5,000-digit string is quadratic (and 4,300 raises)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: linear)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class ServeError(Exception):
    """A refused request: ``status`` (4xx, or 5xx for a failing dependency), ``code`` and the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_s3_bytes: int = DEFAULT_MAX_S3_BYTES
    allow_s3: tuple[str, ...] = ()  # s3://bucket/prefix; nothing in S3 is readable unless listed
    s3: dict[str, Any] = field(default_factory=dict)  # S3Config fields (endpoint_url, region, ...)
    # the server's own cap on decoded pixels, whatever the bundle says (the loader caps the bundle's too)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def pixels(self, bundle_max_pixels: int) -> int:
        """The pixel limit a decode uses: the bundle's, never above the server's."""
        return min(int(bundle_max_pixels), self.max_pixels)


def media_type(header: str | None) -> str:
    """``image/jpeg; q=1`` -> ``image/jpeg``; 415 when there is none or it is not one we read."""
    value = (header or "").split(";", 1)[0].strip().lower()
    if value not in (*IMAGE_TYPES, JSON_TYPE):
        shown = repr(header) if header else "none"
        raise ServeError(415, "unsupported_media_type", f"Content-Type {shown} is not accepted; send one image as "
                         f"{', '.join(IMAGE_TYPES)}, or {JSON_TYPE} with {{\"instances\": [{{\"b64\": ...}}, {{\"s3\": ...}}]}}")
    return value


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The whole body, refused (413) from its Content-Length or as soon as the streamed bytes pass ``limit``."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ServeError(400, "bad_request", f"Content-Length {content_length!r} is not a number") from None
        if declared > limit:
            raise ServeError(413, "payload_too_large", f"the body declares {declared:,} bytes, above the limit of "
                             f"{limit:,} (--max-body-bytes); nothing was read")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ServeError(413, "payload_too_large", f"the body passed the limit of {limit:,} bytes "
                             "(--max-body-bytes) while streaming; reading stopped there")
        parts.append(chunk)
    body = b"".join(parts)
    if not body:
        raise ServeError(400, "empty_body", "the body is empty; send an image or a JSON document")
    return body


@dataclass(frozen=True)
class Instance:
    """One image to predict: its bytes, or an ``s3://`` URI still to be read."""

    data: bytes | None = None
    s3: str | None = None


def parse_instances(kind: str, body: bytes, max_instances: int) -> tuple[list[Instance], bool]:
    """(instances, several?) from a body whose media type is ``kind``."""
    if kind in IMAGE_TYPES:
        return [Instance(data=body)], False
    doc = parse_json(body)
    shape = 'expected {"instances": [{"b64": "<base64 image>"} or {"s3": "s3://bucket/key"}, ...]}'
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
        raise ServeError(400, "bad_shape", f"got a JSON {type(doc).__name__} without an 'instances' list; {shape}")
    items = doc["instances"]
    if not items:
        raise ServeError(400, "bad_shape", f"'instances' is empty; {shape}")
    if len(items) > max_instances:
        raise ServeError(413, "too_many_instances", f"{len(items)} instances, above the limit of {max_instances} "
                         "(--max-instances); split the request")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1 or not isinstance(next(iter(item.values())), str) \
                or next(iter(item)) not in ("b64", "s3"):
            raise ServeError(400, "bad_shape", f"instances[{i}] is {json.dumps(item)[:80]}; {shape}")
        if "b64" in item:
            try:
                out.append(Instance(data=base64.b64decode(item["b64"], validate=True)))
            except (binascii.Error, ValueError) as e:
                raise ServeError(400, "bad_base64", f"instances[{i}].b64 is not base64 ({e})") from None
        else:
            out.append(Instance(s3=item["s3"]))
    return out, True


def json_depth(body: bytes) -> int:
    """How deep ``[`` and ``{`` nest in ``body``, outside strings; C-speed passes only (no recursion, no per-byte loop
    in Python), so a 6 MB body of brackets costs milliseconds rather than the parser's stack."""
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ServeError(400, "malformed_json", f"a JSON integer has {len(text.lstrip('-')):,} digits, above the "
                         f"limit of {MAX_JSON_INT_DIGITS}; no field of this API takes a number that large")
    return int(text)


def parse_json(body: bytes) -> Any:
    """The JSON document, or 400 ``malformed_json`` naming what is wrong: syntax, nesting deeper than
    ``MAX_JSON_DEPTH`` (checked before parsing: the parser recurses), or an integer longer than
    ``MAX_JSON_INT_DIGITS`` digits."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ServeError(400, "malformed_json", f"the JSON nests {depth:,} levels deep, above the limit of "
                         f"{MAX_JSON_DEPTH}; expected {{\"instances\": [{{\"b64\": ...}}]}}")
    try:
        return json.loads(body, parse_int=_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServeError(400, "malformed_json", f"the body is not valid JSON ({e})") from None
    except (ValueError, RecursionError) as e:  # what json.loads raises beyond its own errors; named, not a 500
        raise ServeError(400, "malformed_json", f"the body is not acceptable JSON ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def check_s3_allowed(url: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(store root, key) of an ``s3://`` URI inside one of the ``allowed`` prefixes; 400/403 otherwise."""
    from bincount.s3.endpoint import S3Error, parse_s3_url

    try:
        bucket, key = parse_s3_url(url)
    except S3Error as e:
        raise ServeError(400, "bad_s3_uri", str(e)) from None
    if not key:
        raise ServeError(400, "bad_s3_uri", f"{url!r} names a bucket, not an object")
    for prefix in allowed:
        p_bucket, p_key = parse_s3_url(prefix)
        if bucket == p_bucket and (not p_key or key.startswith(p_key + "/")):
            base, _, name = f"s3://{bucket}/{key}".rpartition("/")
            return base, name
    where = ", ".join(allowed) if allowed else "none (start the server with --allow-s3 PREFIX)"
    raise ServeError(403, "s3_not_allowed", f"{url} is outside the allowed S3 prefixes: {where}")


def read_s3(url: str, limits: Limits) -> bytes:
    """The object's bytes (blocking: call from a thread); 403/404/413/502 as :class:`ServeError`."""
    from bincount.layout import TooLarge
    from bincount.s3.store import S3ReadError, open_store

    base, name = check_s3_allowed(url, limits.allow_s3)
    try:
        return open_store(base, limits.s3).read(name, max_bytes=limits.max_s3_bytes)
    except FileNotFoundError:
        raise ServeError(404, "s3_not_found", f"{url} does not exist") from None
    except TooLarge as e:
        raise ServeError(413, "s3_object_too_large", f"{e} (the cap on an S3 image)") from None
    except S3ReadError as e:
        raise ServeError(502, "s3_error", f"reading {url} failed: {e}") from None


def decode(data: bytes, max_pixels: int, where: str):
    """Bytes -> a uint8 3xHxW tensor, by the training decode rules; 400 (413 for a bomb) naming the error.

    The bundle's transform is not applied here but on the batcher's thread (:mod:`.batcher` says why)."""
    from bincount.samples import BadImage, decode_image_bytes

    try:
        return decode_image_bytes(data, max_pixels)
    except BadImage as e:
        reason = str(e)
        if reason.startswith("image too large"):
            raise ServeError(413, "image_too_large", f"{where}: {reason}; refused from the header") from None
        raise ServeError(400, "bad_image", f"{where}: {reason}") from None
