"""The ``dkron-client-operations`` directive: a client's API operations, as methods.

``dkron_lab.client`` writes each operation once as an ``endpoint`` descriptor shared by
``Client`` and ``AsyncClient``. Autodoc sees a descriptor on the class, not a function, and would
list each one as an attribute without its parameters; this directive lists them as methods with
the operation's own signature (its first parameter, the client, left out) and docstring.
For reST (inside ``{eval-rst}`` in a Markdown page)::

    .. dkron-client-operations:: dkron_lab.client.Client
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def operations(cls: type) -> Iterator[tuple[str, str, str]]:
    """``(name, signature, docstring)`` of each endpoint of a client class, in source order."""
    from dkron_lab.client import endpoint

    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, endpoint) and name not in seen:
                seen.add(name)
                yield name, _signature(value), inspect.getdoc(value) or ""


def _signature(ep: Any) -> str:
    operation = vars(ep).get("_operation")
    if operation is None:
        return "(...)"
    signature = inspect.signature(operation)
    parameters = list(signature.parameters.values())[1:]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Parameter.empty))


class ClientOperations(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name, _, class_name = self.arguments[0].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        self.env.note_dependency(inspect.getsourcefile(cls) or "")
        self.env.note_dependency(__file__)
        lines = StringList()
        for name, signature, doc in operations(cls):
            lines.append(f".. py:method:: {class_name}.{name}{signature}", "<operations>")
            lines.append(f"   :module: {module_name}", "<operations>")
            lines.append("", "<operations>")
            for line in doc.splitlines():
                lines.append(f"   {line}" if line else "", "<operations>")
            lines.append("", "<operations>")
        container = nodes.container()
        self.state.nested_parse(lines, self.content_offset, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("dkron-client-operations", ClientOperations)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
