"""The API over TLS, and no open API on the network by accident (issue 10, point 4).

A private CA and a server certificate for 127.0.0.1 are made in the test with ``cryptography``;
the node (Raft, DuckDB) is real, behind ``serve``, called over real HTTPS:

- ``--tls-cert``/``--tls-key`` serve HTTPS that a client trusting the CA accepts; plain HTTP on
  that port gets no answer, and a client that does not trust the CA refuses the server;
- a certificate without its key, or a key that does not load, stops the start with a message;
- ``--no-auth`` on an address beyond loopback over plain HTTP refuses to start (in process and
  as a real ``dkron-lab agent``) unless ``--allow-insecure-remote`` says so, or TLS is on.

Each failed before this commit's fix: there was no TLS, and an open API listened anywhere.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dkron_lab.credentials import ConfigError
from dkron_lab.testing import auth_headers, free_port
from tests.security.certs import Pki, make_pki
from tests.security.conftest import StartApi


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_https_with_the_ca_and_nothing_in_clear(start_api: StartApi, pki: Pki) -> None:
    api = await start_api(tls_cert=pki.cert, tls_key=pki.key)
    token = auth_headers(api.node.api_token)
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    async with httpx.AsyncClient(verify=trusted, timeout=10, trust_env=False) as https:
        base = f"https://127.0.0.1:{api.port}"
        assert (await https.get(f"{base}/v1/jobs")).status_code == 401  # TLS is not a token
        job = {"name": "tls", "schedule": "@manually", "executor": "shell",
               "executor_config": {"command": "true"}}  # fmt: skip
        created = await https.post(f"{base}/v1/jobs", json=job, headers=token)
        assert created.status_code == 201, created.text
        listed = await https.get(f"{base}/v1/jobs", headers=token)
        assert [j["name"] for j in listed.json()] == ["tls"]
        localhost = await https.get(f"https://localhost:{api.port}/health")
        assert localhost.status_code == 200
    async with httpx.AsyncClient(timeout=10, trust_env=False) as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://127.0.0.1:{api.port}/v1/jobs", headers=token)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await plain.get(f"https://127.0.0.1:{api.port}/health")  # the system CAs only


async def test_a_certificate_needs_its_key(start_api: StartApi, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        await start_api(tls_cert=pki.cert)
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        await start_api(tls_key=pki.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        await start_api(tls_cert=pki.cert, tls_key=garbage)


async def test_no_auth_beyond_loopback_needs_tls_or_the_flag_spelled_out(
    start_api: StartApi, pki: Pki
) -> None:
    with pytest.raises(ConfigError) as refused:
        await start_api(host="0.0.0.0", no_auth=True)
    assert "--allow-insecure-remote" in refused.value.message
    assert "--no-auth" in refused.value.message
    insecure = await start_api(host="0.0.0.0", no_auth=True, allow_insecure_remote=True)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        opened = await http.get(f"http://127.0.0.1:{insecure.port}/v1/jobs")
        assert opened.status_code == 200
    encrypted = await start_api(host="0.0.0.0", no_auth=True, tls_cert=pki.cert, tls_key=pki.key)
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    async with httpx.AsyncClient(verify=trusted, timeout=10, trust_env=False) as https:
        opened = await https.get(f"https://127.0.0.1:{encrypted.port}/v1/jobs")
        assert opened.status_code == 200
    loopback = await start_api(no_auth=True)  # the drop-in default: loopback, as Dkron OSS
    assert loopback.node.api_token == ""


def test_the_agent_refuses_to_start_open_on_the_network(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--config", str(empty), "--server"]
    args += ["--bootstrap-expect", "1", "--data-dir", str(tmp_path / "data"), "--no-auth"]
    args += ["--http-addr", f"0.0.0.0:{free_port()}", "--bind-addr", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "--allow-insecure-remote" in done.stderr
    assert "Traceback" not in done.stderr
