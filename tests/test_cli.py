"""The operator CLI, run as the real `outdial` console script against SQLite and PostgreSQL.

Starting the script costs about a second of CPU, so each backend's invocations run once, as
concurrently as their order allows (the `runs` fixture), and the tests assert on what they did.
Checks that never reach a database (option bounds) run the same command in-process."""

import asyncio
import json
import os
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from typer.testing import CliRunner

from outdial import cli as cli_module
from outdial.app import create_app
from outdial.config import Settings, get_settings
from outdial.db import create_engine
from outdial.keys.models import ApiKey
from outdial.keys.service import digest
from outdial.tenants.models import Tenant
from tests.conftest import PG_ADMIN_DSN, ROOT


def cli_command() -> list[str]:
    """How to run the `outdial` console script that pyproject.toml declares."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, attr = scripts["outdial"].split(":")
    assert (module, attr) == ("outdial.cli", "app")
    script = Path(sys.executable).parent / "outdial"
    if script.exists():
        return [str(script)]
    # installed without its script: the same entry point through the interpreter
    code = f"import sys; sys.argv[0] = 'outdial'; from {module} import {attr}; {attr}()"
    return [sys.executable, "-c", code]


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)


@dataclass
class Cli:
    backend: str
    database_url: str
    workdir: Path

    async def __call__(self, *args: str) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
        env |= {"OUTDIAL_DATABASE_URL": self.database_url, "COLUMNS": "200", "NO_COLOR": "1"}
        process = await asyncio.create_subprocess_exec(
            *cli_command(),
            *args,
            env=env,
            cwd=self.workdir,  # so that no stray .env is read
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return Result(args, process.returncode, stdout.decode(), stderr.decode())

    @asynccontextmanager
    async def api(self) -> AsyncIterator[httpx.AsyncClient]:
        """The API over the same database, in-process."""
        application = create_app(Settings(database_url=self.database_url))
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://cli.test") as c:
                yield c

    async def scalar(self, stmt: Any) -> Any:
        engine = create_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                return await conn.scalar(stmt)
        finally:
            await engine.dispose()


@asynccontextmanager
async def backend_database(backend: str, workdir: Path) -> AsyncIterator[str]:
    """A database of its own for the CLI, which nothing has migrated yet."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'outdial.db'}"
        return
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    name = f"outdial_cli_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


UNKNOWN = "ten_doesnotexist"

# Refused while parsing arguments, before any database is opened: run on SQLite only.
BAD_ARGUMENTS = {
    "add-credits-not-a-number": (("credits", "add", "{tenant}", "lots"), "'lots' is not a number"),
}
# Refused by the database's answer: run on every backend.
UNKNOWN_TENANT = {
    "add-unknown-tenant": (("credits", "add", UNKNOWN, "5"), f"No tenant {UNKNOWN}"),
    "update-unknown-tenant": (
        ("tenant", "update", UNKNOWN, "--max-concurrency", "2"),
        f"No tenant {UNKNOWN}",
    ),
}


@dataclass
class Runs:
    create: Result
    update: Result
    add: Result
    bad: dict[str, tuple[Result, str]] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str:
        return self.create.json()["tenant_id"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.create.json()['api_key']}"}


async def run_all(cli: Cli) -> Runs:
    """`tenant create` on the fresh database (it migrates the schema itself), then at once:
    `tenant update`, `credits add` and the bad invocations."""
    create = await cli(
        "tenant",
        "create",
        "--name",
        "Acme Calls",
        "--credits",
        "5",
        "--max-concurrency",
        "3",
        "--calls-per-second",
        "2",
    )
    tenant_id = create.json()["tenant_id"]
    bad_cases = dict(UNKNOWN_TENANT)
    if cli.backend == "sqlite":
        bad_cases |= BAD_ARGUMENTS
    bad_args = [tuple(a.format(tenant=tenant_id) for a in args) for args, _ in bad_cases.values()]
    update, add, *bad = await asyncio.gather(
        cli("tenant", "update", tenant_id, "--max-concurrency", "9", "--calls-per-second", "1.5"),
        cli("credits", "add", tenant_id, "2.5"),
        *(cli(*args) for args in bad_args),
    )
    return Runs(
        create=create,
        update=update,
        add=add,
        bad={
            name: (result, expected)
            for (name, (_, expected)), result in zip(bad_cases.items(), bad, strict=True)
        },
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def cli(request: pytest.FixtureRequest, tmp_path_factory) -> AsyncIterator[Cli]:
    """The CLI against a database of its own, which nothing has migrated yet."""
    if request.param == "postgresql":
        try:
            await (await asyncpg.connect(PG_ADMIN_DSN, timeout=5)).close()
        except (OSError, asyncpg.PostgresError) as exc:
            problem = f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(problem)
            pytest.skip(problem)
    workdir = tmp_path_factory.mktemp(f"cli-{request.param}")
    async with backend_database(request.param, workdir) as url:
        yield Cli(request.param, url, workdir)


@pytest.fixture(scope="module")
async def runs(cli: Cli) -> Runs:
    return await run_all(cli)


async def me_and_balance(cli: Cli, runs: Runs) -> tuple[dict[str, Any], dict[str, Any]]:
    async with cli.api() as client:
        me = await client.get("/v1/auth/me", headers=runs.headers)
        balance = await client.get("/v1/billing/balance", headers=runs.headers)
    assert me.status_code == 200, me.text
    assert balance.status_code == 200, balance.text
    return me.json(), balance.json()


async def test_tenant_create_prints_one_json_object_and_nothing_else(cli: Cli, runs: Runs) -> None:
    stdout = runs.create.stdout
    assert runs.create.returncode == 0, runs.create.stderr
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    body = json.loads(stdout)
    assert isinstance(body, dict)
    assert set(body) == {"tenant_id", "api_key"}
    assert body["tenant_id"].startswith("ten_")
    assert body["api_key"].startswith("sb_secret_")
    assert len(body["api_key"]) > len("sb_secret_") + 30

    me, _ = await me_and_balance(cli, runs)
    assert me["tenant_id"] == body["tenant_id"]
    assert me["tenant_name"] == "Acme Calls"
    assert me["key_type"] == "secret"
    # The key is kept only as its digest.
    stored = await cli.scalar(select(ApiKey.digest).where(ApiKey.id == me["key_id"]))
    assert stored == digest(body["api_key"])


async def test_the_key_works_against_the_api(cli: Cli, runs: Runs) -> None:
    async with cli.api() as client:
        agent = await client.post("/v1/agents", json={"name": "A"}, headers=runs.headers)
        assert agent.status_code == 201, agent.text
        listed = await client.get("/v1/agents", headers=runs.headers)
        assert [a["id"] for a in listed.json()["data"]] == [agent.json()["id"]]
        wrong = await client.get("/v1/agents", headers={"Authorization": "Bearer sb_secret_x"})
        assert wrong.status_code == 401


async def test_tenant_update_changes_limits(cli: Cli, runs: Runs) -> None:
    assert runs.update.json() == {
        "tenant_id": runs.tenant_id,
        "max_concurrency": 9,
        "calls_per_second": 1.5,
    }
    me, _ = await me_and_balance(cli, runs)
    assert (me["max_concurrency"], me["calls_per_second"]) == (9, 1.5)  # created with 3 and 2


async def test_credits_add_tops_up(cli: Cli, runs: Runs) -> None:
    assert runs.add.json() == {"tenant_id": runs.tenant_id, "balance": 7.5}
    _, balance = await me_and_balance(cli, runs)
    assert balance == {"balance": 7.5, "available": 7.5, "held": 0.0, "is_active": True}


async def test_bad_input_exits_non_zero_and_changes_nothing(cli: Cli, runs: Runs) -> None:
    expected_cases = set(UNKNOWN_TENANT) | (
        set(BAD_ARGUMENTS) if cli.backend == "sqlite" else set()
    )
    assert set(runs.bad) == expected_cases
    for name, (result, message) in runs.bad.items():
        assert result.returncode != 0, name
        assert result.stdout == "", name
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
    # What the good invocations did, and nothing more.
    me, balance = await me_and_balance(cli, runs)
    assert balance["balance"] == 7.5
    assert (me["max_concurrency"], me["calls_per_second"]) == (9, 1.5)
    assert await cli.scalar(select(func.count()).select_from(Tenant)) == 1


# --- in-process: option bounds, refused before any database is opened -------------------


@pytest.fixture
def runner(tmp_path, monkeypatch) -> Iterator[CliRunner]:
    """The same command in-process, against an SQLite file that must stay untouched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", f"sqlite:///{tmp_path / 'untouched.db'}")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
    assert not (tmp_path / "untouched.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenant", "create", "--name", "X", "--credits", "five"], "'five' is not a number"),
        (["tenant", "create", "--name", "X", "--credits", "-1"], "non-negative"),
        (["tenant", "create", "--name", "X", "--credits", "NaN"], "non-negative"),
        (["tenant", "create", "--name", "X", "--credits", "1e30"], "at most"),
        (["tenant", "create", "--name", "X", "--credits", "0.0000001"], "6 decimal places"),
        (["tenant", "create", "--name", "   "], "1 to 200 characters"),
        (["tenant", "create", "--name", "x" * 201], "1 to 200 characters"),
        (["tenant", "create", "--name", "X", "--max-concurrency", "0"], "--max-concurrency"),
        (["tenant", "create", "--name", "X", "--max-concurrency", "10000000000"], "100000"),
        (["tenant", "create", "--name", "X", "--calls-per-second", "inf"], "--calls-per-second"),
        (["tenant", "create", "--name", "X", "--calls-per-second", "nan"], "--calls-per-second"),
        (["tenant", "create", "--name", "X", "--calls-per-second", "0"], "--calls-per-second"),
        (["tenant", "update", "ten_x", "--max-concurrency", "many"], "--max-concurrency"),
        (["tenant", "update", "ten_x", "--calls-per-second", "-1"], "--calls-per-second"),
        (["credits", "add", "ten_x", "0"], "positive"),
        (["credits", "add", "ten_x", "--", "-3"], "positive"),
        (["credits", "add", "ten_x", "Infinity"], "positive"),
        (["credits", "add", "ten_x", "1e30"], "at most"),
        (["tenant", "create"], "--name"),
        (["credits", "add", "ten_x"], "Missing argument 'amount'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_out_of_bounds_options_are_refused(runner: CliRunner, args, message) -> None:
    result = runner.invoke(cli_module.app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert message in result.stderr, result.stderr


def test_an_unreachable_database_is_a_message_not_a_traceback(runner, monkeypatch) -> None:
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    get_settings.cache_clear()
    result = runner.invoke(cli_module.app, ["credits", "add", "ten_x", "5"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("database error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_messages_are_printed_verbatim(runner, monkeypatch, tmp_path) -> None:
    """A tenant id is echoed as given, even when it looks like console markup."""
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    get_settings.cache_clear()
    result = runner.invoke(cli_module.app, ["credits", "add", "[/bold]ten_x", "5"])
    assert result.exit_code == 1, result.stderr
    assert result.stderr.strip() == "error: No tenant [/bold]ten_x."
