"""A process pool for batch jobs (synthesis, featurisation) that fails loudly instead of hanging.

``concurrent.futures`` raises ``BrokenProcessPool`` when a worker dies, where ``multiprocessing.Pool``
would respawn it forever. Workers are forked on POSIX (engines load lazily inside each worker, after
the fork), so scripts without an ``if __name__ == "__main__"`` guard work too; ``spawn`` elsewhere.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def pool_map(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int, chunksize: int = 4) -> Iterator[Any]:
    """``map(fn, jobs)`` in order, on ``workers`` processes (in-process when ``workers <= 1``)."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(method)) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)
