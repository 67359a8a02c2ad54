"""Secrets in jobs: which values are write-only, how reads mask them, how a job saved back with
the mask keeps what was stored, and how output and child environments are scrubbed.

A job's secrets are the values of

- ``executor_config`` keys whose name says so (``is_secret_name``: the last word is
  ``password``, ``token``, ``secret``, ``authorization``, ``key``, ...) or that the job names in
  ``secret_keys``;
- every variable of ``executor_config["env"]`` (``"K1=v1,K2=v2"``);
- the ``http`` executor's ``headers`` (a JSON array of ``"Name: value"``) and the ``notebook``
  executor's string ``parameters`` (a JSON object) whose name says so, or that ``secret_keys``
  names.

Every read (API, SQL, widget, webhooks) shows them as ``MASK``; the replicated state and the
executors keep the real values. Everything here is pure: the node and the runner call it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace

from dkron_lab.errors import InvalidJob
from dkron_lab.model.job import Job

__all__ = [
    "MASK",
    "MIN_SCRUBBED_LENGTH",
    "NODE_VARIABLES",
    "OutputScrubber",
    "child_environment",
    "is_secret_name",
    "mask_job",
    "masked_config",
    "scrub",
    "scrub_text",
    "secret_values",
    "spelled",
    "unmask_job",
]

MASK = "***"
"""What a read shows in place of a secret."""

MIN_SCRUBBED_LENGTH = 4
"""Shorter values are not scrubbed from output: masking every ``a`` would garble it."""

NODE_VARIABLES = frozenset(
    {
        "DKRON_API_TOKEN",
        "DKRON_API_TOKENS_FILE",
        "DKRON_ENCRYPT",
        "DKRON_MAIL_PASSWORD",
        "DKRON_TLS_KEY",
        "JUPYTER_TOKEN",
    }
)
"""The node's own credentials in its environment: no job's process inherits them."""

_SECRET_WORDS = frozenset(
    {
        "authorization",
        "token",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "key",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
        "cookie",
    }
)
_SECRET_ENDINGS = ("token", "password", "passwd", "secret")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

Rewrite = Callable[[tuple[str, ...], str], str]
"""Called with a secret's place (``(key,)``, ``(key, variable)`` or ``(key, header)``) and its
value; returns the value to put there."""


@functools.lru_cache(maxsize=4096)  # every read of every job asks about the same few keys
def is_secret_name(name: str) -> bool:
    """Whether a config key, variable or header called ``name`` holds a secret: its last word
    (split at ``_``, ``-``, ``.`` and camelCase) is a secret word, or ends in ``token``,
    ``password``, ``passwd`` or ``secret`` (``authToken``, ``DB_PASSWORD``, ``api-key``,
    ``X-Auth-Token``); ``keyboard``, ``monkey`` or ``key_file`` do not."""
    words = _WORD.findall(name)
    if not words:
        return False
    last = words[-1].lower()
    if last.endswith("s") and last[:-1] in _SECRET_WORDS:
        last = last[:-1]
    return last in _SECRET_WORDS or last.endswith(_SECRET_ENDINGS)


def mask_job(job: Job) -> Job:
    """The job as reads show it: every secret that is not empty replaced by ``MASK``."""
    config = masked_config(job)
    return job if config == job.executor_config else replace(job, executor_config=config)


def masked_config(job: Job) -> dict[str, str]:
    """``job.executor_config`` as reads show it (a new dict): ``mask_job`` without building a
    new job, for readers that only encode it."""
    return _rewrite(job, _mask)


def _mask(_: tuple[str, ...], value: str) -> str:
    return MASK if value else value


def unmask_job(job: Job, stored: Job | None) -> Job:
    """``job`` to save, with each ``MASK`` where ``stored`` has a secret replaced by that secret,
    so a job read from the API can be saved back. ``InvalidJob`` for a ``MASK`` in a secret's
    place where nothing is stored. A ``MASK`` anywhere else is a value like any other."""
    kept = _secrets(stored) if stored is not None else {}

    def restore(place: tuple[str, ...], value: str) -> str:
        if value != MASK:
            return value
        if place in kept:
            return kept[place]
        raise InvalidJob(
            f"{_describe(place)} of job {job.name!r} is masked ({MASK!r}) and no value is "
            "stored to keep: give the real value (reads show secrets masked; a job saved back "
            f"with {MASK!r} keeps its stored ones)"
        )

    if not job.executor_config:
        return job
    config = _rewrite(job, restore)
    # A key ``secret_keys`` no longer names, sent back as the mask it was read as.
    for key, value in config.items():
        if value == MASK and (key,) in kept:
            config[key] = kept[(key,)]
    return replace(job, executor_config=config)


def secret_values(job: Job) -> frozenset[str]:
    """The job's secret values long enough to scrub from its output; for a header such as
    ``Bearer <t>``, ``<t>`` as well."""
    values: set[str] = set()
    for value in _secrets(job).values():
        for part in (value, *value.split()[1:]):
            values.update(_spellings(part))
    return frozenset(v for v in values if len(v) >= MIN_SCRUBBED_LENGTH)


def spelled(values: Iterable[str]) -> frozenset[str]:
    """Each of ``values`` in every spelling an executor may print it in (``_spellings``)."""
    return frozenset(spelling for value in values for spelling in _spellings(value))


def _spellings(value: str) -> set[str]:
    """``value`` as printed raw, in JSON (ASCII-escaped or not) and as a Python literal: an
    executor that prints its config escaped must not show a secret holding a quote, a
    backslash or an accent."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
    }


def _secrets(job: Job) -> dict[tuple[str, ...], str]:
    """Every secret of ``job`` that is not empty, by place."""
    found: dict[tuple[str, ...], str] = {}

    def collect(place: tuple[str, ...], value: str) -> str:
        if value and value != MASK:
            found[place] = value
        return value

    _rewrite(job, collect)
    return found


def _rewrite(job: Job, rewrite: Rewrite) -> dict[str, str]:
    """``job.executor_config`` with ``rewrite`` applied to every secret in it."""
    named = frozenset(job.secret_keys)
    config = {}
    for key, value in job.executor_config.items():
        if key in named or is_secret_name(key):
            config[key] = rewrite((key,), value)
        elif key == "env":
            config[key] = _rewrite_env(key, value, rewrite)
        elif key == "headers" and job.executor == "http":
            config[key] = _rewrite_headers(key, value, named, rewrite)
        elif key == "parameters" and job.executor == "notebook":
            config[key] = _rewrite_parameters(key, value, named, rewrite)
        else:
            config[key] = value
    return config


def _rewrite_env(key: str, text: str, rewrite: Rewrite) -> str:
    entries = []
    for entry in text.split(","):
        name, equals, value = entry.partition("=")
        if equals and name.strip():
            entry = f"{name}={rewrite((key, name.strip()), value)}"
        entries.append(entry)
    return ",".join(entries)


def _rewrite_headers(key: str, text: str, named: Collection[str], rewrite: Rewrite) -> str:
    try:
        entries = json.loads(text) if text else []
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return rewrite((key,), text)  # not headers the executor would send: all of it
    secret = {name.lower() for name in named}
    headers = []
    for entry in entries:
        name, colon, value = entry.partition(":")
        name = name.strip()
        if colon and (name.lower() in secret or is_secret_name(name)):
            given = value.strip()
            rewritten = rewrite((key, name.lower()), given)
            if rewritten != given:
                entry = f"{name}: {rewritten}"
        headers.append(entry)
    return text if headers == entries else json.dumps(headers)


def _rewrite_parameters(key: str, text: str, named: Collection[str], rewrite: Rewrite) -> str:
    try:
        parameters = json.loads(text) if text.strip() else {}
    except ValueError:
        return text  # not parameters the executor would run with: refused when saved
    if not isinstance(parameters, dict):
        return text
    rewritten = dict(parameters)
    for name, value in parameters.items():
        if isinstance(value, str) and (name in named or is_secret_name(name)):
            rewritten[name] = rewrite((key, name), value)
    return text if rewritten == parameters else json.dumps(rewritten)


_KINDS = {"env": "variable", "headers": "header", "parameters": "parameter"}


def _describe(place: tuple[str, ...]) -> str:
    if len(place) == 1:
        return f"executor_config.{place[0]}"
    return f"executor_config.{place[0]} {_KINDS[place[0]]} {place[1]!r}"


# -- output and environments ---------------------------------------------------------------------

_MASK_BYTES = MASK.encode()


def _pattern(values: Iterable[str]) -> re.Pattern[bytes] | None:
    encoded = sorted({v.encode() for v in values if len(v) >= MIN_SCRUBBED_LENGTH}, key=len)
    if not encoded:
        return None
    # Longest first: a value that contains another is masked whole.
    return re.compile(b"|".join(re.escape(v) for v in reversed(encoded)))


def scrub(data: bytes, values: Collection[str], *, cut: bool = False) -> bytes:
    """``data`` with every occurrence of each of ``values`` replaced by ``MASK``.

    ``cut``: ``data`` is a tail that may begin inside a value; a beginning that is the end of
    one (two bytes or more) is masked too."""
    pattern = _pattern(values)
    if pattern is None:
        return data
    head = _cut_head(data, values) if cut else 0
    return (_MASK_BYTES if head else b"") + pattern.sub(_MASK_BYTES, data[head:])


def scrub_text(text: str, values: Collection[str]) -> str:
    """``scrub`` for text (lone surrogates pass through)."""
    scrubbed = scrub(text.encode("utf-8", "surrogatepass"), values)
    return scrubbed.decode("utf-8", "surrogatepass")


def _cut_head(data: bytes, values: Collection[str]) -> int:
    """How many bytes at the start of ``data`` are the end of a value (0: none)."""
    longest = 0
    for value in values:
        if len(value) < MIN_SCRUBBED_LENGTH:
            continue
        encoded = value.encode()
        for size in range(min(len(encoded) - 1, len(data)), max(longest, 1), -1):
            if data.startswith(encoded[-size:]):
                longest = size
                break
    return longest


class OutputScrubber:
    """Scrubs a stream of output chunks as ``scrub`` would scrub them joined: the end of a
    chunk that may be the start of a value is held back until the next one shows what it is."""

    def __init__(self, values: Collection[str]) -> None:
        self._pattern = _pattern(values)
        self._values = sorted({v.encode() for v in values if len(v) >= MIN_SCRUBBED_LENGTH})
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The scrubbed output that can be shown now."""
        if self._pattern is None:
            return chunk
        data = self._pending + chunk
        # A match starting before ``settled`` has all the bytes it needs to be the longest one.
        settled = len(data) - self._undecided(data)
        shown: list[bytes] = []
        done = 0
        for match in self._pattern.finditer(data):
            if match.start() >= settled:
                break
            shown += [data[done : match.start()], _MASK_BYTES]
            done = match.end()
        cut = max(done, settled)
        shown.append(data[done:cut])
        self._pending = data[cut:]
        return b"".join(shown)

    def flush(self) -> bytes:
        """What is still held back, scrubbed: the output has ended."""
        rest, self._pending = self._pending, b""
        return rest if self._pattern is None else self._pattern.sub(_MASK_BYTES, rest)

    def _undecided(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that begins a value."""
        longest = 0
        for value in self._values:
            for size in range(min(len(value) - 1, len(data)), longest, -1):
                if data.endswith(value[:size]):
                    longest = size
                    break
        return longest


def child_environment(environ: Mapping[str, str], hidden: Collection[str]) -> dict[str, str]:
    """``environ`` without the node's credentials: the ``NODE_VARIABLES`` and any variable whose
    value is one of ``hidden`` (the node's API token, its cluster key)."""
    values = {value for value in hidden if value}
    return {
        name: value
        for name, value in environ.items()
        if name not in NODE_VARIABLES and value not in values
    }
