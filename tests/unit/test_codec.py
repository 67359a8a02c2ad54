import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dkron_lab import codec
from dkron_lab.errors import BadRequest, InvalidJob
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats, validate_job

# A job exactly as Dkron v4 returns it (reference §1.1, issue #1836).
DKRON_JOB = {
    "id": "failedjob",
    "name": "failedjob",
    "displayname": "failedjob",
    "timezone": "Europe/Prague",
    "schedule": "0 1 * * * *",
    "owner": "admin.cz",
    "owner_email": "",
    "success_count": 523,
    "error_count": 8,
    "last_success": "2025-11-11T10:01:00.208788688Z",
    "last_error": "2025-11-11T10:01:00.477874671Z",
    "disabled": False,
    "tags": {"dc": "dc1:1"},
    "metadata": {"app": "admin"},
    "retries": 1,
    "dependent_jobs": None,
    "parent_job": "",
    "processors": {},
    "concurrency": "forbid",
    "executor": "shell",
    "executor_config": {"command": "php8.1 bin/console"},
    "status": "success",
    "next": "2025-11-11T11:01:00+01:00",
    "ephemeral": False,
    "starts_at": None,
    "expires_at": None,
}


def test_dkron_job_decodes_with_its_counters():
    job, stats = codec.job_from_json(DKRON_JOB)
    assert job.name == "failedjob" and job.timezone == "Europe/Prague"
    assert job.tags == {"dc": "dc1:1"} and job.concurrency == "forbid" and job.retries == 1
    assert stats.success_count == 523 and stats.error_count == 8 and stats.status == "success"
    assert stats.last_success == datetime(2025, 11, 11, 10, 1, 0, 208788, tzinfo=UTC)


def test_encoding_has_dkron_fields_in_dkron_order_then_ours_and_round_trips():
    job, stats = codec.job_from_json(DKRON_JOB)
    out = codec.job_to_json(job, stats)
    ours = {
        "catchup": "",
        "concurrency_group": "",
        "retry_interval": "",
        "retry_on": "",
        "secret_keys": [],
        "max_lateness": "",
        "max_duration": "",
        "on_overdue": "",
        "calendar": "",
        "calendar_mode": "",
        "health": "ok",
        "health_reason": "",
    }
    assert list(out) == [*DKRON_JOB, *ours]
    assert {k: v for k, v in out.items() if k not in ("next", "last_success", "last_error")} == {
        **{k: v for k, v in DKRON_JOB.items() if k not in ("next", "last_success", "last_error")},
        **ours,
    }
    assert out["next"] == codec.ZERO_TIME
    again, again_stats = codec.job_from_json(out)
    assert again == job and again_stats == stats


@pytest.mark.parametrize("policy", ["", "skip", "once", "all"])
def test_catchup_round_trips_through_json_and_record(policy):
    job, _ = codec.job_from_json({**DKRON_JOB, "catchup": policy})
    assert job.catchup == policy
    assert codec.job_to_json(job)["catchup"] == policy
    record = codec.job_to_record(job)
    assert record["catchup"] == policy
    assert codec.job_from_json(record)[0] == job


def test_a_dkron_job_without_catchup_gets_the_server_default():
    job, _ = codec.job_from_json(DKRON_JOB)
    assert "catchup" not in DKRON_JOB and job.catchup == ""


def test_defaults_for_a_minimal_job():
    job, stats = codec.job_from_json({"name": "a", "schedule": "@every 1m", "executor": "shell"})
    assert job.concurrency == "allow" and job.tags == {} and job.starts_at is None
    out = codec.job_to_json(job, stats)
    assert out["status"] == "" and out["dependent_jobs"] is None and out["starts_at"] is None


def test_scalar_config_values_become_strings():
    job, _ = codec.job_from_json(
        {"name": "a", "processors": {"log": {"forward": True}}, "executor_config": {"timeout": 30}}
    )
    assert job.processors == {"log": {"forward": "true"}}
    assert job.executor_config == {"timeout": "30"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"name": 3}, "name is required and must be a string"),
        ({"disabled": "yes"}, "disabled must be true or false, not a string"),
        ({"retries": -1}, "retries must be 0 or more"),
        ({"retries": 1.5}, "retries must be a whole number"),
        ({"tags": ["a"]}, "tags must be an object"),
        ({"executor_config": {"command": {"x": 1}}}, "executor_config.command must be a string"),
        ({"schedule": 5}, "schedule must be a string, not a number"),
        ({"catchup": True}, "catchup must be a string, not a boolean"),
        ({"starts_at": "tomorrow"}, "starts_at: 'tomorrow' is not a time"),
        ({"starts_at": "2026-01-01T10:00:00.5"}, "has no UTC offset"),
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(patch, message):
    with pytest.raises(InvalidJob, match=message):
        codec.job_from_json({"name": "a", **patch})


def test_a_body_that_is_not_an_object_is_a_bad_request():
    with pytest.raises(BadRequest, match="must be a JSON object"):
        codec.job_from_json([1, 2])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-19T09:09:00Z", datetime(2025, 12, 19, 9, 9, tzinfo=UTC)),
        ("2025-12-19T09:09:00+01:00", datetime(2025, 12, 19, 8, 9, tzinfo=UTC)),
        ("2025-12-19T09:09", datetime(2025, 12, 19, 9, 9, tzinfo=UTC)),
        (None, None),
        ("", None),
        (codec.ZERO_TIME, None),
    ],
)
def test_parse_time_accepts_dkron_forms(text, expected):
    assert codec.parse_time(text, "t") == expected


def test_format_time_is_go_rfc3339nano():
    assert codec.format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert codec.format_time(datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.12Z"
    )
    plus_one = timezone(timedelta(hours=1))
    assert codec.format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), plus_one) == (
        "2026-01-02T04:04:05+01:00"
    )


def test_execution_round_trip_and_running_shape():
    started = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    running = Execution(
        id="1-n1", job_name="a", node_name="n1", group=7, started_at=started, scheduled_at=started
    )
    out = codec.execution_to_json(running)
    assert out["finished_at"] == codec.ZERO_TIME and out["success"] is False
    assert codec.execution_from_json(out) == running
    done = Execution(
        id="1-n1",
        job_name="a",
        node_name="n1",
        group=7,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        success=True,
        output="hi",
    )
    assert codec.execution_from_json(codec.execution_to_json(done)) == done


def test_record_is_the_writable_fields_only():
    job = Job(name="a", schedule="@every 1m", executor="shell")
    record = codec.job_to_record(job)
    assert "success_count" not in record and "next" not in record and "id" not in record
    assert codec.job_from_json(record) == (job, JobStats())


def test_secret_keys_round_trip_and_must_be_a_list_of_strings():
    job, _ = codec.job_from_json({**DKRON_JOB, "secret_keys": ["api_key", "X-Tenant"]})
    assert job.secret_keys == ("api_key", "X-Tenant")
    assert codec.job_to_json(job)["secret_keys"] == ["api_key", "X-Tenant"]
    assert codec.job_from_json(codec.job_to_record(job))[0] == job
    for bad in ("api_key", [1], {"a": "b"}):
        with pytest.raises(InvalidJob, match="secret_keys must be a list of strings"):
            codec.job_from_json({**DKRON_JOB, "secret_keys": bad})


MONITORED = {"max_lateness": "1m", "max_duration": "2h", "on_overdue": "kill", "calendar": "hol"}


def test_monitoring_fields_round_trip_through_json_and_record():
    job, _ = codec.job_from_json({**DKRON_JOB, **MONITORED, "calendar_mode": "only"})
    validate_job(job)
    record = codec.job_to_record(job)
    assert {k: record[k] for k in MONITORED} == MONITORED and record["calendar_mode"] == "only"
    assert codec.job_from_json(record)[0] == job


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("max_lateness", "soon", "invalid max_lateness 'soon': use a Go duration"),
        ("max_duration", "-5s", "a negative duration is never met"),
        ("on_overdue", "panic", "use 'alert' (the default"),
        ("calendar", "bank holidays", "name a calendar"),
        ("calendar_mode", "only", "needs a calendar"),
    ],
)
def test_monitoring_fields_refuse_what_cannot_work(field, value, says):
    job, _ = codec.job_from_json({**DKRON_JOB, field: value})
    with pytest.raises(InvalidJob, match=re.escape(says)):
        validate_job(job)
