"""One lock for composing Hydra configs while trials launch from threads.

Why: an asynchronous sweep calls the launcher's ``launch`` from worker threads while the sweeper's
main thread composes the next trials, and Hydra's config loading and its ``Singleton`` state
(``HydraConfig``, the config search path) are process-wide, written with no lock of their own. Every
piece of bincount that composes or swaps that state during a sweep holds this lock; the jobs
themselves run outside it.
"""

from __future__ import annotations

import threading

COMPOSE_LOCK = threading.RLock()
