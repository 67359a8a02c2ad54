"""``Client`` and ``AsyncClient``: discovery with no configuration, and the two twins against a
real headless server (a ``dkron-lab agent`` subprocess): same methods, same answers, same
error classes."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.client import (
    DEFAULT_URL,
    AsyncClient,
    Client,
    Connection,
    discover,
    local_token,
)
from dkron_lab.errors import (
    InvalidSchedule,
    JobNotFound,
    QueryRefused,
    Unavailable,
    ValidationError,
)
from dkron_lab.testing import free_port
from tests.harness import Cluster

TOKEN = "client-test-token"
JOB = {
    "name": "twin",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "echo twin"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Cluster(tmp_path_factory.mktemp("client"), servers=1, api_token=TOKEN) as cluster:
        yield cluster.url("s1")


@pytest.fixture
def clean(server: str) -> Iterator[str]:
    yield server
    with Client(server, TOKEN) as client:
        for job in client.jobs():
            client.delete_job(job["name"])


# -- discovery -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty directory: no ./dkron.data of a real server is found."""
    monkeypatch.chdir(tmp_path)
    for name in ("DKRON_API_TOKEN", "DKRON_DATA_DIR", "DKRON_ADDRESS", "DKRON_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


def runtime_file(directory: Path, pid: int, **info: Any) -> Path:
    path = directory / f"jpserver-{pid}.json"
    path.write_text(json.dumps({"pid": pid, "token": "jtok"} | info))
    return path


def test_the_extension_s_variables_come_first(tmp_path: Path) -> None:
    runtime_file(tmp_path, 42, url="http://127.0.0.1:8888/")
    env = {
        "DKRON_LAB_URL": "http://127.0.0.1:9/base/dkron",
        "DKRON_LAB_TOKEN": "secret",
        "JPY_PARENT_PID": "42",
        "JUPYTER_RUNTIME_DIR": str(tmp_path),
        "DKRON_ADDRESS": "http://elsewhere:8080",
    }
    assert discover(env) == Connection("http://127.0.0.1:9/base/dkron", "secret", "DKRON_LAB_URL")


def test_then_the_runtime_file_of_the_parent_jupyter_server(tmp_path: Path) -> None:
    path = runtime_file(tmp_path, 42, url="http://localhost:8888/jh/user/a/")
    runtime_file(tmp_path, 43, url="http://localhost:9999/")  # another server: not ours
    env = {"JPY_PARENT_PID": "42", "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    assert discover(env) == Connection("http://localhost:8888/jh/user/a/dkron", "jtok", str(path))


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"url": "http+unix://%2Ftmp%2Fjp.sock/"}), json.dumps(["x"])],
)
def test_an_unusable_runtime_file_is_skipped(tmp_path: Path, content: str) -> None:
    (tmp_path / "jpserver-42.json").write_text(content)
    env = {"JPY_PARENT_PID": "42", "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    assert discover(env) == Connection(DEFAULT_URL, None, "default")


def test_then_the_cli_s_variables_then_the_default(tmp_path: Path) -> None:
    env = {"JPY_PARENT_PID": "7", "JUPYTER_RUNTIME_DIR": str(tmp_path)}  # no file for pid 7
    assert discover(env | {"DKRON_ADDRESS": "http://h:1", "DKRON_API_TOKEN": "t"}) == Connection(
        "http://h:1", "t", "DKRON_ADDRESS"
    )
    assert discover({}) == Connection(DEFAULT_URL, None, "default")


def a_server_data_dir(directory: Path, token: str) -> Path:
    directory.mkdir(mode=0o700)
    (directory / "api-token").write_text(token + "\n")
    (directory / "api-token").chmod(0o600)
    return directory


def test_the_token_a_local_server_generated_is_found(tmp_path: Path) -> None:
    a_server_data_dir(tmp_path / "dkron.data", "generated")
    assert discover({}) == Connection(DEFAULT_URL, "generated", "default")
    on_this_host = {"DKRON_ADDRESS": "http://localhost:9000"}
    assert discover(on_this_host) == Connection(
        "http://localhost:9000", "generated", "DKRON_ADDRESS"
    )
    assert discover({"DKRON_API_TOKEN": "given"}).token == "given"  # the variable wins
    with Client("http://127.0.0.1:8080") as client:  # a URL of this host, no token given
        assert client.connection.token == "generated"


def test_the_data_dir_may_be_named(tmp_path: Path) -> None:
    data = a_server_data_dir(tmp_path / "srv", "theirs")
    assert local_token(DEFAULT_URL, environ={"DKRON_DATA_DIR": str(data)}) == "theirs"
    assert local_token("http://10.0.0.1:8080", data_dir=data, environ={}) == "theirs"
    assert local_token(DEFAULT_URL, data_dir=tmp_path / "none", environ={}) is None


def test_a_local_token_is_not_sent_to_another_host(tmp_path: Path) -> None:
    a_server_data_dir(tmp_path / "dkron.data", "generated")
    remote = discover({"DKRON_ADDRESS": "http://10.0.0.1:8080"})
    assert remote == Connection("http://10.0.0.1:8080", None, "DKRON_ADDRESS")
    assert local_token("http://[::1]:8080", environ={}) == "generated"


def test_an_unreadable_ca_bundle_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CA bundle"):
        Client("https://127.0.0.1:1", tls_ca=tmp_path / "missing.pem")


def test_a_client_without_url_discovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKRON_LAB_URL", "http://127.0.0.1:1/dkron/")
    monkeypatch.setenv("DKRON_LAB_TOKEN", "s")
    with Client() as client:
        assert client.url == "http://127.0.0.1:1/dkron" and client.connection.token == "s"
    with Client(token="other") as client:  # an explicit token wins, with the found URL
        assert client.connection.token == "other"
    with Client("http://10.0.0.1:8080") as client:  # an explicit URL: no discovery
        assert client.connection == Connection("http://10.0.0.1:8080", None, "explicit")


# -- the twins -----------------------------------------------------------------------------------


def public_methods(client: Client | AsyncClient) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(client, name))
        for name in dir(client)
        if not name.startswith("_") and callable(getattr(client, name))
    }


async def test_the_twins_have_the_same_operations() -> None:
    async with AsyncClient("http://127.0.0.1:1") as aclient:
        asynchronous = public_methods(aclient)
    with Client("http://127.0.0.1:1") as client:
        sync = public_methods(client)
    operations = {n for n in sync if n not in ("close",)}
    assert operations == {n for n in asynchronous if n not in ("aclose",)}
    assert all(sync[n] == asynchronous[n] for n in operations)
    assert {"sql", "schedule_preview", "busy", "pause", "unpause", "skipped"} <= operations


def test_the_sync_client_against_a_server(clean: str) -> None:
    with Client(clean, TOKEN) as client:
        assert client.health() == {"status": "healthy"}
        assert client.put_job(JOB)["name"] == "twin"
        assert [j["name"] for j in client.jobs()] == ["twin"]
        assert client.run_job("twin", wait=True)["name"] == "twin"
        (execution,) = client.executions("twin")
        assert execution["success"] and "twin" in execution["output"]
        assert client.execution("twin", execution["id"])["id"] == execution["id"]
        assert client.set_enabled("twin", False)["disabled"] is True
        assert client.set_enabled("twin", False)["disabled"] is True
        assert client.toggle_job("twin")["disabled"] is False
        assert client.skipped("twin") == []
        assert client.busy() == []
        assert (client.pause(), client.paused(), client.unpause()) == (True, True, False)
        preview = client.schedule_preview("@every 1h", timezone="Europe/Paris", count=3)
        assert preview["timezone"] == "Europe/Paris" and len(preview["next"]) == 3
        assert client.members()[0]["Name"] == client.leader()["Name"] == "s1"
        assert client.info()["agent"]["name"] == "s1"
        assert client.request("GET", "/v1/jobs/twin")["name"] == "twin"
        assert client.delete_job("twin")["name"] == "twin"
        with pytest.raises(JobNotFound, match="twin"):
            client.job("twin")
        with pytest.raises(InvalidSchedule):
            client.put_job(JOB | {"schedule": "every so often"})


async def test_the_async_client_against_a_server(clean: str) -> None:
    async with AsyncClient(clean, TOKEN) as client:
        assert (await client.health()) == {"status": "healthy"}
        assert (await client.put_job(JOB))["name"] == "twin"
        assert [j["name"] for j in await client.jobs()] == ["twin"]
        await client.run_job("twin", wait=True)
        (execution,) = await client.executions("twin")
        assert execution["success"]
        assert (await client.set_enabled("twin", False))["disabled"] is True
        preview = await client.schedule_preview("@every 1h", count=2)
        assert len(preview["next"]) == 2
        assert (await client.members())[0]["Name"] == "s1"
        assert (await client.delete_job("twin"))["name"] == "twin"
        with pytest.raises(JobNotFound, match="twin"):
            await client.job("twin")
        with pytest.raises(InvalidSchedule):
            await client.put_job(JOB | {"schedule": "every so often"})


async def test_an_unreachable_server_is_unavailable_for_both() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(Unavailable, match="cannot reach"):
        client.jobs()
    async with AsyncClient(url) as aclient:
        with pytest.raises(Unavailable, match="cannot reach"):
            await aclient.jobs()


def test_sql_as_arrow_and_as_json(clean: str) -> None:
    with Client(clean, TOKEN) as client:
        try:
            table = client.sql("SELECT 42 AS answer, 'x' AS word")
        except JobNotFound:  # pragma: no cover - a server without the endpoint
            pytest.skip("no POST /v1/sql on this server")
        assert table.to_pylist() == [{"answer": 42, "word": "x"}]
        assert table.schema.metadata[b"dkron.truncated"] == b"false"
        many = client.sql("SELECT * FROM range(10)", max_rows=3)
        assert many.num_rows == 3 and many.schema.metadata[b"dkron.truncated"] == b"true"
        answer = client.sql("SELECT 42 AS answer", format="json")
        assert answer["rows"] == [[42]] and answer["columns"][0]["name"] == "answer"
        with pytest.raises(QueryRefused):
            client.sql("DELETE FROM executions")
        with pytest.raises(ValidationError, match="format"):
            client.sql("SELECT 1", format="csv")  # type: ignore[arg-type]


async def test_async_sql(clean: str) -> None:
    async with AsyncClient(clean, TOKEN) as client:
        table = await client.sql("SELECT 1 AS one")
        assert table.column("one").to_pylist() == [1]
