"""``import dkron_lab`` in a kernel stays cheap: it loads no server code, and neither do the
client nor the magics. Checked on the set of imported modules in a fresh interpreter (timings are
``benchmarks/bench_import.py``'s job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dkron_lab

SERVER_MODULES = ("tornado", "pysyncobj", "duckdb", "jupyter_server", "dkron_lab.node",
                  "dkron_lab.api", "dkron_lab.state", "dkron_lab.history")  # fmt: skip


def modules_after(statement: str) -> list[str]:
    probe = f"{statement}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    names: list[str] = json.loads(done.stdout)
    return names


@pytest.mark.parametrize(
    "statement",
    [
        "import dkron_lab",
        "import dkron_lab; dkron_lab.Client; dkron_lab.AsyncClient",
        "import dkron_lab.jupyter.magics",
    ],
)
def test_no_server_module_is_imported(statement: str) -> None:
    names = modules_after(statement)
    assert [n for n in names if n.startswith(SERVER_MODULES)] == []


def test_the_bare_package_does_not_even_load_the_http_client() -> None:
    names = modules_after("import dkron_lab")
    assert "httpx" not in names and "dkron_lab.client" not in names
    assert "dkron_lab.client" in modules_after("import dkron_lab; dkron_lab.Client")


def test_the_public_surface() -> None:
    for name in dkron_lab.__all__:
        assert getattr(dkron_lab, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dkron_lab.Nope  # noqa: B018
    (point,) = dkron_lab._jupyter_server_extension_points()
    assert point["module"] == "dkron_lab" and point["app"].name == "dkron_lab"


def test_the_labextension_hook_names_the_built_extension() -> None:
    (path,) = dkron_lab._jupyter_labextension_paths()
    built = Path(dkron_lab.__file__).parent / path["src"]
    if not (built / "package.json").exists():
        pytest.skip("the JupyterLab extension is not built here (no Node at install time)")
    assert json.loads((built / "package.json").read_text())["name"] == path["dest"]
