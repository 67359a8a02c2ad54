"""The ``dkron-openapi`` directive: the HTTP API reference, drawn from the OpenAPI document.

The server answers ``GET /v1/openapi.json`` with the document a Python function builds; this
directive calls that same function (no server is started), turns the document into MyST
Markdown and parses it in place. So the reference cannot drift from what the server says it
serves. Usage, in a Markdown page::

    ```{dkron-openapi} dkron_lab.api.handlers:openapi_document
    ```

Each operation gets the label ``openapi-<operationId>`` and each schema ``openapi-schema-<name>``
(lower case), for ``{ref}`` links from other pages. The rendering is ours (OpenAPI 3.1, which
the maintained Sphinx extensions do not read fully); it covers what our document uses.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

METHODS = ("get", "put", "post", "patch", "delete", "head", "options")
OURS = "*dkron-lab addition*"


def load(target: str) -> tuple[dict[str, Any], Path | None]:
    """Call ``module:function``; answer the document and the module's file (a dependency)."""
    module_name, _, function_name = target.partition(":")
    module = importlib.import_module(module_name)
    document = getattr(module, function_name)()
    # Round-trip through JSON: the page shows exactly what GET /v1/openapi.json serves.
    document = json.loads(json.dumps(document))
    source = inspect.getsourcefile(module)
    return document, Path(source) if source else None


# -- text helpers ---------------------------------------------------------------------------------

_CODE = re.compile(r"(`[^`]*`)")


def prose(text: str | None) -> str:
    """Markdown from the document as it is, except bare ``<word>`` (not HTML: show it)."""
    if not text:
        return ""
    parts = _CODE.split(text.strip())
    return "".join(p if p.startswith("`") else p.replace("<", r"\<") for p in parts)


def cell(text: str | None) -> str:
    """One table cell: one line, pipes escaped."""
    return " ".join(prose(text).split()).replace("|", r"\|")


def described(text: str, notes: str) -> str:
    """A description followed by its notes in parentheses."""
    return f"{text} ({notes})".strip() if notes else text


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def schema_ref(name: str) -> str:
    return f"{{ref}}`{name} <openapi-schema-{slug(name)}>`"


class Spec:
    """The document, with ``$ref`` resolution and the words for types."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in item:
            node: Any = self.document
            for part in item["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            item = node
        return item

    def type_of(self, schema: Mapping[str, Any] | None) -> str:
        """A short phrase for a schema: ``string | null``, ``array of Job``, ``one of `a`, `b```."""
        if not schema:
            return "any"
        if "$ref" in schema:
            return schema_ref(schema["$ref"].rsplit("/", 1)[-1])
        if "allOf" in schema:
            return " + ".join(self.type_of(part) for part in schema["allOf"])
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                return " or ".join(self.type_of(part) for part in schema[combinator])
        if "enum" in schema:
            return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        return self._plain_type(schema)

    def _plain_type(self, schema: Mapping[str, Any]) -> str:
        kinds = schema.get("type", "any")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        words = []
        for kind in kinds:
            if kind == "array":
                words.append(f"array of {self.type_of(schema.get('items'))}")
            elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
                words.append(f"object of {self.type_of(schema['additionalProperties'])}")
            elif kind == "object" and "properties" in schema:
                words.append("object {" + ", ".join(f"`{p}`" for p in schema["properties"]) + "}")
            else:
                words.append(str(kind))
        text = " or ".join(words)
        if "format" in schema:
            text += f" ({schema['format']})"
        return text

    def notes(self, schema: Mapping[str, Any]) -> str:
        """Default, bounds and flags, as a few words to append to a description."""
        words = []
        if "default" in schema:
            words.append(f"default `{json.dumps(schema['default'])}`")
        for key, word in (("minimum", "≥"), ("maximum", "≤")):
            if key in schema:
                words.append(f"{word} {schema[key]}")
        if schema.get("readOnly"):
            words.append("read-only")
        if schema.get("writeOnly"):
            words.append("write-only")
        if schema.get("x-dkron-lab"):
            words.append(OURS)
        return "; ".join(words)


# -- the page -------------------------------------------------------------------------------------


def render(document: Mapping[str, Any]) -> Iterator[str]:
    """The whole reference as Markdown lines."""
    spec = Spec(document)
    info = document.get("info", {})
    # Everything goes under a heading: text before the first one would land after the sections.
    yield "## Conventions"
    yield ""
    yield f"OpenAPI {document.get('openapi', '?')}, *{info.get('title', '')}*, "
    yield f"version {info.get('version', '?')}."
    yield ""
    yield prose(info.get("description"))
    yield ""
    yield from _security(spec)
    for tag, operations in _by_tag(document).items():
        yield f"## {'General' if tag == 'default' else tag.capitalize()} endpoints"
        yield ""
        for path, method, operation, shared in operations:
            yield from _operation(spec, path, method, operation, shared)
    yield "## Schemas"
    yield ""
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        yield from _schema(spec, name, schema)


def _security(spec: Spec) -> Iterator[str]:
    schemes = spec.document.get("components", {}).get("securitySchemes", {})
    if not schemes:
        return
    yield "## Authentication"
    yield ""
    yield "| scheme | how it is sent | |"
    yield "| --- | --- | --- |"
    for name, scheme in schemes.items():
        how = scheme.get("scheme") or f"`{scheme.get('name', '')}` ({scheme.get('in', '')})"
        yield f"| `{name}` | {scheme['type']} {how} | {cell(scheme.get('description'))} |"
    yield ""


def _by_tag(document: Mapping[str, Any]) -> dict[str, list[tuple[str, str, Any, list[Any]]]]:
    """Operations grouped by their first tag, tags in the document's order, paths as written."""
    groups: dict[str, list[tuple[str, str, Any, list[Any]]]] = {
        tag["name"]: [] for tag in document.get("tags", [])
    }
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                tag = (operation.get("tags") or ["default"])[0]
                groups.setdefault(tag, []).append(
                    (path, method, operation, item.get("parameters", []))
                )
    return {tag: ops for tag, ops in groups.items() if ops}


def _operation(
    spec: Spec, path: str, method: str, operation: Mapping[str, Any], shared: list[Any]
) -> Iterator[str]:
    if "operationId" in operation:
        yield f"(openapi-{slug(operation['operationId'])})="
    yield f"### {method.upper()} {path}"
    yield ""
    flags = [OURS] if operation.get("x-dkron-lab") else []
    if operation.get("deprecated"):
        flags.append("**deprecated**")
    summary = operation.get("summary") or ""
    if operation.get("security") == [] and "token" not in summary:
        flags.append("no token needed")
    yield " ".join([prose(summary), *(f"({flag})" for flag in flags)])
    yield ""
    if operation.get("description"):
        yield prose(operation["description"])
        yield ""
    yield from _parameters(spec, [*shared, *operation.get("parameters", [])])
    if "requestBody" in operation:
        yield from _request_body(spec, operation["requestBody"])
    yield from _responses(spec, operation.get("responses", {}))


def _parameters(spec: Spec, parameters: list[Any]) -> Iterator[str]:
    resolved = [spec.resolve(p) for p in parameters]
    if not resolved:
        return
    yield "| parameter | in | type | |"
    yield "| --- | --- | --- | --- |"
    for p in resolved:
        schema = p.get("schema", {})
        name = f"`{p['name']}`" + (" (required)" if p.get("required") else "")
        notes = spec.notes(schema)
        if p.get("x-dkron-lab") and OURS not in notes:
            notes = "; ".join(filter(None, [notes, OURS]))
        text = described(cell(p.get("description")), notes)
        yield f"| {name} | {p['in']} | {cell(spec.type_of(schema))} | {text} |"
    yield ""


def _request_body(spec: Spec, body: Mapping[str, Any]) -> Iterator[str]:
    body = spec.resolve(body)
    kinds = ", ".join(
        f"`{media}`: {spec.type_of(content.get('schema'))}"
        for media, content in body.get("content", {}).items()
    )
    required = " (required)" if body.get("required") else ""
    yield f"**Request body**{required}: {kinds}."
    if body.get("description"):
        yield prose(body["description"])
    yield ""


def _responses(spec: Spec, responses: Mapping[str, Any]) -> Iterator[str]:
    if not responses:
        return
    yield "| status | answer | body |"
    yield "| --- | --- | --- |"
    for status in sorted(responses):
        response = spec.resolve(responses[status])
        body = "; ".join(
            f"`{media}` {spec.type_of(content.get('schema'))}"
            for media, content in response.get("content", {}).items()
        )
        yield f"| {status} | {cell(response.get('description'))} | {cell(body)} |"
    yield ""


def _schema(spec: Spec, name: str, schema: Mapping[str, Any]) -> Iterator[str]:
    yield f"(openapi-schema-{slug(name)})="
    yield f"### {name}"
    yield ""
    if schema.get("description"):
        yield prose(schema["description"])
        yield ""
    if schema.get("x-dkron-lab"):
        yield f"({OURS})"
        yield ""
    parts = schema.get("allOf", [schema])
    for part in parts:
        if "$ref" in part:
            yield f"Every field of {spec.type_of(part)}, and:"
            yield ""
        elif "properties" in part:
            yield from _properties(spec, part)
        elif part is schema:
            yield f"Type: {spec.type_of(schema)}."
            yield ""


def _properties(spec: Spec, schema: Mapping[str, Any]) -> Iterator[str]:
    required = set(schema.get("required", []))
    yield "| field | type | |"
    yield "| --- | --- | --- |"
    for field, prop in schema["properties"].items():
        name = f"`{field}`" + (" (required)" if field in required else "")
        text = described(cell(prop.get("description")), spec.notes(prop))
        yield f"| {name} | {cell(spec.type_of(prop))} | {text} |"
    yield ""


class OpenApiDirective(SphinxDirective):
    """``{dkron-openapi} module:function``: the reference of the document it returns."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        document, source = load(self.arguments[0])
        self.env.note_dependency(__file__)  # a change to this renderer redraws the page
        if source is not None:
            self.env.note_dependency(str(source))
            for sibling in source.parent.glob("*.yaml"):  # where the document is written
                self.env.note_dependency(str(sibling))
        lines = StringList()
        for line in "\n".join(render(document)).splitlines():
            lines.append(line, "<openapi>")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, lines, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("dkron-openapi", OpenApiDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
