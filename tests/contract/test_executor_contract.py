"""The executor contract: the rules every executor keeps, run against every one of them.

The executors are the built-ins ``shell``, ``http`` and ``notebook``, and ``relay``, a
third-party plugin installed through an entry point; ``conftest.py`` holds one case per
executor, which knows how to write each kind of job below for it. The rules come from the
``Executor`` protocol and ``ExecutionRequest`` / ``ExecutorResult`` (``dkron_lab.plugins``),
from what ``Runner`` does with an executor and its result (``dkron_lab.runner``), from
``model.secrets`` and ``model.execution.mark_cut``, and from docs/extending.md. Jobs go through
a real ``Runner`` over a real ``PluginRegistry`` on a ``FakeClock``; only rule 7, which is
about the protocol's own result, calls ``execute`` directly. No test looks inside an executor.

Registration and validation

1. **Registered under its name.** A registry built as a node builds one (built-ins, then
   entry points) lists the executor under its name and returns an ``Executor``: ``execute``
   is a coroutine function, an optional ``validate`` is callable, an optional ``aclose`` is a
   coroutine function; an entry point of that name loads that executor's class.
2. **Bad configs are refused at save time.** ``registry.validate(name, config, {})`` accepts
   every config this suite runs, and refuses each bad one with ``InvalidJob`` (a
   ``ValidationError``: HTTP 400) whose message names the key at fault. Nothing runs.
3. **A refusal names the executor**, as registered: ``<name> executor: ...``, or the
   registry's ``executor '<name>': ...`` around a plugin's plain ``ValueError``.

Verdicts

4. **Success.** A job that succeeds is reported once, with ``success=True``; its output ends
   with what it printed, with nothing after it and no truncation mark. ``started_at`` and
   ``finished_at`` come from the node's clock; the task returns what was reported; the job's
   ``executor_config`` is left as it was.
5. **Failure is a result, never an exception.** A job that fails is reported once, with
   ``success=False``, by the executor itself: the runner's ``executor crashed`` fallback is
   not used. What the job showed before failing is kept, and the executor's reason follows it
   on the last line, once (``ExecutorResult``: the error is not repeated in the output).
6. **A bad config at run time** (a job saved before a check existed) **fails the run**,
   with the message ``validate`` gives, not a crash.

Output

7. **The result keeps the tail** (the protocol, called directly): asked for
   ``output_limit`` bytes, ``execute`` emits every chunk as ``bytes`` through ``emit`` and
   returns at most ``output_limit`` bytes, the last it emitted; on success ``error`` is ``""``.
8. **Output over ``--output-limit`` is cut and marked.** The recorded output starts with
   ``OUTPUT_CUT``, is at most the limit long and ends with the last bytes written; the run
   still succeeds.
9. **An output of exactly the limit is kept whole**: nothing was dropped, so no mark.
10. **A cut output stays marked when a secret in it is masked.**
11. **Output is live and the loop turns.** While a job runs, what it printed so far shows in
    ``Runner.busy()``, and the event loop never stands still for ``MAX_LOOP_GAP`` or more.

Cancellation

12. **Cancellation stops the work, promptly.** Cancelling (``Runner.cancel_all``, what a node
    does on ``stop(graceful=False)``) ends the run within ``CANCEL_WITHIN`` seconds: the task
    ends cancelled (the ``CancelledError`` propagates), no process the run started is left,
    the executor's own work stopped (``http``: the server sees the connection closed;
    ``relay``: it saw the cancel), and the runner forgets the run (``busy()`` empty,
    ``running`` 0). The runner reports nothing for it: a run cut short is recorded failed by
    the node (``Node._fail_orphans`` at its next start, lease expiry on the leader), not here.

Secrets

13. **Secrets never reach the output.** The job's secrets (``model.secrets.secret_values``:
    secret-named keys, ``env`` variables, secret headers and notebook parameters) and the
    node's credentials (the runner's ``hidden``) appear neither in the recorded output
    (output or error) nor in the live output, in any spelling (raw, JSON- or
    ``repr``-escaped), whatever characters they hold (quotes, backslashes, accents); ``MASK``
    stands in their place. A process the run starts does not inherit the node's credential
    variables (``DKRON_API_TOKEN``, ...).

Concurrency

14. **Runs at once stay apart.** The registry holds one instance per executor: two runs
    through it at the same time each get their own output and verdict.

A rule an executor breaks is a finding: its case is marked ``xfail(strict=True)`` with the
finding as the reason (the constants below), so the suite stays green, the finding stays
visible, and the mark has to go once the executor is fixed. A notebook run starts a kernel
(seconds): the notebook takes part in the rules where it has something of its own at stake
and is skipped, with the reason, where another run would only repeat what the shell case
shows (its runner's output goes through the shell executor).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil
import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.model.execution import OUTPUT_CUT
from dkron_lab.model.secrets import MASK
from dkron_lab.plugins import EXECUTOR_ENTRY_POINTS, ExecutionRequest, Executor
from dkron_lab.registry import PluginRegistry
from dkron_lab.runner import Runner
from tests.contract.conftest import EXECUTORS, SLOW, START, ExecutorCase, Harness

CANCEL_WITHIN = 10.0
"""Seconds a cancelled run may take to end (a notebook's kernel is killed with its runner)."""

MAX_LOOP_GAP = 2.0
"""Seconds the event loop may go without turning while a job runs (generous: shared CPUs)."""

LIMIT = 4096
"""The output limit of the truncation rules: small, so that writing past it is quick."""

CRASHED = "executor crashed"
"""How the runner records an executor that raised instead of returning a failed result."""


def every_executor(
    *, findings: Mapping[str, str] | None = None, skip: Mapping[str, str] | None = None
) -> pytest.MarkDecorator:
    """Run the test once per executor. ``findings`` maps an executor to a rule it breaks: its
    case is expected to fail, strictly, for that reason. ``skip`` maps one to why the rule is
    not worth its run time there."""
    findings, skip = findings or {}, skip or {}
    params = []
    for name in EXECUTORS:
        marks: list[Any] = [pytest.mark.slow] if name in SLOW else []
        if name in findings:
            reason = findings[name]
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
        if name in skip:
            marks.append(pytest.mark.skip(reason=skip[name]))
        params.append(pytest.param(name, id=name, marks=marks))
    return pytest.mark.parametrize("case", params, indirect=True)


# -- findings and skips --------------------------------------------------------------------------

NOTEBOOK_TAIL = (
    "the notebook executor hands its runner's output to the shell executor, which keeps the "
    "tail and emits it (the shell case checks that); one more kernel start is not worth it"
)

NOTEBOOK_EXACT = "a notebook's output holds its runner's lines: its size cannot be chosen"

NOTEBOOK_APART = (
    "two kernels at once cost more than the suite's time; the notebook executor keeps no "
    "state between runs but its clock and a stateless shell executor"
)

NOTEBOOK_PLAIN_SECRETS = "the run with awkward secrets covers the notebook (a kernel less)"


# -- helpers -------------------------------------------------------------------------------------


def marker(what: str) -> str:
    return f"contract-{what}-{secrets.token_hex(4)}"


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait for ``condition`` to hold (an event, not an amount of time)."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout:g} s") from None


def descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- 1-3: registration and validation ------------------------------------------------------------


@every_executor()
async def test_registered_under_its_name(case: ExecutorCase, registry: PluginRegistry) -> None:
    assert case.name in registry.executor_names
    executor = registry.executor(case.name)
    assert isinstance(executor, Executor)
    assert inspect.iscoroutinefunction(executor.execute)
    validate = getattr(executor, "validate", None)
    assert validate is None or callable(validate)
    aclose = getattr(executor, "aclose", None)
    assert aclose is None or inspect.iscoroutinefunction(aclose)
    for entry_point in importlib.metadata.entry_points(group=EXECUTOR_ENTRY_POINTS):
        if entry_point.name == case.name:
            assert entry_point.load() is type(executor), entry_point


def refusal(registry: PluginRegistry, name: str, config: Mapping[str, str]) -> str:
    with pytest.raises(InvalidJob) as refused:
        registry.validate(name, config, {})
    return str(refused.value)


@every_executor()
async def test_bad_configs_are_refused_at_save_time(
    case: ExecutorCase, registry: PluginRegistry
) -> None:
    good = [
        case.succeeding(marker("ok")),
        case.failing(marker("failing")).job,
        case.writing(LIMIT, marker("end")),
        case.holding(marker("holding"))[0],
        case.leaking("s3cret-value", "n0de-credential"),
    ]
    for job in good:
        registry.validate(case.name, job.executor_config, {})
    for config, fragment in case.bad_configs():
        message = refusal(registry, case.name, config)
        assert fragment in message, (config, message)
    assert case.ran() in (0, None)


@every_executor()
async def test_refusals_name_the_executor(case: ExecutorCase, registry: PluginRegistry) -> None:
    named = (f"{case.name} executor", f"executor {case.name!r}")
    messages = [refusal(registry, case.name, config) for config, _ in case.bad_configs()]
    assert [m for m in messages if not any(name in m for name in named)] == []


# -- 4-6: verdicts -------------------------------------------------------------------------------


@every_executor()
async def test_success(case: ExecutorCase, harness: Callable[..., Harness]) -> None:
    run = harness()
    said = marker("ok")
    job = case.succeeding(said)
    config = dict(job.executor_config)
    execution = await run.run(job)
    assert run.reports == [execution]
    assert job.executor_config == config, "the executor changed the job's config"
    assert execution.success, execution.output
    assert execution.output.rstrip("\n").endswith(said), execution.output
    assert not execution.output.startswith(OUTPUT_CUT)
    assert CRASHED not in execution.output
    assert execution.started_at == START and execution.finished_at == START
    assert execution.job_name == f"contract-{case.name}"
    assert execution.node_name == "contract-node"


@every_executor()
async def test_failure_is_a_result_not_an_exception(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    run = harness()
    failure = case.failing(marker("failing"))
    execution = await run.run(failure.job)
    output = execution.output
    assert run.reports == [execution]
    assert not execution.success
    assert CRASHED not in output, output
    assert failure.shown in output, "the output before the failure is lost"
    error = output.splitlines()[-1]
    assert failure.reason in error, output
    assert output.count(error) == 1, "the reason is repeated in the output"
    assert output.index(failure.shown) < output.index(failure.reason)


@every_executor()
async def test_a_bad_config_at_run_time_fails_the_run(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    run = harness()
    config, fragment = case.bad_configs()[0]
    execution = await run.run(case.job(config))
    assert run.reports == [execution]
    assert not execution.success
    assert CRASHED not in execution.output, execution.output
    assert fragment in execution.output, execution.output


# -- 7-10: output and its limit ------------------------------------------------------------------


@every_executor(skip={"notebook": NOTEBOOK_TAIL})
async def test_the_result_keeps_the_tail_of_what_was_emitted(
    case: ExecutorCase, registry: PluginRegistry
) -> None:
    end = marker("end")
    job = case.writing(3 * LIMIT, end)
    request = ExecutionRequest(
        job_name=job.name,
        execution_id="1780000000000000000-contract-node",
        config=job.executor_config,
        output_limit=LIMIT,
    )
    chunks: list[bytes] = []
    result = await registry.executor(case.name).execute(request, chunks.append)
    emitted = b"".join(chunks)
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert isinstance(result.output, bytes) and isinstance(result.error, str)
    assert result.success is True and result.error == "", result
    assert len(result.output) <= LIMIT
    assert result.output.rstrip(b"\n").endswith(end.encode())
    assert len(emitted) >= 3 * LIMIT
    assert emitted.endswith(result.output)


@every_executor(skip={"notebook": NOTEBOOK_TAIL})
async def test_output_over_the_limit_is_cut_and_marked(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    run = harness(output_limit=LIMIT)
    end = marker("end")
    execution = await run.run(case.writing(3 * LIMIT, end))
    assert execution.success, execution.output[-500:]
    assert execution.output.startswith(OUTPUT_CUT), execution.output[:200]
    assert len(execution.output) <= LIMIT
    assert execution.output.rstrip("\n").endswith(end)


@every_executor(skip={"notebook": NOTEBOOK_EXACT})
async def test_output_of_exactly_the_limit_is_kept_whole(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    run = harness(output_limit=LIMIT)
    end = marker("end")
    execution = await run.run(case.writing(LIMIT, end))
    assert execution.success
    assert not execution.output.startswith(OUTPUT_CUT), execution.output[:200]
    assert len(execution.output) == LIMIT


@every_executor(skip={"notebook": NOTEBOOK_TAIL})
async def test_a_cut_output_stays_marked_when_a_secret_in_it_is_masked(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    end = marker("end-and-a-credential-of-the-node")
    run = harness(output_limit=LIMIT, hidden=frozenset({end}))
    execution = await run.run(case.writing(3 * LIMIT, end))
    assert execution.success
    assert execution.output.rstrip("\n").endswith(MASK)
    assert execution.output.startswith(OUTPUT_CUT), execution.output[:200]


# -- 11, 12: live output and cancellation --------------------------------------------------------


async def watch_until_live(runner: Runner, shown: str, timeout: float = 60.0) -> float:
    """Wait until ``shown`` is in the live output of the one running execution; return the
    longest the event loop went without turning meanwhile."""
    widest = 0.0
    last = time.monotonic()

    def live() -> bool:
        nonlocal widest, last
        now = time.monotonic()
        widest, last = max(widest, now - last), now
        return any(shown in execution.output for execution in runner.busy())

    await until(live, timeout, f"{shown!r} in the live output")
    return widest


@every_executor()
async def test_cancellation_stops_the_work_promptly(
    case: ExecutorCase, harness: Callable[..., Harness]
) -> None:
    run = harness()
    job, shown = case.holding(marker("holding"))
    task = run.runner.execute(job, group=1)
    widest = await watch_until_live(run.runner, shown)
    assert widest < MAX_LOOP_GAP, f"the event loop stood still for {widest:.2f} s"
    started = descendants()

    began = time.monotonic()
    async with asyncio.timeout(CANCEL_WITHIN):
        await run.runner.cancel_all()
    took = time.monotonic() - began

    assert task.cancelled()
    assert took < CANCEL_WITHIN
    await until(lambda: all(map(gone, started)), CANCEL_WITHIN, "the run's processes gone")
    await until(case.stopped, CANCEL_WITHIN, "the executor's work stopped")
    assert run.runner.busy() == [] and run.runner.running == 0
    assert run.reports == []


# -- 13: secrets ---------------------------------------------------------------------------------


async def leak(
    case: ExecutorCase,
    harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    awkward: str,
) -> None:
    """Run a job that prints a secret, a node credential and its environment; none of it may
    show, live or recorded. ``awkward``: characters the secrets hold besides letters."""
    secret = f"s3cret{awkward}{secrets.token_hex(6)}"
    credential = f"n0de{awkward}credential-{secrets.token_hex(6)}"
    node_token = f"node-api-token-{secrets.token_hex(6)}"
    monkeypatch.setenv("DKRON_API_TOKEN", node_token)  # a job's process must not inherit it
    run = harness(hidden=frozenset({credential}))
    task = run.runner.execute(case.leaking(secret, credential), group=1)
    seen: list[str] = []
    async with asyncio.timeout(90.0):
        while not task.done():
            seen.extend(execution.output for execution in run.runner.busy())
            await asyncio.sleep(0.01)
    execution = task.result()
    for text in [execution.output, *seen]:
        for value in (secret, credential, node_token):
            assert value not in text, text
    assert CRASHED not in execution.output, execution.output
    assert execution.output.count(MASK) >= 2, execution.output
    # Nor in another spelling: JSON or Python string escapes of the same value.
    spelled = {f(value)[1:-1] for f in (json.dumps, repr) for value in (secret, credential)}
    for value in spelled - {secret, credential}:
        assert value not in execution.output, execution.output


@every_executor(skip={"notebook": NOTEBOOK_PLAIN_SECRETS})
async def test_secrets_never_reach_the_output(
    case: ExecutorCase, harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    await leak(case, harness, monkeypatch, awkward="-")


@every_executor()
async def test_secrets_with_quotes_backslashes_and_accents_never_reach_the_output(
    case: ExecutorCase, harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    await leak(case, harness, monkeypatch, awkward='"q\\\\é-')


# -- 14: concurrency -----------------------------------------------------------------------------


@every_executor(skip={"notebook": NOTEBOOK_APART})
async def test_runs_at_once_stay_apart(case: ExecutorCase, harness: Callable[..., Harness]) -> None:
    run = harness()
    said = {group: marker(f"run{group}") for group in (1, 2)}
    failure = case.failing(said[2])
    tasks = {
        1: run.runner.execute(case.succeeding(said[1]), group=1),
        2: run.runner.execute(failure.job, group=2),
    }
    async with asyncio.timeout(90.0):
        done: Mapping[int, Any] = {group: await task for group, task in tasks.items()}
    assert done[1].success and not done[2].success
    assert said[1] in done[1].output and said[2] not in done[1].output
    assert failure.shown in done[2].output and said[1] not in done[2].output
    assert failure.reason not in done[1].output
    assert done[1].id != done[2].id
