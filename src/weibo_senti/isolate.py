"""Run a function in a fresh process: its peak memory and timings are its own."""

from __future__ import annotations

import multiprocessing as mp
import resource
from queue import Empty


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(queue, setup, fn, args, kwargs):
    import os

    os.environ.setdefault("WEIBO_SENTI_NO_PROGRESS", "1")  # a child process of our own
    try:
        if setup is not None:
            setup()
        queue.put(fn(*args, **kwargs))
    except BaseException as e:  # the parent must not wait forever on a dead child
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def run_isolated(fn, *args, setup=None, **kwargs):
    """``fn(*args, **kwargs)`` in a spawned process; its (dict) result, or SystemExit.

    ``setup``: called first in the child (the CLI passes its process settings: a spawned
    process inherits none of them)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, setup, fn, args, kwargs))
    proc.start()
    while True:  # a child that dies before it can answer must not leave us waiting forever
        try:
            result = queue.get(timeout=1.0)
            break
        except Empty:
            if not proc.is_alive():
                result = {"error": f"the child process died (exit code {proc.exitcode})"}
                break
    proc.join()
    if isinstance(result, dict) and "error" in result:
        from .errors import UserError

        raise UserError(f"{getattr(fn, '__name__', fn)} failed: {result['error']}")
    return result
