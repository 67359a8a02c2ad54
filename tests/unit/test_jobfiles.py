from datetime import UTC, datetime

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.jobfiles import looks_like_job, read_jobs


def test_one_job_a_list_and_several_documents_read_alike():
    one = "name: a\nschedule: '@every 1m'\n"
    listed = '[{"name": "a"}, {"name": "b"}]'
    documents = "name: a\n---\n- name: b\n- name: c\n"
    assert [j["name"] for j in read_jobs(one)] == ["a"]
    assert [j["name"] for j in read_jobs(listed)] == ["a", "b"]
    assert [j["name"] for j in read_jobs(documents)] == ["a", "b", "c"]


def test_unquoted_timestamps_become_rfc3339_strings():
    (job,) = read_jobs("name: a\nstarts_at: 2026-01-01T00:00:00Z\nmetadata: {1: x}\n")
    assert job["starts_at"] == "2026-01-01T00:00:00Z"
    assert job["metadata"] == {"1": "x"}
    assert datetime.fromisoformat(job["starts_at"]) == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: [unclosed", "neither JSON nor YAML"),
        ("- just a string", "must be a mapping with a name"),
        ("schedule: '@every 1m'", "must be a mapping with a name"),
        ("", "holds no job"),
    ],
)
def test_bad_files_are_refused_with_what_to_write(text, says):
    with pytest.raises(BadRequest, match=says) as refused:
        read_jobs(text, "jobs.yaml")
    assert refused.value.message.startswith("jobs.yaml")


def test_a_cell_body_is_a_job_only_with_a_job_key():
    assert looks_like_job("schedule: '@hourly'\nexecutor: shell") == {
        "schedule": "@hourly",
        "executor": "shell",
    }
    assert looks_like_job("echo hello: world") is None  # a command that YAML reads as a map
    assert looks_like_job("ls -la | wc -l") is None
    assert looks_like_job("if [ -f x ]; then\n  echo: {") is None
