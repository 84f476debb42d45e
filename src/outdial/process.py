"""What every long-running outdial process does once it has started."""

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def freeze_startup_objects() -> None:
    """Keep what the process loaded at start-up out of the garbage collector's way: its full
    collections then scan only what serving creates. Without it they paused a dialer's event
    loop for 150-450 ms, handing back every dial due meanwhile (bench/dialer.py)."""
    gc.collect()
    gc.freeze()


def run_process(main: Coroutine[Any, Any, T]) -> T:
    """Run a long-lived process's main coroutine on uvloop where it is installed (it comes with
    uvicorn[standard], and the API server runs on it too): a dialer's media relay costs 1.5-2x
    less CPU per call-second on it than on asyncio's own loop (bench/media.py)."""
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not support (Windows)
        return asyncio.run(main)
    return uvloop.run(main)
