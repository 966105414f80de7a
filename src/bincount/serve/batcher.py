"""Dynamic batching: images from concurrent requests go through the model together, each answer to its own.

Why a thread and a plain queue: the model must never run on the event loop (``/ping`` has to answer
within 2 s while a batch runs), and torch releases the GIL inside its kernels, so one worker thread
keeps the device busy while the loop keeps accepting. Each image is queued with the asyncio future of
the request that sent it; the worker takes the first waiting image, then whatever is queued, and waits
for more (until ``max_batch_size``, or ``max_wait_ms`` after the first) only while requests announce
images still decoding (:meth:`Batcher.arriving`), runs ``predict_step`` once and resolves each future with its own
row (``loop.call_soon_threadsafe``: futures belong to the loop). A failing batch fails only its own
futures; the worker goes on. :meth:`Batcher.close` lets the queue drain before the thread ends.

Why the bundle's transform runs on this thread, not in the decoding threads: torch's CPU kernels run
on OpenMP, and every thread that enters a parallel region gets its own team of worker threads. Once the
decoding threads had teams too, there were more OpenMP threads than cores and libgomp stopped letting
idle workers spin; the forward's hundreds of small parallel regions then each paid a wake-up, and the
server's forward of one EfficientNet-Lite0 image at 224 px took 35 ms against 17 ms in a plain process
(2-core AMD EPYC; ``benchmarks/serve.py``, goal 2 of issue 28). Decoding (libjpeg-turbo, PIL) uses no
OpenMP, so it stays in the threads; resizing and normalising (torch) run here, before the forward.

Why images are checked again when taken: a request may have been abandoned while its images waited (its
client went away, or its deadline passed: :mod:`.admission`); such images are dropped here, before the
model, and counted, so the model only computes answers someone is still waiting for. ``hooks`` (the
app's :class:`~bincount.serve.admission.Admission`) hears when images leave the queue and how long the
model took; ``metrics`` (:mod:`.metrics`) gets batch sizes, queue and model latencies and images served.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from contextlib import contextmanager
from typing import Any

from bincount.answers import answer_rows
from bincount.serve.memory import release_free_memory

log = logging.getLogger("bincount.serve")
_STOP = object()
POLL_S = 0.0005  # how often a waiting batch re-checks whether anything is still decoding
IDLE_S = 1.0  # with nothing queued for this long after a burst, freed memory is given back


class PreprocessError(ValueError):
    """The bundle's transform refused one decoded image (its request gets 400; the batch's others go on)."""


class TooLate(Exception):
    """An image was dropped because its request's deadline passed, or would before its batch was done."""


class Abandon:
    """Set by a request that stopped waiting (``reason``: ``disconnect`` or ``deadline``); its images are dropped."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None


class Batcher:
    def __init__(self, model: Any, max_batch_size: int = 16, max_wait_ms: float = 5.0, hooks: Any = None,
                 metrics: Any = None, transform: Any = None, calibrate: bool = False,
                 after: threading.Thread | None = None, on_started: Any = None, start: bool = True) -> None:
        self.model, self.max_batch_size, self.max_wait = model, int(max_batch_size), max_wait_ms / 1000
        self.transform = transform  # applied here, on this thread, to each queued image (see the module's docstring)
        self.hooks, self.metrics = hooks, metrics
        self.dropped = 0  # images skipped because their request was abandoned
        self.counts = list(model.counts)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._arriving = 0  # images announced by requests and still decoding
        self.batches = self.images = 0  # served so far (the benchmark and the tests read them)
        self._since_trim = 0  # batches since freed memory was last given back
        self.calibrate = calibrate and transform is not None  # time batch sizes first (:mod:`.calibrate`)
        # the thread that loaded the model: timing waits for it to end, and its OpenMP team with it (see above)
        self._after = after if after is not threading.main_thread() else None
        self._on_started = on_started
        self._thread = threading.Thread(target=self._work, name="bincount-batcher", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the thread (for a batcher made with ``start=False``: its owner first keeps a reference to it,
        so ``on_started`` never runs before the owner can reach the batcher)."""
        self._thread.start()

    def submit(self, tensor: Any, ticket: list[int] | None = None, timing: dict | None = None,
               deadline: float | None = None, abandon: Abandon | None = None) -> asyncio.Future:
        """Queue one preprocessed image (3xHxW); the future gets its answer row. Call on the event loop.

        ``ticket`` (from :meth:`arriving`) is counted down only after the image is queued, so a batch
        that waits for announced images never sees one as neither arriving nor queued. ``timing``, if
        given, gets this image's ``queue_ms`` and ``model_ms`` and its ``batch`` size (``Server-Timing``).
        The image is dropped unanswered if, when a batch takes it, ``time.monotonic()`` is past ``deadline``
        or ``abandon.reason`` is set.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((tensor, future, loop, time.perf_counter(), timing, deadline, abandon))
        if ticket is not None:
            with self._lock:
                ticket[0] -= 1
                self._arriving -= 1
        return future

    async def predict(self, tensor: Any) -> dict[str, Any]:
        """The answer row for one preprocessed image, batched with whatever else is waiting."""
        return await self.submit(tensor)

    def close(self, timeout: float = 30.0) -> None:
        """Stop after every image already queued has its answer."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    @contextmanager
    def arriving(self, n: int):
        """Announce ``n`` images being decoded; a batch waits (up to the maximum wait) only for these.

        Yields the ticket to :meth:`submit` them with; those never submitted (a decode error) are
        withdrawn on exit.
        """
        ticket = [n]
        with self._lock:
            self._arriving += n
        try:
            yield ticket
        finally:
            with self._lock:
                self._arriving -= ticket[0]
                ticket[0] = 0

    def _take(self) -> tuple[list, bool]:
        """The next batch: what is queued, plus what is still decoding, up to the size and the wait.

        Why not always wait the maximum (as a fixed batching window does): with nothing else decoding,
        no one is coming, and a lone request would pay the whole wait in latency for nothing.
        """
        first = self._next()
        while first is not _STOP and not self._wanted(first):
            first = self._next()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            # read before looking: an image queued after the look was counted here as arriving (submit
            # queues, then counts down), so the batch waits for it instead of leaving it to the next one
            arriving = self._arriving
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if arriving <= 0 or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=min(left, POLL_S))
                except queue.Empty:
                    continue
            if item is _STOP:
                return batch, True
            if self._wanted(item):
                batch.append(item)
        return batch, False

    def _batch_s(self) -> float:
        """The recent time of one batch (0 before any has run): how long an image taken now has yet to wait."""
        recent = getattr(self.hooks, "batch_s", None)
        return recent or 0.0

    def _next(self) -> Any:
        """The next queued item; after ``IDLE_S`` with nothing queued, once per burst, freed memory goes back
        to the system (:mod:`.memory`) while waiting."""
        try:
            return self._queue.get(timeout=IDLE_S) if self._since_trim else self._queue.get()
        except queue.Empty:
            release_free_memory()
            self._since_trim = 0
            return self._queue.get()

    def _wanted(self, item: tuple) -> bool:
        """Whether a queued image still has someone waiting; an abandoned one is dropped and counted."""
        deadline, abandon = item[5], item[6]
        reason = abandon.reason if abandon is not None else None
        if reason is None and deadline is not None and time.monotonic() + self._batch_s() > deadline:
            reason = "deadline"  # passed, or would pass before this batch is done: no one would get the answer
        if self.hooks is not None:
            self.hooks.leave_queue(1)
        if reason is None:
            return True
        if reason == "deadline":  # its request hears it now, not at its deadline; its other images go too
            if abandon is not None:
                abandon.reason = "deadline"
            item[2].call_soon_threadsafe(_resolve, item[1], TooLate())
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.abandoned.labels(reason).inc()
        return False

    def _calibrate(self) -> None:
        """Cap batches at the size the model is fastest at here, timed on this thread (:mod:`.calibrate`)."""
        import torch

        from bincount.serve.calibrate import best_batch_size

        try:
            example = self.transform(torch.zeros(3, 400, 500, dtype=torch.uint8))  # an ABID photo's size
            self.max_batch_size, _ = best_batch_size(self.model, example, self.max_batch_size)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory at the largest size: keep the largest
            log.warning("timing batch sizes failed (%s: %s); batches stay capped at %d", type(e).__name__, e,
                        self.max_batch_size)
        if self.hooks is not None:
            self.hooks.max_batch_size = self.max_batch_size
        release_free_memory()  # the timing's batches are freed: the server starts at its idle size

    def _work(self) -> None:
        if self.calibrate:
            if self._after is not None:
                self._after.join()
            self._calibrate()
        if self._on_started is not None:
            self._on_started()
        stop = False
        while not stop:
            batch, stop = self._take()
            if not batch:
                continue
            start = time.perf_counter()
            if self.hooks is not None:
                self.hooks.batch_started()
            answers, forward = self._run(batch)
            done = time.perf_counter()
            preprocess_ms, model_ms = (forward - start) * 1000, (done - forward) * 1000
            self.batches += 1
            self._since_trim += 1
            self.images += len(batch)
            if self.hooks is not None:
                self.hooks.batch_done(done - start)
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch))
                self.metrics.latency.labels("preprocess").observe(preprocess_ms / 1000)
                self.metrics.latency.labels("model").observe(model_ms / 1000)
                self.metrics.images.inc(len(batch))
                for item in batch:
                    self.metrics.latency.labels("queue").observe(start - item[3])
            for (_, future, loop, queued, timing, *_), answer in zip(batch, answers):
                if timing is not None:
                    timing.update(queue_ms=(start - queued) * 1000, preprocess_ms=preprocess_ms, model_ms=model_ms,
                                  batch=len(batch))
                loop.call_soon_threadsafe(_resolve, future, answer)

    def _run(self, batch: list) -> tuple[list[Any], float]:
        """(one answer row or exception per image, when the forward started): the transform, then one forward.

        An image the transform refuses fails its own request (:class:`PreprocessError`); a failing forward
        (e.g. out of memory) fails the batch's requests; the server goes on either way."""
        import torch

        answers: list[Any] = [None] * len(batch)
        tensors = []
        for j, item in enumerate(batch):
            try:
                tensors.append(self.transform(item[0]) if self.transform is not None else item[0])
            except Exception as e:  # noqa: BLE001 - any transform error is this image's, not the server's
                answers[j] = PreprocessError(f"the bundle's transform failed: {type(e).__name__}: {e}")
        forward = time.perf_counter()
        ok = [j for j, answer in enumerate(answers) if answer is None]
        if ok:
            try:
                computed: list[Any] = answer_rows(self.model.predict(torch.stack(tensors)), self.counts)
            except Exception as e:  # noqa: BLE001
                log.error("a batch of %d failed: %s: %s", len(ok), type(e).__name__, e)
                computed = [e] * len(ok)
            for j, answer in zip(ok, computed):
                answers[j] = answer
        return answers, forward


def _resolve(future: asyncio.Future, answer: Any) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)
