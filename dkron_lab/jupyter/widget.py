"""The dashboard widget: a cluster's jobs, runs, live output and members in a notebook cell.

::

    from dkron_lab.jupyter.widget import Dashboard
    Dashboard()                      # the dkron-lab server that started this kernel
    Dashboard(Client(url=..., token=...), refresh=5)

How it is built (anywidget, no build step, nothing from a CDN):

- **State flows Python → browser in synced traits** (``jobs``, ``busy``, ``members``, ``leader``,
  ``executions`` of the ``selected`` job, ``preview``, ``errors``, ``notice``, ``last_refresh``).
  The browser renders them and holds no truth of its own.
- **Requests flow browser → Python as custom messages** ``{"action": ..., ...}`` (``ACTIONS``),
  plus the ``selected`` trait, which the browser sets when a job row is clicked.
- **Every server call is made in Python through ``dkron_lab.client.Client``**, never from the
  browser, so the dashboard works under whatever authentication the client carries.
- **One worker thread owns the client.** It serves requests in order and refreshes everything
  every ``refresh`` seconds when idle. Message handlers on the kernel's thread only enqueue, so a
  slow or dead server never blocks the kernel; the worker stops when the widget is closed.
  ipywidgets documents trait updates from a background thread as supported.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from dkron_lab.client import Client
from dkron_lab.errors import DkronError, NotFoundError, ValidationError

__all__ = ["ACTIONS", "Dashboard", "job_from_form", "job_row", "member_row"]

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"

# How many executions of the selected job are shown, and how much of each output.
EXECUTIONS_SHOWN = 20
OUTPUT_SHOWN = 8000
PREVIEW_COUNT = 5


Request = tuple[str, dict[str, Any]]
_STOP: Request = ("stop", {})


class Dashboard(anywidget.AnyWidget):
    """A live view of a dkron-lab (or Dkron) cluster with run / enable / disable / delete, the
    executions of a job, the live output of running jobs, and a form to create or edit a job.

    ``client`` is any ``dkron_lab.Client``; ``None`` makes one that finds the server that started
    the kernel (``Client()``'s discovery). ``refresh`` is the number of seconds between refreshes.
    """

    _esm = _STATIC / "dashboard.js"
    _css = _STATIC / "dashboard.css"

    url = traitlets.Unicode("").tag(sync=True)
    interval = traitlets.Float(2.0).tag(sync=True)
    jobs = traitlets.List(traitlets.Dict()).tag(sync=True)
    busy = traitlets.List(traitlets.Dict()).tag(sync=True)
    members = traitlets.List(traitlets.Dict()).tag(sync=True)
    leader = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    executions = traitlets.List(traitlets.Dict()).tag(sync=True)
    preview = traitlets.Dict().tag(sync=True)
    errors = traitlets.Dict().tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    last_refresh = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client: Client | None = None, *, refresh: float = 2.0) -> None:
        if refresh <= 0:
            raise ValidationError(f"refresh must be a positive number of seconds, not {refresh}")
        self._owns_client = client is None
        self._client = client if client is not None else Client()  # finds the server
        super().__init__(url=self._client.url, interval=float(refresh))
        self._requests: queue.Queue[Request] = queue.Queue()
        self._wanted_preview: dict[str, str] = {}
        self._stopped = threading.Event()
        self.on_msg(_on_message)
        self._worker = threading.Thread(target=self._work, name="dkron-dashboard", daemon=True)
        self._worker.start()

    # -- the Python side's own API -----------------------------------------------------------

    @property
    def client(self) -> Client:
        return self._client

    def refresh(self) -> None:
        """Refresh everything now rather than at the next tick."""
        self.request("refresh")

    def request(self, action: str, **arguments: Any) -> None:
        """Queue one of ``ACTIONS``, exactly as the browser does; the worker serves it."""
        if action not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise ValidationError(f"unknown dashboard action {action!r}; known: {known}")
        if action == "preview":
            arguments = {k: str(arguments.get(k) or "") for k in ("schedule", "timezone")}
            self._wanted_preview = arguments
        self._requests.put((action, arguments))

    def close(self) -> None:
        """Stop the refresher, close the client if the dashboard made it, close the widget."""
        stopped = getattr(self, "_stopped", None)  # None: __init__ failed (this is __del__)
        if stopped is not None and not stopped.is_set():
            stopped.set()
            self._requests.put(_STOP)
            if threading.current_thread() is not self._worker:
                self._worker.join(timeout=15)
            if self._owns_client:
                self._client.close()
        super().close()

    @traitlets.observe("selected")
    def _selected_changed(self, change: Mapping[str, Any]) -> None:
        self.executions = []
        self._requests.put(("executions", {}))

    # -- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        due = 0.0  # refresh at once
        while True:
            try:
                batch = [self._requests.get(timeout=max(0.0, due - time.monotonic()))]
            except queue.Empty:
                batch = [("refresh", {})]
            while not self._requests.empty():  # serve a burst of clicks, then refresh once
                batch.append(self._requests.get_nowait())
            if _STOP in batch:
                return
            refreshing = [self._serve(request) for request in batch]
            if any(refreshing):
                self._refresh()
                due = time.monotonic() + self.interval

    def _serve(self, request: Request) -> bool:
        """Serve one request; true if everything should be refreshed afterwards."""
        action, arguments = request
        try:
            ACTIONS[action](self, **arguments)
        except Exception as exc:  # shown in the widget: the worker lives on
            if not isinstance(exc, DkronError):
                log.exception("dashboard action %r failed", action)
            self._set_error(_ERROR_SLOT.get(action, "action"), exc)
        return action in _REFRESHING

    def _refresh(self) -> None:
        try:
            jobs = [job_row(job) for job in self._client.jobs()]
            busy = self._client.busy()
            members = [member_row(member) for member in self._client.members()]
            leader = self._client.leader().get("Name", "")
        except Exception as exc:  # a dead server is shown, not raised
            if not isinstance(exc, DkronError):
                log.exception("dashboard refresh failed")
            self._set_error("refresh", exc)
            return
        with self.hold_sync():
            self.jobs, self.busy, self.members, self.leader = jobs, busy, members, leader
            self._set_error("refresh", None)
            self.last_refresh = datetime.now(UTC).isoformat(timespec="seconds")
        self._load_executions()

    def _load_executions(self) -> None:
        name = self.selected
        if not name:
            return
        if name not in {job["name"] for job in self.jobs}:
            self.executions = []
            return
        found = self._client.executions(name, end=EXECUTIONS_SHOWN, output_size_limit=OUTPUT_SHOWN)
        if name == self.selected:  # the user may have clicked another job meanwhile
            self.executions = found

    def _set_error(self, slot: str, exc: BaseException | None) -> None:
        errors = {k: v for k, v in self.errors.items() if k != slot}
        if exc is not None:
            errors[slot] = {"error": str(exc), "type": type(exc).__name__}
        self.errors = errors

    # -- actions (run on the worker) -----------------------------------------------------------

    def _run(self, job: str) -> None:
        self._client.run_job(job)
        self._done("action", f"run of {job!r} started")

    def _enable(self, job: str) -> None:
        self._switch(job, disabled=False)

    def _disable(self, job: str) -> None:
        self._switch(job, disabled=True)

    def _switch(self, job: str, *, disabled: bool) -> None:
        # Not a toggle: pressing "disable" twice must not enable the job again.
        self._client.set_enabled(job, not disabled)
        self._done("action", f"{job!r} {'disabled' if disabled else 'enabled'}")

    def _delete(self, job: str) -> None:
        self._client.delete_job(job)
        if self.selected == job:
            self.selected = ""
        self._done("action", f"{job!r} deleted")

    def _save(self, form: Mapping[str, Any]) -> None:
        name = str(form.get("name") or "").strip()
        existing = self._existing(name)
        saved = self._client.put_job(job_from_form(form, existing))
        self.selected = saved.get("name", name)
        self._done("form", f"{self.selected!r} {'saved' if existing else 'created'}")

    def _existing(self, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            return self._client.job(name)
        except NotFoundError:
            return None

    def _preview(self, schedule: str = "", timezone: str = "") -> None:
        if {"schedule": schedule, "timezone": timezone} != self._wanted_preview:
            return  # the user typed on: only the latest schedule is worth asking about
        if not schedule.strip():
            self.preview = {}
            self._set_error("preview", None)
            return
        try:
            found = self._client.schedule_preview(
                schedule, timezone=timezone or None, count=PREVIEW_COUNT
            )
        except DkronError:
            self.preview = {}
            raise
        with self.hold_sync():
            self.preview = found
            self._set_error("preview", None)

    def _executions(self) -> None:
        self._load_executions()

    def _nothing(self) -> None:
        """``refresh``: the refresh itself follows every refreshing action."""

    def _done(self, slot: str, notice: str) -> None:
        with self.hold_sync():
            self._set_error(slot, None)
            self.notice = notice


def _on_message(widget: Dashboard, content: Any, buffers: list[bytes]) -> None:
    """A custom message from the browser: ``{"action": name, ...arguments}``."""
    if not isinstance(content, dict) or content.get("action") not in ACTIONS:
        log.warning("dashboard: ignoring unknown message %r", content)
        return
    arguments = {k: v for k, v in content.items() if k != "action"}
    widget.request(content["action"], **arguments)


ACTIONS: dict[str, Callable[..., None]] = {
    "refresh": Dashboard._nothing,
    "run": Dashboard._run,
    "enable": Dashboard._enable,
    "disable": Dashboard._disable,
    "delete": Dashboard._delete,
    "save": Dashboard._save,
    "preview": Dashboard._preview,
    "executions": Dashboard._executions,
}
"""What the browser may ask for, by name; arguments are the message's other keys."""

_REFRESHING = {"refresh", "run", "enable", "disable", "delete", "save"}
_ERROR_SLOT = {"save": "form", "preview": "preview", "refresh": "refresh"}


# -- pure helpers --------------------------------------------------------------------------------


def job_row(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job as the server returned it, plus ``last_result`` (``"success"``, ``"failed"`` or
    ``""`` if it never ran) and ``last_run`` (the later of ``last_success`` and ``last_error``)."""
    success, error = _instant(job.get("last_success")), _instant(job.get("last_error"))
    if success is None and error is None:
        result, last = "", None
    elif error is None or (success is not None and success >= error):
        result, last = "success", job.get("last_success")
    else:
        result, last = "failed", job.get("last_error")
    return {**job, "last_result": result, "last_run": last or ""}


def member_row(member: Mapping[str, Any]) -> dict[str, Any]:
    """What the dashboard shows of a Dkron Member; only these are synced, so a field that changes
    on every request (dkron-lab's ``id``) does not cost an update per refresh."""
    return {key: member[key] for key in _MEMBER_FIELDS if key in member}


_MEMBER_FIELDS = ("Name", "Addr", "Port", "Tags", "Status", "statusText")


def job_from_form(
    form: Mapping[str, Any], existing: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The job JSON for the dashboard's form, over ``existing`` when the job is being edited (a
    save is a full replace, so fields the form does not show are kept). ``ValidationError`` for
    what the form itself can tell is wrong; the server checks the rest.

    The server shows secrets (``env`` values, keys such as ``password``) as ``"***"``, so the
    dashboard never holds them; sent back as ``"***"``, they keep their stored values."""
    executor = str(form.get("executor") or "shell")
    base = dict(existing or {})
    config = dict(base.get("executor_config") or {}) if base.get("executor") == executor else {}
    return base | {
        "name": str(form.get("name") or "").strip(),
        "schedule": str(form.get("schedule") or "").strip(),
        "timezone": str(form.get("timezone") or "").strip(),
        "executor": executor,
        "executor_config": config | _executor_config(executor, form),
        "tags": _tags(str(form.get("tags") or "")),
        "retries": _retries(form.get("retries")),
        "concurrency": str(form.get("concurrency") or "allow"),
        "disabled": bool(form.get("disabled")),
    }


def _executor_config(executor: str, form: Mapping[str, Any]) -> dict[str, str]:
    if executor == "shell":
        return {"command": str(form.get("command") or ""), "shell": "true"}
    if executor == "http":
        config = {"method": str(form.get("method") or "GET"), "url": str(form.get("url") or "")}
        return config | ({"body": str(form["body"])} if form.get("body") else {})
    if executor == "notebook":
        config = {"path": str(form.get("notebook") or "")}
        return config | ({"parameters": str(form["parameters"])} if form.get("parameters") else {})
    return {}  # another executor: its config is kept as it was


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValidationError(
                f"tag {item!r} is not key=value: write tags as role=web, dc=eu (comma separated)"
            )
        tags[key.strip()] = value.strip()
    return tags


def _retries(value: Any) -> int:
    text = str(value if value is not None else "").strip() or "0"
    if not text.isdigit():
        raise ValidationError(f"retries must be a whole number of 0 or more, not {text!r}")
    return int(text)


def _instant(text: Any) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
