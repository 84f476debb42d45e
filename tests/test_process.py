"""What every long-running process does at start: its loop is uvloop where installed."""

import asyncio

from outdial.process import run_process


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_a_process_runs_on_uvloop() -> None:
    # uvicorn[standard] installs uvloop on Linux; the dialer's media relay is costed on it.
    assert run_process(_loop_module()).startswith("uvloop")
