"""Run `sipp` (Debian's sip-tester) as a real SIP peer on loopback, for the `sip` provider's
tests: one scenario from tests/telephony/sipp/, on a free UDP port, for a given number of
calls. sipp exits 0 only if every call followed the scenario."""

import asyncio
import errno
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).parent / "sipp"
HOST = "127.0.0.1"


def require_sipp() -> None:
    """Fail when sipp is missing (`make test` installs it): these tests are the proof."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: `make test` installs Debian's sip-tester")


def scenario_from_template(name: str, out_dir: Path, **fields: str) -> Path:
    """A copy of a template scenario with its placeholders (e.g. STATUS) filled in."""
    text = (SCENARIOS / name).read_text()
    for placeholder, value in fields.items():
        text = text.replace(placeholder, value)
    path = out_dir / f"{Path(name).stem}-{'-'.join(fields.values()).replace(' ', '_')}.xml"
    path.write_text(text)
    return path


@dataclass
class Sipp:
    process: asyncio.subprocess.Process
    port: int
    logs: Path

    @property
    def trunk(self) -> str:
        """The OUTDIAL_SIP_TRUNK that reaches this peer."""
        return f"sip:{HOST}:{self.port}"

    async def exit_code(self, within: float = 20.0) -> int:
        """Wait for sipp to finish its calls; its exit code (0: every call as scripted)."""
        return await asyncio.wait_for(self.process.wait(), within)

    def errors(self) -> str:
        """sipp's error log and message trace, for assertion messages."""
        parts = [p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log"))]
        return "\n".join(parts)[-6000:]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


@asynccontextmanager
async def sipp(
    scenario: str | Path, logs: Path, *args: str, calls: int = 1, port: int | None = None
) -> AsyncIterator[Sipp]:
    """Start sipp as a UAS with this scenario, its logs in the existing folder `logs`; yields
    once it is listening (on `port`, if given: one a test has dialed with nothing there).
    Killed on exit if it is still running."""
    require_sipp()
    path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
    for _ in range(5):
        chosen = port or _free_udp_port()
        process = await asyncio.create_subprocess_exec(
            "sipp",
            *("-sf", str(path), "-i", HOST, "-p", str(chosen), "-m", str(calls)),
            *("-nostdin", "-timeout", "30", "-timeout_error"),
            *("-trace_err", "-error_file", str(logs / "errors.log")),
            *("-trace_msg", "-message_file", str(logs / "messages.log")),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=logs,
        )
        for _ in range(200):
            if _bound(chosen) or process.returncode is not None:
                break
            await asyncio.sleep(0.01)
        if process.returncode is None and _bound(chosen):
            break
        await process.wait()  # the port was taken in the meantime: try another
    else:
        raise RuntimeError("sipp did not start")
    try:
        yield Sipp(process, chosen, logs)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
