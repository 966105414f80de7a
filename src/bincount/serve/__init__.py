"""``bincount serve``: a model bundle behind SageMaker's inference contract (``GET /ping``, ``POST /invocations``).

Modules: :mod:`.inputs` (request bodies, their limits, images from bytes, base64 or ``s3://``),
:mod:`.admission` (queue, deadlines, decoded-bytes budgets: 503/413 before work), :mod:`.batcher` (the
dynamic batching queue and the model's worker thread), :mod:`.invoke` (``POST /invocations`` end to end),
:mod:`.connections` (header/body deadlines, keep-alive, the connection limit), :mod:`.metrics`
(``GET /metrics``), :mod:`.app` (routes and errors), :mod:`.cli` (the subcommand and uvicorn),
:mod:`.container` (the image's ``serve`` entry).

Why Starlette on uvicorn with a queue of our own, not LitServe: LitServe parses every body that is
not form data with ``request.json()``, so a raw ``image/jpeg`` or ``application/x-image`` body on
``/invocations`` (what SageMaker clients send) fails unless its private request handling is patched
(LitServe issue #732; the fix, PR #733, was closed). It also fails a whole batch for one bad input
(issue #340), and has no 415 for a wrong Content-Type. A queue is ~100 lines: see :mod:`.batcher`.
"""
