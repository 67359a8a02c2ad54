"""Notifications delivered for real: webhooks to a tornado server and mail to an aiosmtpd server,
both on 127.0.0.1, and failures that are logged and counted, never raised."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dkron_lab.config import Config
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.notify import Notifier
from dkron_lab.notify import notifier as notifier_module
from dkron_lab.testing import free_port

STARTED = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
FINISHED = datetime(2026, 3, 1, 10, 0, 3, tzinfo=UTC)
JOB = Job(name="backup", schedule="@every 1m", executor="shell", owner_email="ops@example.com")


def run(number: int = 1, *, success: bool = True, output: str = "all good") -> Execution:
    return Execution(
        id=f"{number}-node-a",
        job_name=JOB.name,
        node_name="node-a",
        group=number,
        started_at=STARTED,
        finished_at=FINISHED,
        success=success,
        output=output,
    )


# -- a webhook receiver --------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    url: str
    hits: list[Hit] = field(default_factory=list)
    status: int = 200
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]


class Record(tornado.web.RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def post(self, path: str) -> None:
        if path == "slow":
            await self.receiver.gate.wait()
        self.receiver.hits.append(
            Hit(path=path, headers=dict(self.request.headers), body=self.request.body.decode())
        )
        self.set_status(self.receiver.status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    hooks = Receiver(url=f"http://127.0.0.1:{port}")
    app = tornado.web.Application([(r"/(\w+)", Record, {"receiver": hooks})])
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    yield hooks
    hooks.gate.set()
    server.stop()
    await server.close_all_connections()


@pytest.fixture
async def closing() -> AsyncIterator[list[Notifier]]:
    """Notifiers to close after the test."""
    made: list[Notifier] = []
    yield made
    for notifier in made:
        await notifier.close()


def build(closing: list[Notifier], **settings: Any) -> Notifier:
    notifier = Notifier.from_config(Config(node_name="leader-1", **settings))
    closing.append(notifier)
    return notifier


# -- webhooks ------------------------------------------------------------------------------------


async def test_webhooks_carry_the_rendered_payload_and_headers(
    receiver: Receiver, closing: list[Notifier]
) -> None:
    notifier = build(
        closing,
        pre_webhook_endpoint=f"{receiver.url}/pre",
        pre_webhook_payload='{"text": "{{.JobName}} started on {{ .NodeName }}"}',
        pre_webhook_headers=("Content-Type: application/json",),
        webhook_endpoint=f"{receiver.url}/post",
        webhook_payload='{"text": "{{.JobName}} {{.Success}} {{.Output}} by {{.ReportingNode}}"}',
        webhook_headers=(
            "Content-Type:application/json",
            "Authorization: Basic dXNlcjpwYXNz:x",
            "Host: hooks.internal",
        ),
    )
    await notifier.started(JOB, replace(run(), finished_at=None, success=False, output=""))
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()

    hits = {hit.path: hit for hit in receiver.hits}
    assert sorted(hits) == ["post", "pre"]
    pre, post = hits["pre"], hits["post"]
    assert pre.body == '{"text": "backup started on node-a"}'
    assert pre.headers["Content-Type"] == "application/json"
    assert post.body == '{"text": "backup true all good by leader-1"}'
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Authorization"] == "Basic dXNlcjpwYXNz:x"
    assert post.headers["Host"] == "hooks.internal"
    assert (notifier.sent, notifier.failures) == (2, 0)


async def test_pre_webhook_fires_once_per_run(receiver: Receiver, closing: list[Notifier]) -> None:
    notifier = build(
        closing,
        pre_webhook_endpoint=f"{receiver.url}/pre",
        pre_webhook_payload="{{.JobName}} #{{.ExecutionGroup}}",
    )
    first, second = run(1), run(2)
    for execution in (first, first, first, second, second):  # Dkron fires per output chunk
        await notifier.started(JOB, replace(execution, finished_at=None))
    await notifier.flush()
    assert sorted(hit.body for hit in receiver.hits) == ["backup #1", "backup #2"]


async def test_a_repeated_result_is_announced_once(
    receiver: Receiver, closing: list[Notifier]
) -> None:
    notifier = build(closing, webhook_endpoint=f"{receiver.url}/post", webhook_payload="x")
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert receiver.paths() == ["post"]


async def test_notify_on_filters_and_a_job_overrides_it(
    receiver: Receiver, closing: list[Notifier]
) -> None:
    notifier = build(
        closing,
        notify_on="failure",
        pre_webhook_endpoint=f"{receiver.url}/pre",
        pre_webhook_payload="{{.JobName}}",
        webhook_endpoint=f"{receiver.url}/post",
        webhook_payload="{{.JobName}} {{.Success}}",
    )
    loud = replace(JOB, name="loud", metadata={"notify_on": "always"})
    quiet = replace(JOB, name="quiet", metadata={"notify_on": "never"})
    await notifier.finished(JOB, run(1, success=True), previous_success=False)
    await notifier.finished(JOB, run(2, success=False), previous_success=True)
    await notifier.finished(loud, replace(run(3), job_name="loud"), previous_success=True)
    await notifier.started(quiet, replace(run(4), job_name="quiet", finished_at=None))
    await notifier.finished(
        quiet, replace(run(4, success=False), job_name="quiet"), previous_success=None
    )
    await notifier.flush()
    assert sorted(hit.body for hit in receiver.hits) == ["backup false", "loud true"]


async def test_recovery_announces_the_first_success_after_failures(
    receiver: Receiver, closing: list[Notifier]
) -> None:
    notifier = build(
        closing,
        notify_on="recovery",
        webhook_endpoint=f"{receiver.url}/post",
        webhook_payload="{{.ExecutionGroup}}:{{.Success}}",
    )
    previous: bool | None = None
    for number, success in enumerate([True, False, False, True, True], start=1):
        await notifier.finished(JOB, run(number, success=success), previous_success=previous)
        previous = success
    await notifier.flush()
    assert sorted(hit.body for hit in receiver.hits) == ["2:false", "3:false", "4:true"]


async def test_finished_returns_before_the_delivery(
    receiver: Receiver, closing: list[Notifier]
) -> None:
    notifier = build(closing, webhook_endpoint=f"{receiver.url}/slow", webhook_payload="x")
    await notifier.finished(JOB, run(), previous_success=None)
    assert (notifier.sent, receiver.hits) == (0, [])  # the receiver holds the request
    receiver.gate.set()
    await notifier.flush()
    assert (notifier.sent, receiver.paths()) == (1, ["slow"])


async def test_too_many_pending_deliveries_are_dropped_and_counted(
    receiver: Receiver, closing: list[Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier_module, "MAX_PENDING", 2)
    notifier = build(closing, webhook_endpoint=f"{receiver.url}/slow", webhook_payload="x")
    for number in range(1, 5):
        await notifier.finished(JOB, run(number), previous_success=None)
    assert notifier.failures == 2
    receiver.gate.set()
    await notifier.flush()
    assert (notifier.sent, notifier.failures, len(receiver.hits)) == (2, 2, 2)


async def test_unreachable_endpoint_is_logged_and_counted(
    closing: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/hook"
    notifier = build(closing, webhook_endpoint=f"{endpoint}?token=secret", webhook_payload="x")
    with caplog.at_level(logging.WARNING, logger="dkron_lab.notify"):
        await notifier.finished(JOB, run(), previous_success=None)
        await notifier.flush()
    assert (notifier.sent, notifier.failures) == (0, 1)
    [record] = [r for r in caplog.records if r.name == "dkron_lab.notify"]
    assert record.levelno == logging.WARNING
    assert f"webhook backup: POST {endpoint}: ConnectError" in record.getMessage()
    assert "secret" not in record.getMessage()


async def test_error_status_counts_as_a_failure(
    receiver: Receiver, closing: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    notifier = build(closing, webhook_endpoint=f"{receiver.url}/post", webhook_payload="x")
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, notifier.failures, receiver.paths()) == (0, 1, ["post"])
    assert "answered HTTP 500" in caplog.text


# -- mail ----------------------------------------------------------------------------------------


@dataclass
class Inbox:
    envelopes: list[Envelope] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.encrypted.append(session.ssl is not None)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    def messages(self) -> list[EmailMessage]:
        """The messages received, with SMTP's CRLF line ends turned back into LF."""
        messages = []
        for envelope in self.envelopes:
            raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            messages.append(message)
        return messages


@contextlib.contextmanager
def smtp_server(tls: ssl.SSLContext | None = None) -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1 that offers STARTTLS when given ``tls``."""
    box = Inbox(port=free_port())
    controller = Controller(
        box,
        hostname=box.host,
        port=box.port,
        tls_context=tls,
        authenticator=box.authenticate,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],  # PLAIN only, as Dkron's client speaks
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


def self_signed(directory: Path) -> Path:
    """A certificate (with its key) for 127.0.0.1, signed by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / "smtp.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    return path


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[tuple[Inbox, Path]]:
    pem = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    with smtp_server(context) as box:
        yield box, pem


def mail_settings(inbox: Inbox, **more: Any) -> dict[str, Any]:
    return {
        "mail_host": inbox.host,
        "mail_port": inbox.port,
        "mail_from": "cron@example.com",
    } | more


async def test_mail_goes_to_the_owner_with_dkrons_subject(
    inbox: Inbox, closing: list[Notifier]
) -> None:
    payload = (
        "Job {{.JobName}} finished with status {{.Success}} on node {{.NodeName}}\n\n{{.Report}}"
    )
    notifier = build(closing, **mail_settings(inbox, mail_payload=payload))
    await notifier.finished(JOB, run(success=False, output="disk full"), previous_success=True)
    await notifier.flush()

    [envelope] = inbox.envelopes
    assert (envelope.mail_from, envelope.rcpt_tos) == ("cron@example.com", ["ops@example.com"])
    [message] = inbox.messages()
    assert message["To"] == "ops@example.com"
    assert message["From"] == "cron@example.com"
    assert message["Subject"] == "[Dkron]Failed backup execution report"
    body = message.get_content()
    assert body.startswith("Job backup finished with status false on node node-a\n\n")
    assert "Reporting node: leader-1\n" in body and "Output: disk full\n" in body
    assert inbox.logins == []  # no username: no login, as in Dkron
    assert (notifier.sent, notifier.failures) == (1, 0)


async def test_mail_without_payload_is_the_output(inbox: Inbox, closing: list[Notifier]) -> None:
    notifier = build(closing, **mail_settings(inbox, mail_subject_prefix="[cron] "))
    await notifier.finished(JOB, run(output="42 rows copied\n"), previous_success=None)
    await notifier.flush()
    [message] = inbox.messages()
    assert message["Subject"] == "[cron] Success backup execution report"
    assert message.get_content() == "42 rows copied\n"


async def test_mail_logs_in_when_credentials_are_set(inbox: Inbox, closing: list[Notifier]) -> None:
    notifier = build(closing, **mail_settings(inbox, mail_username="bot", mail_password="s3cret"))
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert inbox.logins == [(b"bot", b"s3cret")]
    assert len(inbox.envelopes) == 1


async def test_mail_refused_login_is_counted(
    inbox: Inbox, closing: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    notifier = build(closing, **mail_settings(inbox, mail_username="bot", mail_password="wrong"))
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, notifier.failures, inbox.envelopes) == (0, 1, [])
    assert (
        f"smtp://127.0.0.1:{inbox.port} to ops@example.com: SMTPAuthenticationError" in caplog.text
    )


async def test_no_owner_email_no_mail(inbox: Inbox, closing: list[Notifier]) -> None:
    notifier = build(closing, **mail_settings(inbox))
    await notifier.finished(replace(JOB, owner_email=""), run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, inbox.envelopes) == (0, [])


async def test_unreachable_mail_server_is_logged_and_counted(
    closing: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    notifier = build(closing, mail_host="127.0.0.1", mail_port=port, mail_from="cron@example.com")
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, notifier.failures) == (0, 1)
    assert f"mail backup: smtp://127.0.0.1:{port} to ops@example.com" in caplog.text


async def test_mail_uses_starttls_when_offered(
    tls_inbox: tuple[Inbox, Path], closing: list[Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, pem = tls_inbox
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))  # the system trust store, for this test
    notifier = build(closing, **mail_settings(inbox, mail_username="bot", mail_password="s3cret"))
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, inbox.encrypted, inbox.logins) == (1, [True], [(b"bot", b"s3cret")])


async def test_mail_refuses_an_untrusted_starttls_certificate(
    tls_inbox: tuple[Inbox, Path], closing: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, _ = tls_inbox
    notifier = build(closing, **mail_settings(inbox, mail_username="bot", mail_password="s3cret"))
    await notifier.finished(JOB, run(), previous_success=None)
    await notifier.flush()
    assert (notifier.sent, notifier.failures, inbox.envelopes, inbox.logins) == (0, 1, [], [])
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


# -- changes of health ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "said"),
    [
        ("always", ["late false", "ok true", "missed false"]),
        ("failure", ["late false", "missed false"]),
        ("recovery", ["late false", "ok true", "missed false"]),
        ("never", []),
    ],
)
async def test_a_change_of_health_is_said_once_as_the_policy_says(
    receiver: Receiver, closing: list[Notifier], policy: str, said: list[str]
) -> None:
    notifier = build(
        closing,
        notify_on=policy,
        webhook_endpoint=f"{receiver.url}/post",
        webhook_payload="{{.Health}} {{.Success}}",
    )
    job = Job(name="backup", schedule="@daily", executor="shell")
    since = datetime(2026, 12, 8, 2, 30, tzinfo=UTC)
    for previous, health in [("ok", "late"), ("late", "ok"), ("ok", "failing"), ("failing", "ok"),
                             ("ok", "missed"), ("missed", "paused"), ("paused", "ok")]:  # fmt: skip
        notifier.health_changed(job, health=health, previous=previous, since=since, reason="r")
    await notifier.flush()
    assert sorted(hit.body for hit in receiver.hits) == sorted(said)
