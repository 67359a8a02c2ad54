"""Which job values are secrets, how reads mask them, how a saved-back mask keeps the stored
value, and how output and child environments are scrubbed (``dkron_lab.model.secrets``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.model.job import Job, validate_job
from dkron_lab.model.secrets import (
    MASK,
    NODE_VARIABLES,
    OutputScrubber,
    child_environment,
    is_secret_name,
    mask_job,
    masked_config,
    scrub,
    scrub_text,
    secret_values,
    unmask_job,
)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("authorization", True),
        ("Proxy-Authorization", True),
        ("token", True),
        ("api_token", True),
        ("X-Auth-Token", True),
        ("authToken", True),
        ("GITHUB_TOKENS", True),
        ("password", True),
        ("DB_PASSWORD", True),
        ("dbPassword", True),
        ("passwd", True),
        ("secret", True),
        ("client_secret", True),
        ("clientSecret", True),
        ("key", True),
        ("api_key", True),
        ("apikey", True),
        ("APIKey", True),
        ("X-Api-Key", True),
        ("access-key", True),
        ("aws.secret_access_key", True),
        ("private_key", True),
        ("Cookie", True),
        ("keyboard", False),
        ("monkey", False),
        ("key_file", False),
        ("tlsCertificateKeyFile", False),
        ("token_url", False),
        ("password_file", False),
        ("command", False),
        ("url", False),
        ("headers", False),
        ("turnkey", False),
        ("", False),
        ("___", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def http_job(**config: str) -> Job:
    return Job(
        name="hook",
        schedule="@manually",
        executor="http",
        executor_config={"method": "GET", "url": "https://example.com/", **config},
    )


def shell_job(**config: str) -> Job:
    return Job(name="j", executor="shell", executor_config={"command": "x", **config})


def test_reads_mask_env_values_secret_keys_and_headers() -> None:
    job = http_job(
        env="A=alpha,B=,C=see=saw",
        api_key="k-123456",
        keyboard="qwerty",
        headers=json.dumps(["Authorization: Bearer tok-123456", "Accept: text/plain"]),
    )
    shown = mask_job(job).executor_config
    assert masked_config(job) == shown
    assert shown["env"] == "A=***,B=,C=***"
    assert shown["api_key"] == MASK and shown["keyboard"] == "qwerty"
    assert json.loads(shown["headers"]) == ["Authorization: ***", "Accept: text/plain"]
    assert shown["url"] == "https://example.com/" and shown["method"] == "GET"


def test_secret_keys_name_config_keys_variables_and_headers() -> None:
    job = http_job(
        region="eu-1",
        headers=json.dumps(["X-Tenant: acme-42"]),
        env="PLAIN=1",
    )
    named = replace(job, secret_keys=("region", "x-tenant"))
    shown = mask_job(named).executor_config
    assert shown["region"] == MASK
    assert json.loads(shown["headers"]) == ["X-Tenant: ***"]
    assert mask_job(job).executor_config["region"] == "eu-1"


def test_empty_secrets_and_other_executors_headers_are_shown_as_they_are() -> None:
    job = Job(
        name="j",
        executor="shell",
        executor_config={"command": "true", "password": "", "headers": "Authorization: x"},
    )
    assert mask_job(job) is job


def test_notebook_parameters_named_as_secrets_are_masked_and_kept() -> None:
    parameters = {"region": "eu", "db_password": "pw-123456", "days": 7, "api_key": 12345}
    stored = Job(
        name="nb",
        executor="notebook",
        executor_config={"path": "/n/report.ipynb", "parameters": json.dumps(parameters)},
    )
    shown = json.loads(mask_job(stored).executor_config["parameters"])
    assert shown == {**parameters, "db_password": MASK}  # only strings are masked
    assert unmask_job(mask_job(stored), stored) == stored
    assert secret_values(stored) == {"pw-123456"}
    with pytest.raises(InvalidJob, match="parameters parameter 'db_password'.*masked"):
        unmask_job(mask_job(stored), None)
    not_json = replace(stored, executor_config={"parameters": "{oops"})
    assert mask_job(not_json) is not_json


def test_headers_that_are_not_a_json_list_are_masked_whole() -> None:
    assert mask_job(http_job(headers="Authorization: x")).executor_config["headers"] == MASK


def test_a_masked_job_saved_back_keeps_every_stored_secret() -> None:
    stored = http_job(
        env="A=alpha,B=beta",
        password="hunter22",
        headers=json.dumps(["authorization: Basic abcd", "Accept: */*"]),
    )
    edited = replace(mask_job(stored), displayname="renamed")
    saved = unmask_job(edited, stored)
    assert saved.executor_config == stored.executor_config
    assert saved.displayname == "renamed"


def test_a_new_value_replaces_the_stored_one_and_a_new_variable_needs_its_value() -> None:
    stored = shell_job(env="A=old")
    with pytest.raises(InvalidJob, match="'B'.*masked.*give the real value"):
        unmask_job(shell_job(env="A=new,B=***"), stored)
    assert unmask_job(shell_job(env="A=new,B=b"), stored).executor_config["env"] == "A=new,B=b"
    assert unmask_job(shell_job(env="A=***,B=b"), stored).executor_config["env"] == "A=old,B=b"


def test_a_new_job_with_the_mask_is_refused() -> None:
    job = shell_job(token=MASK)
    with pytest.raises(InvalidJob, match=r"executor_config\.token .*\*\*\*"):
        unmask_job(job, None)


def test_the_mask_where_no_secret_is_is_an_ordinary_value() -> None:
    job = shell_job(command=MASK, tokenizer=MASK)
    assert unmask_job(job, None) == job


def test_a_key_dropped_from_secret_keys_still_keeps_its_stored_value() -> None:
    stored = replace(shell_job(zone="z1"), secret_keys=("zone",))
    assert unmask_job(shell_job(zone=MASK), stored).executor_config["zone"] == "z1"


def test_secret_values_are_long_enough_to_scrub_and_include_a_bearer_credential() -> None:
    job = http_job(
        env="A=abc,B=abcd",
        headers=json.dumps(["Authorization: Bearer tok-123456"]),
    )
    assert secret_values(job) == {"abcd", "Bearer tok-123456", "tok-123456"}


def test_validation_rejects_blank_secret_keys() -> None:
    job = Job(name="j", schedule="@manually", executor="shell", secret_keys=(" ",))
    with pytest.raises(InvalidJob, match="secret_keys"):
        validate_job(job)


# -- output --------------------------------------------------------------------------------------


def test_scrub_replaces_every_occurrence_longest_value_first() -> None:
    data = b"abcd abcdefgh xabcdefghx"
    assert scrub(data, ["abcd", "abcdefgh"]) == b"*** *** x***x"
    assert scrub(data, []) == data
    assert scrub(b"abc", ["abc"]) == b"abc"  # too short to scrub


def test_scrub_of_a_cut_tail_masks_the_end_of_a_value_it_begins_with() -> None:
    assert scrub(b"cret-1234 then", ["secret-1234"], cut=True) == b"*** then"
    assert scrub(b"cret-1234 then", ["secret-1234"]) == b"cret-1234 then"
    assert scrub(b"x then", ["secret-1234"], cut=True) == b"x then"


def test_scrub_text_keeps_lone_surrogates() -> None:
    assert scrub_text("\ud800 pass-word", ["pass-word"]) == "\ud800 ***"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_the_stream_scrubber_masks_values_split_across_chunks(size: int) -> None:
    values = ["s3cr3t-value", "s3cr3t", "tok-0000"]
    data = b"a s3cr3t-value b s3cr3t c tok-0000tok-0000 d s3cr3t-valu"
    scrubber = OutputScrubber(values)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    streamed = b"".join(scrubber.feed(chunk) for chunk in chunks) + scrubber.flush()
    assert streamed == scrub(data, values)
    assert streamed == b"a *** b *** c ****** d ***-valu"


def test_the_stream_scrubber_shows_no_prefix_of_a_value_before_it_is_decided() -> None:
    scrubber = OutputScrubber(["password-1"])
    shown = scrubber.feed(b"line password-")
    assert b"password" not in shown
    assert shown + scrubber.feed(b"1 end") + scrubber.flush() == b"line *** end"


def test_without_values_the_stream_scrubber_passes_chunks_through() -> None:
    scrubber = OutputScrubber([])
    assert scrubber.feed(b"abc") == b"abc" and scrubber.flush() == b""


# -- child environments --------------------------------------------------------------------------


def test_child_environment_drops_the_node_credentials_by_name_and_by_value() -> None:
    environ = dict.fromkeys(NODE_VARIABLES, "x") | {
        "PATH": "/bin",
        "COPY": "the-token",
        "KEY_B64": "the-key",
        "EMPTY": "",
    }
    assert child_environment(environ, frozenset({"the-token", "the-key", ""})) == {
        "PATH": "/bin",
        "EMPTY": "",
    }


def test_a_secret_is_scrubbed_in_every_spelling_an_executor_may_print():
    """Printed raw, as JSON (escaped or not) or as a Python literal, a secret holding a quote,
    a backslash or an accent is masked all the same."""
    from dkron_lab.model.secrets import scrub, spelled

    secret = 'p"a\\ss-é-0123456789'
    values = spelled([secret])
    for shown in (secret, json.dumps(secret), json.dumps(secret, ensure_ascii=False), repr(secret)):
        assert scrub(shown.encode(), values).decode().strip("'\"") == "***", shown
