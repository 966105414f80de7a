"""Admission control: which requests the server takes on, so that overload is a fast 503, not a slow timeout.

Why: without it, every request queues. Under 128 clients each one waited behind the others, clients timed
out, and the model went on computing images nobody was waiting for; a few-KB PNG declaring 6324x6324
pixels cost 430 MB to decode, eight of them in one request 4 GB. So a request is measured before any
pixel is decoded and refused at once when it cannot be served:

- **413** when its images, decoded, are above the per-request budget (``--max-request-decoded-bytes``):
  width x height x channels from each image's header (at least 3 channels: the decode's output is RGB),
  not file bytes, since a compressed file says nothing about the memory it unpacks to.
- **503** ``overloaded`` with ``Retry-After`` (the seconds until the queue has drained, at least 1) when the
  queue (``--max-queue``, in images, admitted and not yet taken into a batch) is full, when the
  decoded-bytes budget of the whole server (``--max-decoded-bytes``, held from admission to the answer) is
  full, or when the queue's estimated wait (batches ahead x the recent time per batch) does not fit in
  ``ADMIT_SHARE`` of what is left of the request's deadline.

The deadline is ``--timeout`` (default 55 s, under SageMaker's 60 s for an answer), or less if the client
asks with the ``X-Bincount-Deadline-Ms`` header. A request whose deadline passes while queued, or whose
client goes away, leaves the queue: the batcher skips its images (:mod:`.batcher`), so no work is done
for nobody.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from typing import Any

from bincount.serve.inputs import ServeError

DEADLINE_HEADER = "X-Bincount-Deadline-Ms"
DEFAULT_TIMEOUT_S = 55.0  # SageMaker gives up on an answer after 60 s
DEFAULT_MAX_QUEUE_IMAGES = 256
DEFAULT_MAX_REQUEST_DECODED_BYTES = 64 << 20  # a 12-megapixel phone photo is 36 MB decoded; an ABID photo ~0.5 MB
DEFAULT_MAX_DECODED_BYTES = 256 << 20  # decoding peaks at a few times the decoded size (PIL, RGB, tensor copies)
EWMA = 0.3  # weight of the latest batch in the model-time estimate
# A request is admitted only if the queue's estimated wait fits in this share of what is left of its deadline:
# the rest covers its decoding, its answer's way back and the estimate's error. At 1.0, under 16x overload
# (128 clients, 3 s deadlines, 2 cores) a third of the images computed were for requests already given up.
ADMIT_SHARE = 0.8


class Overloaded(ServeError):
    """503 ``overloaded``, with the seconds after which a retry may succeed (the ``Retry-After`` header)."""

    def __init__(self, message: str, retry_after: int, code: str = "overloaded") -> None:
        super().__init__(503, code, message)
        self.retry_after = max(1, int(retry_after))


@dataclass(frozen=True)
class Budgets:
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_queue_images: int = DEFAULT_MAX_QUEUE_IMAGES
    max_request_decoded_bytes: int = DEFAULT_MAX_REQUEST_DECODED_BYTES
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s!r} must be positive seconds")
        if self.max_queue_images < 1:
            raise ValueError(f"max_queue_images={self.max_queue_images!r} must be at least 1")
        if not 0 < self.max_request_decoded_bytes <= self.max_decoded_bytes:
            raise ValueError(f"max_request_decoded_bytes={self.max_request_decoded_bytes:,} must be positive and at "
                             f"most max_decoded_bytes={self.max_decoded_bytes:,} (the server-wide budget), or no "
                             "request that large could ever be served")


def deadline_seconds(header: str | None, timeout_s: float) -> float:
    """This request's seconds: ``--timeout``, or the client's ``X-Bincount-Deadline-Ms`` when shorter; 400 if bad."""
    if header is None:
        return timeout_s
    value = header.strip()
    if not value.isdigit() or int(value) < 1:
        raise ServeError(400, "bad_deadline", f"{DEADLINE_HEADER}: {header!r} is not a positive whole number of "
                         f"milliseconds; send e.g. {DEADLINE_HEADER}: 2000 (at most --timeout, {timeout_s:g} s)")
    return min(timeout_s, int(value) / 1000)


def decoded_bytes(data: bytes, max_pixels: int, where: str) -> int:
    """Bytes the image takes once decoded (w x h x max(channels, 3)), from its header; 400/413 as a decode would."""
    from PIL import Image

    from bincount.samples import BadImage, check_image_header

    try:
        check_image_header(data, max_pixels)  # not an image, truncated JPEG, above --max-pixels: refused as decode does
        with Image.open(io.BytesIO(data)) as img:
            (width, height), channels = img.size, len(img.getbands())
    except BadImage as e:
        reason = str(e)
        if reason.startswith("image too large"):
            raise ServeError(413, "image_too_large", f"{where}: {reason}; refused from the header") from None
        # the words a decode would use (check_image_header says "not an image", decode_image_bytes "cannot decode")
        raise ServeError(400, "bad_image", f"{where}: {reason.replace('not an image (', 'cannot decode (', 1)}") from None
    except Exception as e:  # PIL's header reader raises many types
        raise ServeError(400, "bad_image", f"{where}: cannot decode ({type(e).__name__}: {e})") from None
    return width * height * max(channels, 3)


class Admission:
    """The gate in front of the batcher: images queued, decoded bytes reserved, the model's recent batch time.

    Thread-safe: requests admit on the event loop, the batcher's thread reports images leaving the queue.
    """

    def __init__(self, budgets: Budgets, max_batch_size: int, metrics: Any = None) -> None:
        self.budgets, self.max_batch_size, self.metrics = budgets, max(1, int(max_batch_size)), metrics
        self._lock = threading.Lock()
        self.queued = 0  # images admitted and not yet taken into a batch (or dropped)
        self.reserved = 0  # decoded bytes held by requests still decoding
        self.batch_s: float | None = None  # recent model seconds per batch (None until one has run)
        self.busy = False  # a batch is in the model now

    def check_request(self, sizes: list[int]) -> None:
        """413 when the request's images, decoded, are above the per-request budget."""
        limit, total = self.budgets.max_request_decoded_bytes, sum(sizes)
        if total > limit:
            each = ", ".join(f"{s:,}" for s in sizes[:8]) + (", ..." if len(sizes) > 8 else "")
            raise ServeError(413, "decoded_too_large", f"the request's {len(sizes)} image(s) decode to {total:,} bytes "
                             f"({each}; width x height x channels from the headers), above the per-request budget of "
                             f"{limit:,} (--max-request-decoded-bytes); nothing was decoded")

    def estimate_s(self, images: int) -> float | None:
        """Seconds until ``images`` more (behind the queue) have been through the model; None before any batch."""
        if self.batch_s is None:
            return None
        batches = math.ceil((self.queued + images) / self.max_batch_size) + (1 if self.busy else 0)
        return batches * self.batch_s

    def retry_after(self) -> int:
        """Seconds until the queue as it is now has drained (at least 1).

        Why the whole drain time, not the moment there would be room for one more request: told the latter
        (1 s), 128 refused clients came back so often that the server spent itself refusing them and
        computed less than half of what it did with the drain time (measured, 2-core AMD EPYC)."""
        drain = self.estimate_s(0)
        return max(1, math.ceil(drain)) if drain is not None else 1

    def admit(self, images: int, nbytes: int, seconds_left: float) -> None:
        """Take ``images`` into the queue and reserve ``nbytes``, or raise :class:`Overloaded` saying which limit."""
        b = self.budgets
        with self._lock:
            if self.queued + images > b.max_queue_images:
                raise Overloaded(f"the queue holds {self.queued} image(s); {images} more would pass its limit of "
                                 f"{b.max_queue_images} (--max-queue); retry later", self.retry_after())
            wait = self.estimate_s(images)
            if wait is not None and wait > seconds_left * ADMIT_SHARE:
                raise Overloaded(f"the queue's estimated wait, {wait:.2f} s, does not fit in {ADMIT_SHARE:.0%} of this "
                                 f"request's deadline, {seconds_left:.2f} s left (--timeout, or {DEADLINE_HEADER}); "
                                 "retry later",
                                 self.retry_after())
            if self.reserved + nbytes > b.max_decoded_bytes:
                raise Overloaded(f"decoding holds {self.reserved:,} bytes; {nbytes:,} more would pass the server's "
                                 f"budget of {b.max_decoded_bytes:,} (--max-decoded-bytes); retry later",
                                 self.retry_after())
            self.queued += images
            self.reserved += nbytes
            self._publish()

    def release_bytes(self, nbytes: int) -> None:
        """The request has ended (answered, refused or abandoned): its decoded images are gone, and so is
        its decoded-bytes reservation."""
        with self._lock:
            self.reserved -= nbytes
            self._publish()

    def leave_queue(self, images: int) -> None:
        """``images`` left the queue: taken into a batch, dropped by the batcher, or never submitted."""
        if images:
            with self._lock:
                self.queued -= images
                self._publish()

    def batch_started(self) -> None:
        self.busy = True

    def batch_done(self, seconds: float) -> None:
        """The model's time for one batch, folded into the estimate."""
        with self._lock:
            self.busy = False
            self.batch_s = seconds if self.batch_s is None else (1 - EWMA) * self.batch_s + EWMA * seconds

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.queue.set(self.queued)
            self.metrics.decoded_bytes.set(self.reserved)
