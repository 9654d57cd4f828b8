"""Parallel work: a process pool for batch jobs that fails loudly instead of hanging, and the
distributed-training helpers every stage shares (which rank am I, this rank's share, gather to all).

``concurrent.futures`` raises ``BrokenProcessPool`` when a worker dies, where ``multiprocessing.Pool``
would respawn it forever. Workers are forked on POSIX (engines load lazily inside each worker, after
the fork), so scripts without an ``if __name__ == "__main__"`` guard work too; ``spawn`` elsewhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def pool_map(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int, chunksize: int = 4) -> Iterator[Any]:
    """``map(fn, jobs)`` in order, on ``workers`` processes (in-process when ``workers <= 1``)."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(method)) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


MAX_DEFAULT_THREADS = 4  # a judgement, not measured: our models are small (≤ 135M, a few layers)


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many of the machine's cores were busy over the next ``seconds``, from the CPU time counters of
    ``/proc/stat`` (None where there is none: not Linux)."""
    def counters() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = counters()
        time.sleep(seconds)
        total1, idle1 = counters()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / total) if total > 0 else 0.0


def default_threads() -> int:
    """torch's intra-op thread count when the user names none: ``OMP_NUM_THREADS`` if set, else the cores
    this process may use minus the cores busy right now (:func:`busy_cores`, half a second; the 1-minute
    load average where that is unavailable), rounded, between 1 and :data:`MAX_DEFAULT_THREADS`. torch's
    own default (every core) oversubscribes a busy machine: measured on a 2-core machine at load ≈ 3–4,
    40 AdamW steps of a 512→1024→512 MLP (batch 64) took 0.47–0.57 s with 1 thread and 2.0–3.4 s with 2.
    The load average lags: just after ``pip install`` or any minute of work it still reads ≈ 0.7 on an idle
    2-core machine, which left the ASR recipe (2026-12-05) on one of two idle cores."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    busy = busy_cores()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(MAX_DEFAULT_THREADS, round(usable_cores() - busy)))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`) before any work;
    returns the number set (``run.json`` records it)."""
    import torch

    n = default_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def fixed_threads(threads: int = 1) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block (restored after), for a computation
    whose result must not depend on ``--threads``: some kernels split a reduction by thread count, so
    the last bits depend on it (measured: SmolLM2's NLL of one judged continuation, 2.3474969 at 1
    thread, 2.3474977 at 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def output_to(log: str | Path) -> None:
    """This process's stdout and stderr (progress bars, warnings) appended to ``log`` from now on: for a
    process working beside others, whose output would interleave with theirs."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2)


@contextlib.contextmanager
def beside(target: Callable[..., None], args: tuple[Any, ...], log: str | Path) -> Iterator[None]:
    """``target(*args)`` in a second (spawned) process while the block runs, its output in ``log``, this
    process on one torch thread fewer meanwhile (at least one); after the block, wait for it and raise
    naming ``log`` if it failed. If the block raises, the second process is stopped."""
    import torch

    process = mp.get_context("spawn").Process(target=_logged, args=(target, args, str(log)), daemon=True)
    process.start()
    try:
        with fixed_threads(max(1, torch.get_num_threads() - 1)):
            yield
    except BaseException:
        process.terminate()
        process.join()
        raise
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{getattr(target, '__name__', target)} failed beside this process "
                           f"(exit code {process.exitcode}); its log: {log}")


def _logged(target: Callable[..., None], args: tuple[Any, ...], log: str) -> None:
    output_to(log)
    target(*args)


def process_state():
    """accelerate's process state (rank, world size). Built with ``cpu=True`` on a machine without CUDA
    — a first ``PartialState()`` without it would fix the process group to none, and a later
    ``Accelerator(cpu=True)`` could no longer join the gloo group ``accelerate launch`` set up."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank_share(items: Sequence[T], state: Any = None) -> list[T]:
    """This rank's contiguous, equal share of a global batch (``len(items)`` must divide by the world
    size, so that DDP's gradient average is the global batch's)."""
    state = state or process_state()
    n, world = len(items), state.num_processes
    if n % world:
        raise ValueError(f"a global batch of {n} does not split evenly over {world} processes; "
                         f"choose a batch size divisible by {world}")
    k = n // world
    return list(items[state.process_index * k:(state.process_index + 1) * k])


def all_gather_list(items: list[T], state: Any = None) -> list[T]:
    """Every rank's ``items`` concatenated in rank order, on every rank (itself when single-process)."""
    state = state or process_state()
    if state.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(items))


def local_launch_command(script: str, args: list[str], num_processes: int) -> list[str]:
    """``accelerate launch`` of ``script`` on ``num_processes`` local processes (beside this python).
    ``--multi_gpu`` starts torchrun, and on a machine without CUDA the trainers' ``Accelerator(cpu=True)``
    then joins a gloo process group (``--cpu`` with several processes means mpirun in accelerate 1.15);
    one process is launched without it (accelerate refuses ``--multi_gpu`` for one)."""
    import socket
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    multi = ["--multi_gpu"] if num_processes > 1 else []
    return [str(Path(sys.executable).with_name("accelerate")), "launch", *multi, "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(port), script, *args]
