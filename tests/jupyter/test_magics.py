"""The ``%dkron`` magics in an IPython shell against a real headless server (a ``dkron-lab
agent`` subprocess): what each command returns, and the ``UsageError`` for bad arguments.
``test_kernel.py`` runs them in a real kernel started by a real Jupyter server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from dkron_lab.client import Client
from dkron_lab.errors import JobNotFound
from dkron_lab.jupyter.magics import DkronMagics, cell_parser, job_from_cell
from dkron_lab.jupyter.results import Record, Table, Text
from dkron_lab.testing import wait_for
from tests.jupyter.conftest import HEADLESS_TOKEN


@pytest.fixture
def shell(headless: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    for name in ("DKRON_LAB_URL", "DKRON_LAB_TOKEN", "JPY_PARENT_PID", "DKRON_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    ip.run_line_magic("load_ext", "dkron_lab")
    ip.run_line_magic("dkron", f"connect {headless} {HEADLESS_TOKEN}")
    yield ip
    ip.run_line_magic("unload_ext", "dkron_lab")
    with Client(headless, HEADLESS_TOKEN) as client:
        for job in client.jobs():
            client.delete_job(job["name"])


def dkron(ip: InteractiveShell, line: str, cell: str | None = None) -> Any:
    if cell is None:
        return ip.run_line_magic("dkron", line)
    return ip.run_cell_magic("dkron", line, cell)


def test_status_names_the_node_and_its_leader(shell: InteractiveShell, headless: str) -> None:
    status = dkron(shell, "")
    assert isinstance(status, Record)
    assert status["url"] == headless and status["node"] == "s1" and status["leader"] == "s1"
    assert "<table" in status._repr_html_() and "s1" in repr(status)


def test_a_job_cell_creates_a_shell_job(shell: InteractiveShell) -> None:
    created = dkron(
        shell,
        "job greet --schedule '@every 1h' --tags role=x --retries 2 --timezone Europe/Paris",
        "echo hello $USER\n",
    )
    assert isinstance(created, Record) and created["name"] == "greet"
    jobs = dkron(shell, "jobs")
    assert isinstance(jobs, Table) and [j["name"] for j in jobs] == ["greet"]
    (job,) = jobs
    assert job["executor_config"] == {"command": "echo hello $USER", "shell": "true"}
    assert (job["retries"], job["timezone"], job["tags"]) == (2, "Europe/Paris", {"role": "x"})
    assert "greet" in jobs._repr_html_() and "greet" in repr(jobs)
    assert list(jobs.to_pandas()["name"]) == ["greet"]


def test_run_wait_returns_the_run_s_executions_and_logs_its_output(
    shell: InteractiveShell,
) -> None:
    dkron(shell, "job hi --schedule '@every 1h'", "echo hi from dkron")
    run = dkron(shell, "run hi --wait")
    assert isinstance(run, Table) and len(run) == 1
    assert run[0]["success"] is True and "hi from dkron" in run[0]["output"]
    logs = dkron(shell, "logs hi")
    assert isinstance(logs, Text) and logs.strip() == "hi from dkron"
    assert "<pre>" in logs._repr_html_()
    executions = dkron(shell, "executions hi --last 5")
    assert [e["id"] for e in executions] == [run[0]["id"]]
    assert dkron(shell, "executions hi --failed") == []


def test_logs_follow_prints_a_running_job_until_it_ends(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    dkron(shell, "job slow --schedule '@every 1h'", "echo start; sleep 1; echo end")
    shell.run_line_magic("config", "DkronMagics.follow_interval = 0.1")
    dkron(shell, "run slow")
    client = Client(shell.magics_manager.registry["DkronMagics"].client.url, HEADLESS_TOKEN)
    with client:
        wait_for(lambda: client.busy() or client.executions("slow"), 20, "the run to start")
    assert dkron(shell, "logs slow --follow") is None
    out = capsys.readouterr().out
    assert "end" in out


def test_enable_disable_show_delete(shell: InteractiveShell) -> None:
    dkron(shell, "job j --schedule '@every 1h' --disabled", "true")
    assert dkron(shell, "show j")["disabled"] is True
    assert dkron(shell, "enable j")["disabled"] is False
    assert dkron(shell, "enable j")["disabled"] is False  # already enabled: unchanged
    assert dkron(shell, "disable j")["disabled"] is True
    assert dkron(shell, "delete j")["name"] == "j"
    assert dkron(shell, "jobs") == []


def test_members_table(shell: InteractiveShell) -> None:
    members = dkron(shell, "members")
    assert [m["Name"] for m in members] == ["s1"] and members[0]["statusText"] == "alive"


def test_a_yaml_body_is_a_whole_job(shell: InteractiveShell) -> None:
    spec = "schedule: '@every 2h'\nexecutor: shell\nexecutor_config:\n  command: date\n"
    dkron(shell, "job spec --retries 1", spec)
    job = dkron(shell, "show spec")
    assert (job["schedule"], job["executor_config"]["command"], job["retries"]) == (
        "@every 2h", "date", 1
    )  # fmt: skip


def test_config_sets_the_default_timezone(shell: InteractiveShell) -> None:
    shell.run_line_magic("config", "DkronMagics.default_timezone = 'Asia/Tokyo'")
    dkron(shell, "job tz --schedule '@every 1h'", "true")
    assert dkron(shell, "show tz")["timezone"] == "Asia/Tokyo"


def test_server_errors_keep_their_class_and_show_one_line(shell: InteractiveShell) -> None:
    with pytest.raises(JobNotFound) as raised:
        dkron(shell, "show nope")
    assert raised.value._render_traceback_() == [f"JobNotFound: {raised.value.message}"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "cell", "says"),
    [
        ("nonsense", None, "invalid choice: 'nonsense'"),
        ("run", None, "the following arguments are required: name"),
        ("executions x --last zero", None, "invalid int value"),
        ("job x --schedule '@every 1h'", None, "cell magic"),
        ("job x", "echo hi", "--schedule"),
        ("job x --schedule '@every 1h'", " \n", "the cell body is the shell command"),
        ("job x --schedule '@every 1h' --tags role", "true", "--tags takes key=value"),
        ("job x --schedule '@every 1h' --notebook a.ipynb --parameters '[1]'", None, "JSON"),
        ("job x --schedule '@every 1h' --notebook a.ipynb", "echo", "body stays empty"),
        ("sql", "   ", "the cell body is the query"),
        ("sql 1x <<", "SELECT 1", "not a variable name"),
        ("frobnicate", "x", "invalid choice: 'frobnicate'"),
        ("run 'unclosed", None, "check the quotes"),
    ],
)
def test_bad_arguments_raise_a_usage_error_saying_what_to_type(
    shell: InteractiveShell, line: str, cell: str | None, says: str
) -> None:
    with pytest.raises(UsageError, match=r".*" + __import__("re").escape(says)):
        dkron(shell, line, cell)


def test_help_prints_and_returns_nothing(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dkron(shell, "--help") is None
    assert "executions" in capsys.readouterr().out
    assert dkron(shell, "job --help") is None  # the cell form's options, from a line
    assert "--schedule SPEC" in capsys.readouterr().out


def test_connect_without_a_url_goes_back_to_discovery(
    shell: InteractiveShell, headless: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKRON_LAB_URL", headless)
    monkeypatch.setenv("DKRON_LAB_TOKEN", HEADLESS_TOKEN)
    status = dkron(shell, "connect")
    assert (status["url"], status["found by"]) == (headless, "DKRON_LAB_URL")


def test_dashboard_is_the_widget(shell: InteractiveShell) -> None:
    widget = pytest.importorskip("dkron_lab.jupyter.widget")
    dashboard = dkron(shell, "dashboard --refresh 60")
    try:
        assert isinstance(dashboard, widget.Dashboard)
    finally:
        dashboard.close()


def test_job_from_cell_builds_a_notebook_job() -> None:
    options = cell_parser().parse_args(
        ["job", "nb", "--schedule", "@daily", "--notebook", "r.ipynb", "--parameters",
         '{"n": 3}', "--kernel", "python3"]
    )  # fmt: skip
    job = job_from_cell(options, "", default_timezone="UTC")
    assert job == {
        "name": "nb",
        "schedule": "@daily",
        "timezone": "UTC",
        "executor": "notebook",
        "executor_config": {
            "path": os.path.abspath("r.ipynb"),
            "parameters": '{"n": 3}',
            "kernel": "python3",
        },
    }


def test_a_notebook_job_fits_on_one_line(
    shell: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    created = dkron(
        shell, "job nb --schedule @daily --notebook report.ipynb --parameters '{\"n\": 1}'"
    )
    assert created["executor"] == "notebook"
    assert created["executor_config"]["path"] == str(tmp_path / "report.ipynb")
    assert json.loads(created["executor_config"]["parameters"]) == {"n": 1}


def test_magics_are_configurable() -> None:
    traits = DkronMagics.class_traits(config=True)
    assert {"url", "token", "timeout", "default_timezone", "sql_output", "max_rows"} <= set(traits)


def test_sql_cells_return_a_dataframe_arrow_or_a_duckdb_relation(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    dkron(shell, "job s --schedule '@every 1h'", "echo s")
    dkron(shell, "run s --wait")
    query = "SELECT job_name, count(*) AS runs FROM executions GROUP BY job_name"
    frame = dkron(shell, "sql", query)
    assert type(frame).__name__ == "DataFrame" and frame.to_dict("records") == [
        {"job_name": "s", "runs": 1}
    ]
    assert dkron(shell, "sql --out arrow", query).to_pylist() == [{"job_name": "s", "runs": 1}]
    relation = dkron(shell, "sql --out relation", query)
    assert relation.fetchall() == [("s", 1)]
    assert dkron(shell, "sql counts << --max-rows 1", "SELECT * FROM range(5)") is None
    assert len(shell.user_ns["counts"]) == 1
    assert "only the first 1 rows" in capsys.readouterr().err
    shell.run_line_magic("config", "DkronMagics.sql_output = 'arrow'")
    assert type(dkron(shell, "sql", "SELECT 1 AS one")).__name__ == "Table"
