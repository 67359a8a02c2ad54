"""The OpenAPI document says exactly what is served: the same routes and methods as the tornado
application, a structurally valid OpenAPI 3.1 document, schemas that real responses satisfy,
and docs/api.md covering every operation and parameter.

jsonschema is not installed, so ``conforms`` below is a small validator for the JSON Schema
keywords the document uses; ``test_validator_rejects`` proves it can fail.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.web

from dkron_lab import codec
from dkron_lab.api.app import make_app, serve
from dkron_lab.api.handlers import openapi_document
from dkron_lab.api.internal import INTERNAL_RESOURCES
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.testing import FakeClock, auth_headers, server_config

DOC = openapi_document()
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCS_MD = Path(__file__).parents[2] / "docs" / "api.md"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = server_config(tmp_path)
    node = Node(config, clock=FakeClock(datetime(2026, 3, 27, 10, tzinfo=UTC)))
    await node.start()
    yield node
    await node.stop(graceful=False)


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    server = await serve(node)
    port = node.config.http_host_port[1]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=20, headers=auth_headers(node.api_token)
    ) as client:
        yield client
    server.stop()
    await server.close_all_connections()


# -- routes and document in step --------------------------------------------------------------


def served_routes(app: tornado.web.Application) -> dict[str, set[str]]:
    """``{OpenAPI path template: methods}`` read back from the application's routing rules."""
    routes = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern  # type: ignore[attr-defined]
        assert pattern.endswith("/?$"), f"{pattern}: every route takes an optional trailing slash"
        template = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern[: -len("/?$")])
        routes[template.replace("\\", "")] = implemented_methods(rule.target)
    return routes


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> set[str]:
    # OPTIONS is the CORS preflight every path answers; the document says so once, in info.
    return {
        method
        for method in HTTP_METHODS
        if method != "options"
        and getattr(handler, method, None) is not getattr(tornado.web.RequestHandler, method, None)
    }


def documented_routes() -> dict[str, set[str]]:
    return {path: set(item) & set(HTTP_METHODS) for path, item in DOC["paths"].items()}


async def test_every_route_is_documented_and_every_document_path_served(node: Node) -> None:
    routes = served_routes(make_app(node))
    # Nodes' calls on each other are not Dkron's API: docs/architecture.md describes them.
    internal = {path for path in routes if path.startswith("/internal/")}
    assert internal == {template for template, _ in INTERNAL_RESOURCES}
    served = {path: methods for path, methods in routes.items() if path not in internal}
    assert served == documented_routes()
    assert len(served) >= 19


async def test_served_document_is_this_document(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(DOC))


# -- structure --------------------------------------------------------------------------------


def walk(value: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{where}/{index}")


def resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    found: Any = DOC
    for part in ref[2:].split("/"):
        found = found[part]
    return found


def deref(value: Any) -> Any:
    return resolve(value["$ref"]) if isinstance(value, dict) and "$ref" in value else value


def operations() -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in (key for key in item if key in HTTP_METHODS):
            yield path, method, item, item[method]


def test_document_header() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"]["title"] and isinstance(DOC["info"]["version"], str)
    assert {"bearerAuth", "dkronToken", "basicAuth"} == set(DOC["components"]["securitySchemes"])
    for requirement in DOC["security"]:
        assert set(requirement) <= set(DOC["components"]["securitySchemes"])


def test_every_ref_resolves() -> None:
    refs = [
        (where, node["$ref"])
        for where, node in walk(DOC)
        if isinstance(node, dict) and isinstance(node.get("$ref"), str)
    ]
    assert len(refs) > 50
    for where, ref in refs:
        try:
            resolve(ref)
        except KeyError:
            pytest.fail(f"{where}: $ref {ref} does not resolve")


def test_operations_are_well_formed() -> None:
    ids = [op["operationId"] for _, _, _, op in operations()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, method, item, op in operations():
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        statuses = set(op["responses"])
        assert statuses and all(re.fullmatch(r"[1-5]\d\d", s) for s in statuses), where
        assert "500" in statuses, where
        assert ("401" in statuses) is (path != "/health"), where
        assert ("403" in statuses) is (path != "/health"), where
        assert ("415" in statuses) is (method in ("post", "put", "patch", "delete")), where
        for status, response in op["responses"].items():
            response = deref(response)
            assert response["description"], f"{where} {status}"
            # A 401 names nothing of the node: every other answer says who answered.
            whom = "X-Whom" in response.get("headers", {})
            assert whom is (status != "401"), f"{where} {status}: X-Whom on every response"
        check_parameters(path, where, item, op)


def check_parameters(path: str, where: str, item: dict[str, Any], op: dict[str, Any]) -> None:
    parameters = [deref(p) for p in item.get("parameters", []) + op.get("parameters", [])]
    for parameter in parameters:
        assert parameter["in"] in ("query", "path", "header", "cookie"), where
        assert parameter["name"] and "schema" in parameter, where
    keys = [(p["in"], p["name"]) for p in parameters]
    assert len(keys) == len(set(keys)), f"{where}: duplicate parameter"
    in_path = {p["name"] for p in parameters if p["in"] == "path"}
    assert in_path == set(re.findall(r"\{(\w+)\}", path)), where
    assert all(p["required"] for p in parameters if p["in"] == "path"), where
    assert ("query", "pretty") in keys, f"{where}: ?pretty is accepted everywhere"


SCHEMA_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def test_schemas_use_known_types() -> None:
    for where, node in walk(DOC):
        in_schema = where.endswith("/schema") or "/schemas/" in where
        typed = isinstance(node, dict) and "type" in node and not where.endswith("/properties")
        if in_schema and typed:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            assert set(types) <= SCHEMA_TYPES, where


def test_job_and_execution_schemas_match_the_codec() -> None:
    schemas = DOC["components"]["schemas"]
    job_json = codec.job_to_json(Job(name="x"))
    assert list(schemas["Job"]["properties"]) == list(job_json)
    # Dkron's 26, then catchup, concurrency_group, retry_*, secret_keys, monitoring's five, and
    # the read-only health and health_reason
    assert len(job_json) == 38
    read_only = {k for k, v in schemas["Job"]["properties"].items() if v.get("readOnly")}
    assert read_only == {
        "id",
        "success_count",
        "error_count",
        "last_success",
        "last_error",
        "dependent_jobs",
        "status",
        "next",
        "health",
        "health_reason",
    }
    record = codec.job_to_record(Job(name="x"))
    assert set(record) == set(job_json) - read_only
    started = datetime(2026, 1, 1, tzinfo=UTC)
    execution = Execution(id="1-n", job_name="x", node_name="n", group=1, started_at=started)
    execution_json = codec.execution_to_json(execution)
    assert list(schemas["Execution"]["properties"]) == list(execution_json)
    assert set(schemas["Execution"]["required"]) == set(execution_json) - {"status"}
    assert conforms(job_json, {"$ref": "#/components/schemas/Job"}) == []
    assert conforms(execution_json, {"$ref": "#/components/schemas/Execution"}) == []


# -- a small validator for the keywords the document uses ------------------------------------


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES[name])


def conforms(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``"<where>: <why>"``."""
    schema = deref(schema)
    problems = [p for part in schema.get("allOf", []) for p in conforms(value, part, where)]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            return [*problems, f"{where}: {value!r} is not {types}"]
    for check in (_value_problems, _string_problems, _object_problems, _array_problems):
        problems += check(value, schema, where)
    return problems


def _value_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if _type_ok(value, "number"):
        low, high = schema.get("minimum", value), schema.get("maximum", value)
        if not low <= value <= high:
            problems.append(f"{where}: {value} out of range")
    return problems


def _array_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, list):
        return []
    items = schema.get("items", {})
    return [p for i, item in enumerate(value) for p in conforms(item, items, f"{where}[{i}]")]


def _string_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, str):
        return []
    if schema.get("format") == "date-time":
        try:
            if datetime.fromisoformat(value).tzinfo is None:
                return [f"{where}: {value!r} has no offset"]
        except ValueError:
            return [f"{where}: {value!r} is not a date-time"]
    if schema.get("contentMediaType") == "application/json":
        return conforms(json.loads(value), schema.get("contentSchema", {}), f"{where}(decoded)")
    if len(value) < schema.get("minLength", 0):
        return [f"{where}: too short"]
    return []


def _object_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    required = schema.get("required", [])
    problems = [f"{where}: {key} is missing" for key in required if key not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            problems += conforms(item, properties[key], f"{where}.{key}")
        elif extra is False and not schema.get("allOf"):
            problems.append(f"{where}: unexpected key {key}")
        elif isinstance(extra, dict):
            problems += conforms(item, extra, f"{where}.{key}")
    return problems


def test_validator_rejects() -> None:
    job = codec.job_to_json(Job(name="x"))
    schema = {"$ref": "#/components/schemas/Job"}
    assert conforms({**job, "retries": "3"}, schema) == ["$.retries: '3' is not ['integer']"]
    assert conforms({**job, "next": "soon"}, schema) == ["$.next: 'soon' is not a date-time"]
    assert conforms({**job, "tags": {"a": 1}}, schema) == ["$.tags.a: 1 is not ['string']"]
    assert conforms({"error": "x"}, {"$ref": "#/components/schemas/Error"}) == [
        "$: type is missing"
    ]
    assert conforms({"status": "sick"}, {"$ref": "#/components/schemas/Health"}) != []
    assert conforms(-1, {"type": "integer", "minimum": 0}) == ["$: -1 out of range"]
    assert conforms("x", {"type": "string", "minLength": 2}) == ["$: too short"]


# -- real responses against their schemas ----------------------------------------------------


def check(response: httpx.Response, path: str, method: str) -> None:
    """The response has a documented status, its declared headers, and a conforming body."""
    documented = DOC["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered undocumented {status}"
    declared = deref(documented[status])
    for header in declared.get("headers", {}):
        if header != "WWW-Authenticate" or status == "401":
            assert header in response.headers, f"{method.upper()} {path} {status}: no {header}"
    schema = declared["content"]["application/json"]["schema"]
    assert conforms(response.json(), schema) == [], response.text


async def listed_executions(http: httpx.AsyncClient, name: str) -> httpx.Response:
    """The execution list once the history writer has stored the first run (it batches)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        response = await http.get(f"/v1/jobs/{name}/executions?output_size_limit=1")
        if response.json() or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.02)


async def test_real_responses_conform(http: httpx.AsyncClient) -> None:
    check(await http.get("/health"), "/health", "get")
    check(await http.get("/v1/"), "/v1", "get")
    check(await http.get("/v1/members"), "/v1/members", "get")
    check(await http.get("/v1/leader"), "/v1/leader", "get")
    check(await http.get("/v1/isleader"), "/v1/isleader", "get")
    check(await http.get("/v1/pause"), "/v1/pause", "get")
    body = {
        "name": "conform",
        "schedule": "@every 1h",
        "timezone": "Europe/Berlin",
        "executor": "shell",
        "executor_config": {"command": "echo hi"},
        "metadata": {"a": "b"},
    }
    check(await http.post("/v1/jobs", json=body), "/v1/jobs", "post")
    check(await http.post("/v1/jobs", json={**body, "retries": "x"}), "/v1/jobs", "post")
    check(await http.get("/v1/jobs?_end=5"), "/v1/jobs", "get")
    check(await http.get("/v1/jobs?_start=z"), "/v1/jobs", "get")
    check(await http.get("/v1/jobs/conform"), "/v1/jobs/{job}", "get")
    check(await http.get("/v1/jobs/ghost"), "/v1/jobs/{job}", "get")
    check(await http.post("/v1/jobs/conform?wait=true"), "/v1/jobs/{job}", "post")
    check(await http.post("/v1/jobs/conform/run"), "/v1/jobs/{job}/run", "post")
    check(await http.post("/v1/jobs/conform/toggle"), "/v1/jobs/{job}/toggle", "post")
    listed = await listed_executions(http, "conform")
    check(listed, "/v1/jobs/{job}/executions", "get")
    check(await http.get("/v1/executions/conform"), "/v1/executions/{job}", "get")
    check(await http.get("/v1/busy"), "/v1/busy", "get")
    one = await http.get(f"/v1/jobs/conform/executions/{listed.json()[0]['id']}")
    check(one, "/v1/jobs/{job}/executions/{execution}", "get")
    check(await http.get("/v1/schedule?schedule=@daily&count=2"), "/v1/schedule", "get")
    check(await http.get("/v1/schedule?schedule=@nope"), "/v1/schedule", "get")
    files = {"file": ("b.json", json.dumps([body]))}
    check(await http.post("/v1/restore", files=files), "/v1/restore", "post")
    check(await http.delete("/v1/jobs/conform/executions"), "/v1/jobs/{job}/executions", "delete")
    check(await http.delete("/v1/jobs/conform"), "/v1/jobs/{job}", "delete")
    check(await http.post("/v1/pause"), "/v1/pause", "post")
    check(await http.post("/v1/unpause"), "/v1/unpause", "post")


# -- docs/api.md ------------------------------------------------------------------------------


def doc_sections() -> dict[str, str]:
    """``{"GET /v1/jobs": section text}`` from the ``### `METHOD /path` `` headings."""
    text = DOCS_MD.read_text("utf-8")
    parts = re.split(r"^### `([A-Z]+ /[^`]*)`.*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_docs_cover_every_operation_and_parameter() -> None:
    sections = doc_sections()
    documented = {f"{method.upper()} {path}" for path, method, _, _ in operations()}
    assert set(sections) == documented
    for path, method, item, op in operations():
        section = sections[f"{method.upper()} {path}"]
        for parameter in (deref(p) for p in item.get("parameters", []) + op.get("parameters", [])):
            if parameter["name"] != "pretty" and parameter["in"] != "path":  # path: in heading
                mentioned = re.search(rf"`[?&]?{re.escape(parameter['name'])}\b", section)
                assert mentioned, f"{method.upper()} {path}: parameter {parameter['name']}"
        for status in op["responses"]:
            if status not in ("401", "403", "415", "500"):  # described once, for every endpoint
                assert status in section, f"{method.upper()} {path}: status {status} undocumented"
        assert "curl " in section, f"{method.upper()} {path}: no curl example"
        addition = op.get("x-dkron-lab", False)
        assert ("dkron-lab addition" in section) is addition, f"{method.upper()} {path}"
