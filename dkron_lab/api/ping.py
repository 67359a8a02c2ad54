"""Pings of heartbeat checks (``dkron_lab/heartbeat.py``): ``POST /v1/jobs/{job}/ping``, and
``/ping/start`` and ``/ping/fail``. The body, if any, is the run's output.

They need a token that may run jobs (``operator``), or the job's own key (``?key=`` or the
``X-Ping-Key`` header: the ``ping_url`` of the job's JSON), which opens these routes of that
job and nothing else; ``HeadlessHandler`` asks ``opened_by_key`` before it asks for a token.
Under Jupyter, Jupyter's own authentication holds for every route, pings included.
"""

from __future__ import annotations

from dkron_lab import codec
from dkron_lab.api.base import ApiMixin
from dkron_lab.errors import BadRequest

__all__ = ["Ping"]


class Ping(ApiMixin):
    accepts_body = True

    def opened_by_key(self) -> bool:
        """Whether the request carries the ping key of the job its path names."""
        key = self.get_query_argument("key", "") or self.request.headers.get("X-Ping-Key", "")
        job = self.path_kwargs.get("job", "")
        return bool(key and job) and self.node.jobs.ping_key_opens(job, key)

    async def post(self, job: str, kind: str = "") -> None:
        try:
            body = self.request_body().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a ping's body is its output: send UTF-8 text") from None
        execution = await self.node.jobs.ping(job, kind=kind, body=body)
        if execution is None:
            self.write_json({"job": job, "started": True})
        else:
            self.write_json(codec.execution_to_json(execution))
