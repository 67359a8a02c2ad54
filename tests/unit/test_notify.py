"""The pure parts of notifications: templates, headers, the notify_on policy, settings checks."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dkron_lab.config import NOTIFY_ON, Config
from dkron_lab.errors import InvalidJob, ValidationError
from dkron_lab.model.execution import Execution
from dkron_lab.notify import (
    DKRON_FIELDS,
    KNOWN_FIELDS,
    Notifier,
    check_notify_on,
    effective_policy,
    go_time,
    mail_subject,
    parse_headers,
    parse_template,
    report,
    should_notify,
    template_fields,
)

STARTED = datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC)
FINISHED = datetime(2026, 3, 1, 10, 0, 2, tzinfo=UTC)
RUN = Execution(
    id="1772359200250000000-node-a",
    job_name="backup",
    node_name="node-a",
    group=1772359200000000000,
    attempt=2,
    started_at=STARTED,
    finished_at=FINISHED,
    success=False,
    output="disk full",
)
FIELDS = template_fields(RUN, reporting_node="leader-1")


# -- templates -----------------------------------------------------------------------------------


def test_fields_are_dkrons_and_ours() -> None:
    assert DKRON_FIELDS == (
        "Report",
        "JobName",
        "ReportingNode",
        "StartTime",
        "FinishedAt",
        "Success",
        "NodeName",
        "Output",
    )
    assert set(FIELDS) == set(KNOWN_FIELDS)


def test_template_renders_every_field() -> None:
    template = parse_template(
        "{{.JobName}}|{{.ReportingNode}}|{{.StartTime}}|{{.FinishedAt}}|{{.Success}}|"
        "{{.NodeName}}|{{.Output}}|{{.ExecutionGroup}}|{{.Attempt}}"
    )
    assert template.render(FIELDS) == (
        "backup|leader-1|2026-03-01 10:00:00.25 +0000 UTC|2026-03-01 10:00:02 +0000 UTC|false|"
        "node-a|disk full|1772359200000000000|2"
    )


def test_template_tolerates_spaces_and_keeps_text_verbatim() -> None:
    template = parse_template('{"text": "{{ .JobName }} ok={{  .Success\t}}"}\n')
    assert template.render(FIELDS) == '{"text": "backup ok=false"}\n'


def test_template_trim_markers_as_in_go() -> None:
    template = parse_template("job:\n  {{- .JobName -}}  \n!")
    assert template.render(FIELDS) == "job:backup!"


def test_template_without_actions_is_plain_text() -> None:
    assert parse_template("no fields } here {").render(FIELDS) == "no fields } here {"


def test_unknown_field_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_template("{{.JobName}} {{.Status}}", key="webhook-payload")
    message = str(caught.value)
    assert message.startswith("webhook-payload: unknown field '{{.Status}}'")
    assert ".JobName" in message and ".Output" in message and ".Attempt" in message


def test_field_names_are_case_sensitive() -> None:
    with pytest.raises(ValidationError, match=r"unknown field '\{\{.jobname\}\}'"):
        parse_template("{{.jobname}}")


@pytest.mark.parametrize("action", ["{{if .Success}}", "{{.JobName | printf}}", "{{ JobName }}"])
def test_other_actions_are_refused(action: str) -> None:
    with pytest.raises(ValidationError, match="unsupported template action"):
        parse_template(f"x {action} y", key="mail-payload")


def test_unclosed_action_is_refused() -> None:
    with pytest.raises(ValidationError, match="mail-payload: unclosed action"):
        parse_template("done {{.JobName", key="mail-payload")


def test_go_time() -> None:
    assert go_time(None) == "0001-01-01 00:00:00 +0000 UTC"
    assert go_time(STARTED) == "2026-03-01 10:00:00.25 +0000 UTC"
    plus_two = timezone(timedelta(hours=2), "EET")
    assert go_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=plus_two)) == (
        "2026-01-02 03:04:05.000006 +0200 EET"
    )


def test_report_lists_the_group() -> None:
    sibling = replace(RUN, id="x-node-b", node_name="node-b", success=True, output="")
    text = report(RUN, reporting_node="leader-1", group=[RUN, sibling])
    assert text == (
        "Executed: backup\nReporting node: leader-1\n"
        "Start time: 2026-03-01 10:00:00.25 +0000 UTC\nEnd time: 2026-03-01 10:00:02 +0000 UTC\n"
        "Success: false\nNode: node-a\nOutput: disk full\nExecution group: 1772359200000000000\n"
        "\t[Node]: node-a [Start]: 2026-03-01 10:00:00.25 +0000 UTC "
        "[End]: 2026-03-01 10:00:02 +0000 UTC [Success]: false\n"
        "\t[Node]: node-b [Start]: 2026-03-01 10:00:00.25 +0000 UTC "
        "[End]: 2026-03-01 10:00:02 +0000 UTC [Success]: true\n"
    )


def test_report_of_a_running_execution_has_go_zero_end() -> None:
    running = replace(RUN, finished_at=None)
    assert "End time: 0001-01-01 00:00:00 +0000 UTC\n" in report(running, reporting_node="n")
    assert report(running, reporting_node="n").count("\t[Node]: node-a") == 1


def test_mail_subject_is_dkrons() -> None:
    assert mail_subject("[Dkron]", RUN) == "[Dkron]Failed backup execution report"
    assert mail_subject("", replace(RUN, success=True)) == "Success backup execution report"


# -- headers -------------------------------------------------------------------------------------


def test_headers_parse() -> None:
    lines = ("Content-Type:application/json", "", "Authorization: Basic dXNlcjpwYXNz:x", "Host: a")
    assert parse_headers(lines) == (
        ("Content-Type", "application/json"),
        ("Authorization", "Basic dXNlcjpwYXNz:x"),
        ("Host", "a"),
    )


@pytest.mark.parametrize("line", ["no colon here", ": empty name", "Bad Name: x", "X-A: b\r\nX: y"])
def test_malformed_header_is_named(line: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_headers(["X-Ok: 1", line], key="webhook-headers")
    assert str(caught.value).startswith(f"webhook-headers: malformed header {line!r}")
    assert "'Name: value'" in str(caught.value)


# -- policy --------------------------------------------------------------------------------------

# (policy, success, previous_success) -> notify?
POLICY_TABLE = [
    ("always", True, None, True),
    ("always", False, True, True),
    ("never", False, False, False),
    ("never", True, None, False),
    ("failure", False, None, True),
    ("failure", True, False, False),
    ("failure", True, True, False),
    ("recovery", False, True, True),
    ("recovery", False, False, True),
    ("recovery", True, False, True),
    ("recovery", True, True, False),
    ("recovery", True, None, False),
]


@pytest.mark.parametrize(("policy", "success", "previous", "expected"), POLICY_TABLE)
def test_should_notify(policy: str, success: bool, previous: bool | None, expected: bool) -> None:
    assert should_notify(policy, success=success, previous_success=previous) is expected


def test_policy_table_covers_every_policy() -> None:
    assert {row[0] for row in POLICY_TABLE} == set(NOTIFY_ON)


def test_job_metadata_overrides_the_server_default() -> None:
    assert effective_policy({}, "failure") == "failure"
    assert effective_policy({"notify_on": ""}, "failure") == "failure"
    assert effective_policy({"notify_on": " Always "}, "failure") == "always"
    assert effective_policy({"notify_on": "never"}, "always") == "never"
    assert effective_policy({"notify_on": "sometimes"}, "recovery") == "recovery"


@pytest.mark.parametrize("value", ["always", "FAILURE", " recovery", "never", ""])
def test_check_notify_on_accepts_policies(value: str) -> None:
    check_notify_on({"notify_on": value, "team": "data"})
    check_notify_on({})


def test_check_notify_on_explains_a_bad_value() -> None:
    with pytest.raises(InvalidJob) as caught:
        check_notify_on({"notify_on": "on-failure"})
    assert isinstance(caught.value, ValidationError)
    message = str(caught.value)
    assert "'on-failure'" in message
    assert "always, failure, recovery, never" in message


# -- settings ------------------------------------------------------------------------------------


def test_nothing_configured_is_disabled() -> None:
    assert not Notifier.from_config(Config(node_name="n")).enabled


def test_from_config_builds_what_is_set() -> None:
    notifier = Notifier.from_config(
        Config(
            node_name="n",
            notify_on="recovery",
            webhook_endpoint="http://127.0.0.1:1/hook",
            webhook_payload="{{.JobName}}",
            webhook_headers=("Content-Type: text/plain",),
            mail_host="127.0.0.1",
            mail_from="cron@example.com",
        )
    )
    assert notifier.enabled and notifier.default_policy == "recovery"
    assert notifier.webhook is not None and notifier.pre_webhook is None
    assert notifier.webhook.headers == (("Content-Type", "text/plain"),)
    assert notifier.mail is not None and notifier.mail.payload is None
    assert notifier.mail.subject_prefix == "[Dkron]"


def test_from_config_names_the_bad_template_key() -> None:
    config = Config(node_name="n", pre_webhook_endpoint="http://h/", pre_webhook_payload="{{.X}}")
    with pytest.raises(ValidationError, match="pre-webhook-payload: unknown field"):
        Notifier.from_config(config)
    with pytest.raises(ValidationError, match="mail-payload: unknown field"):
        Notifier.from_config(Config(node_name="n", mail_payload="{{.Nope}}"))


def test_from_config_names_the_bad_header_key() -> None:
    config = Config(
        node_name="n",
        webhook_endpoint="http://h/",
        webhook_payload="x",
        webhook_headers=("broken",),
    )
    with pytest.raises(ValidationError, match="webhook-headers: malformed header 'broken'"):
        Notifier.from_config(config)


@pytest.mark.parametrize("endpoint", ["hooks.example.com/x", "ftp://h/x", "http://"])
def test_endpoint_must_be_an_http_url(endpoint: str) -> None:
    config = Config(node_name="n", webhook_endpoint=endpoint, webhook_payload="x")
    with pytest.raises(ValidationError, match="webhook-endpoint"):
        Notifier.from_config(config)


def test_mail_needs_a_sender() -> None:
    with pytest.raises(ValidationError, match="mail-from is required"):
        Notifier.from_config(Config(node_name="n", mail_host="smtp.example.com"))


def test_endpoint_without_payload_warns_and_sends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dkron_lab.notify"):
        notifier = Notifier.from_config(Config(node_name="n", webhook_endpoint="http://h/x"))
    assert not notifier.enabled
    assert "webhook-payload is empty" in caplog.text
