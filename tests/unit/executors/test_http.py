"""The http executor against a real tornado server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dkron_lab.errors import InvalidJob
from dkron_lab.executors.http import HttpExecutor, parse_config
from dkron_lab.plugins import ExecutionRequest, Executor, ExecutorResult


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello ok")


class Status(tornado.web.RequestHandler):
    def get(self, code: str) -> None:
        self.set_status(int(code))
        self.write(f"status {code}")


class Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        self.write(
            {
                "method": self.request.method,
                "headers": dict(self.request.headers),
                "body": self.request.body.decode(),
            }
        )


class Big(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(b"a" * 100_000 + b"b" * 1000)


class Hang(tornado.web.RequestHandler):
    """Answers nothing until the client goes away."""

    async def get(self) -> None:
        self.gone = asyncio.Event()
        await self.gone.wait()

    def on_connection_close(self) -> None:
        self.gone.set()


ROUTES = [
    (r"/hello", Hello),
    (r"/status/(\d+)", Status),
    (r"/echo", Echo),
    (r"/big", Big),
    (r"/hang", Hang),
]


async def serve(
    ssl_options: ssl.SSLContext | None = None,
) -> tuple[str, tornado.httpserver.HTTPServer]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application(ROUTES), ssl_options=ssl_options)
    server.add_sockets(sockets)
    scheme = "https" if ssl_options else "http"
    return f"{scheme}://127.0.0.1:{sockets[0].getsockname()[1]}", server


async def stop(server: tornado.httpserver.HTTPServer) -> None:
    server.stop()
    await server.close_all_connections()


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    url, server = await serve()
    yield url
    await stop(server)


@pytest.fixture
async def executor() -> AsyncIterator[HttpExecutor]:
    plugin = HttpExecutor()
    yield plugin
    await plugin.aclose()


async def run(
    executor: HttpExecutor, config: Mapping[str, str], output_limit: int = 256_000
) -> tuple[ExecutorResult, bytes]:
    chunks: list[bytes] = []
    request = ExecutionRequest(
        job_name="hook", execution_id="1-node", config=config, output_limit=output_limit
    )
    result = await executor.execute(request, chunks.append)
    return result, b"".join(chunks)


def test_is_an_executor() -> None:
    assert isinstance(HttpExecutor(), Executor)


async def test_get_ok(executor: HttpExecutor, base_url: str) -> None:
    result, streamed = await run(executor, {"method": "GET", "url": f"{base_url}/hello"})
    assert result == ExecutorResult(success=True, output=b"hello ok")
    assert streamed == b"hello ok"


async def test_any_status_is_success_without_expect_code(
    executor: HttpExecutor, base_url: str
) -> None:
    result, _ = await run(executor, {"method": "GET", "url": f"{base_url}/status/500"})
    assert result.success and result.output == b"status 500"


async def test_expect_code_match(executor: HttpExecutor, base_url: str) -> None:
    config = {"method": "GET", "url": f"{base_url}/status/206", "expectCode": "200, 206"}
    result, _ = await run(executor, config)
    assert result.success


async def test_expect_code_mismatch(executor: HttpExecutor, base_url: str) -> None:
    config = {"method": "GET", "url": f"{base_url}/status/404", "expectCode": "200,206"}
    result, _ = await run(executor, config)
    assert not result.success
    assert result.output == b"status 404"
    assert result.error == ("received response code 404 does not match the expected code (200,206)")


async def test_expect_code_is_not_a_substring_match(executor: HttpExecutor, base_url: str) -> None:
    # Dkron checks strings.Contains("1200,", "200,"): we compare numbers.
    config = {"method": "GET", "url": f"{base_url}/status/200", "expectCode": "1200"}
    with pytest.raises(InvalidJob):
        executor.validate(config)


async def test_expect_body_match_and_mismatch(executor: HttpExecutor, base_url: str) -> None:
    url = f"{base_url}/hello"
    matched, _ = await run(executor, {"method": "GET", "url": url, "expectBody": r"h\w+o ok$"})
    missed, _ = await run(executor, {"method": "GET", "url": url, "expectBody": "^bye"})
    assert matched.success
    assert not missed.success
    assert missed.error == "received response body did not match the expected body /^bye/"


async def test_post_body_and_headers_with_colons(executor: HttpExecutor, base_url: str) -> None:
    headers = [
        "Content-Type: application/json",
        "X-Callback: http://example.com:8080/x",
        "X-Empty:",
    ]
    config = {
        "method": "POST",
        "url": f"{base_url}/echo",
        "headers": json.dumps(headers),
        "body": '{"a": 1}',
    }
    result, _ = await run(executor, config)
    echoed = json.loads(result.output)
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"a": 1}'
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert echoed["headers"]["X-Callback"] == "http://example.com:8080/x"


async def test_debug_prefixes_the_config(executor: HttpExecutor, base_url: str) -> None:
    headers = '["X-One: 1", "X-Two: \\"two\\""]'
    config = {"method": "GET", "url": f"{base_url}/hello", "debug": "yes", "headers": headers}
    result, _ = await run(executor, config)
    assert result.output.decode().splitlines() == [
        "Config:",
        "  debug: yes",
        "  header: X-One: 1",
        '  header: X-Two: "two"',  # as written, not escaped: the runner masks secrets in it
        "  method: GET",
        f"  url: {base_url}/hello",
        "hello ok",
    ]


async def test_output_keeps_the_tail(executor: HttpExecutor, base_url: str) -> None:
    result, streamed = await run(
        executor, {"method": "GET", "url": f"{base_url}/big"}, output_limit=1500
    )
    assert result.output == b"a" * 500 + b"b" * 1000
    assert len(streamed) == 101_000


async def test_timeout(executor: HttpExecutor, base_url: str) -> None:
    started = asyncio.get_running_loop().time()
    result, _ = await run(executor, {"method": "GET", "url": f"{base_url}/hang", "timeout": "1"})
    assert not result.success
    assert result.error == f"GET {base_url}/hang: no complete response within 1s timeout"
    assert asyncio.get_running_loop().time() - started < 3


async def test_connection_refused(executor: HttpExecutor) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, _ = await run(executor, {"method": "GET", "url": f"http://127.0.0.1:{port}/"})
    assert not result.success
    assert result.error.startswith(f"GET http://127.0.0.1:{port}/: ConnectError")


async def test_invalid_config_at_run_time_is_a_failed_result(executor: HttpExecutor) -> None:
    result, _ = await run(executor, {"method": "GET"})
    assert not result.success and '"url" is required' in result.error


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"url": "http://x/"}, '"method" is required'),
        ({"method": "GET"}, '"url" is required'),
        ({"method": "GE T", "url": "http://x/"}, "not an HTTP method"),
        ({"method": "GET", "url": "ftp://x/"}, "absolute http:// or https:// URL"),
        ({"method": "GET", "url": "/relative"}, "absolute http:// or https:// URL"),
        ({"method": "GET", "url": "http://x/", "headers": "[not json"}, "is not JSON"),
        ({"method": "GET", "url": "http://x/", "headers": '{"a": "b"}'}, "JSON array of strings"),
        ({"method": "GET", "url": "http://x/", "headers": '["NoColon"]'}, '"Name: value"'),
        ({"method": "GET", "url": "http://x/", "headers": '["X: a\\nb"]'}, '"Name: value"'),
        ({"method": "GET", "url": "http://[::1/"}, "not a valid URL"),
        ({"method": "GET", "url": "http://x:abc/"}, "not a valid URL"),
        ({"method": "GET", "url": "http://x/", "timeout": "1.5"}, "whole seconds"),
        ({"method": "GET", "url": "http://x/", "timeout": "-1"}, "whole seconds"),
        ({"method": "GET", "url": "http://x/", "expectCode": "ok"}, "status codes"),
        ({"method": "GET", "url": "http://x/", "expectBody": "("}, "is not a regex"),
        ({"method": "GET", "url": "http://x/", "tlsNoVerifyPeer": "maybe"}, "tlsNoVerifyPeer"),
        ({"method": "GET", "url": "http://x/", "tlsCertificateKeyFile": "k.pem"}, "needs"),
    ],
)
def test_validate_rejects(config: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidJob) as raised:
        HttpExecutor().validate(config)
    assert fragment in str(raised.value)


def test_parse_config_defaults_and_zero_timeout() -> None:
    assert parse_config({"method": "GET", "url": "http://x/"}).timeout == 30
    assert parse_config({"method": "GET", "url": "http://x/", "timeout": "0"}).timeout is None


async def test_pool_is_bounded_and_closes_evicted_clients(base_url: str, tmp_path: Path) -> None:
    executor = HttpExecutor(pool_size=1)
    ca = _write_self_signed(tmp_path, "ca")
    try:
        await run(executor, {"method": "GET", "url": f"{base_url}/hello"})
        first = executor._pool._entries[next(iter(executor._pool._entries))].client
        await run(executor, {"method": "GET", "url": f"{base_url}/hello", "tlsRootCAsFile": ca})
        assert len(executor._pool._entries) == 1
        assert first.is_closed
    finally:
        await executor.aclose()


# --- TLS, with a self-signed certificate made on the spot -------------------------------------


def _write_self_signed(directory: Path, name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    return str(path)


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    """An https server whose certificate is self-signed and which requires a client
    certificate signed by (here: equal to) ``client.pem``. Yields url, server cert, client cert."""
    server_pem = _write_self_signed(tmp_path, "server")
    client_pem = _write_self_signed(tmp_path, "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pem)
    context.load_verify_locations(client_pem)
    context.verify_mode = ssl.CERT_REQUIRED
    url, server = await serve(context)
    yield url, server_pem, client_pem
    await stop(server)


async def test_tls_untrusted_server_fails(
    executor: HttpExecutor, tls_server: tuple[str, str, str]
) -> None:
    url, _, client = tls_server
    config = {"method": "GET", "url": f"{url}/hello", "tlsCertificateFile": client}
    result, _ = await run(executor, config)
    assert not result.success
    assert "CERTIFICATE_VERIFY_FAILED" in result.error


async def test_tls_root_cas_and_client_certificate(
    executor: HttpExecutor, tls_server: tuple[str, str, str]
) -> None:
    url, server_pem, client_pem = tls_server
    config = {
        "method": "GET",
        "url": f"{url}/hello",
        "tlsRootCAsFile": server_pem,
        "tlsCertificateFile": client_pem,
        "tlsCertificateKeyFile": client_pem,
    }
    result, _ = await run(executor, config)
    assert result == ExecutorResult(success=True, output=b"hello ok")


async def test_tls_no_verify_peer(executor: HttpExecutor, tls_server: tuple[str, str, str]) -> None:
    url, _, client_pem = tls_server
    config = {
        "method": "GET",
        "url": f"{url}/hello",
        "tlsNoVerifyPeer": "true",
        "tlsCertificateFile": client_pem,
    }
    result, _ = await run(executor, config)
    assert result.success


async def test_tls_missing_file_names_the_key(executor: HttpExecutor, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    config = {"method": "GET", "url": "https://127.0.0.1:9/", "tlsRootCAsFile": missing}
    result, _ = await run(executor, config)
    assert not result.success
    assert f"tlsRootCAsFile {missing!r}" in result.error


async def test_tls_without_the_client_certificate_fails(
    executor: HttpExecutor, tls_server: tuple[str, str, str]
) -> None:
    url, server_pem, _ = tls_server
    config = {"method": "GET", "url": f"{url}/hello", "tlsRootCAsFile": server_pem}
    result, _ = await run(executor, config)
    assert not result.success


async def test_proxies_from_the_environment_are_not_used(
    executor: HttpExecutor, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    result, _ = await run(executor, {"method": "GET", "url": f"{base_url}/hello"})
    assert result.success
