"""The lean install of docs/cluster.md keeps working: its list is pyproject's core dependencies,
and a node (server or agent) with its API and the shell and HTTP executors never imports the
Jupyter stack, which the lean install leaves out."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JUPYTER_STACK = (
    "jupyter_server",
    "ipykernel",
    "IPython",
    "pandas",
    "pyarrow",
    "nbclient",
    "anywidget",
)


def core_dependencies() -> list[str]:
    """pyproject's dependencies before its "Jupyter side" comment."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = tomllib.loads(text)["project"]["dependencies"]
    block = text[text.index("dependencies = [") : text.index("# Jupyter side")]
    return [dep for dep in listed if f'"{dep}"' in block]


def test_the_documented_lean_list_is_the_core_dependencies():
    docs = (ROOT / "docs" / "cluster.md").read_text()
    command = docs[docs.index("pip install --no-deps dkron-lab") :].split("```")[0]
    assert sorted(re.findall(r'"([^"]+)"', command)) == sorted(core_dependencies())


def test_a_node_its_api_and_the_shell_and_http_executors_import_no_jupyter_stack():
    probe = (
        "import sys\n"
        "import dkron_lab.agent, dkron_lab.api.app, dkron_lab.cli\n"
        "import dkron_lab.executors.shell, dkron_lab.executors.http\n"
        "from dkron_lab.registry import PluginRegistry\n"
        "PluginRegistry().executor('shell'); PluginRegistry().executor('http')\n"
        f"print(sorted(m for m in {JUPYTER_STACK!r} if m in sys.modules))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]"
