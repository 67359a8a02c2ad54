"""What a notebook run used, with a real kernel: the runner's and the kernel's CPU and memory,
and ``cpu_limit_seconds`` killing both."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from dkron_lab.executors.notebook import NotebookExecutor
from dkron_lab.plugins import ExecutionRequest, ExecutorResult

MB = 1024 * 1024
BURN = "import os\nt = os.times().user + {s}\nwhile os.times().user < t:\n    sum(range(100_000))\n"


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel connection files go to the test's own folder; runners and kernels inherit it."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))


def notebook(folder: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "work.ipynb"
    nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
    return path


async def run(path: Path, **config: str) -> ExecutorResult:
    request = ExecutionRequest(
        job_name="nb", execution_id="1-node-a", config={"path": str(path), **config}
    )
    return await NotebookExecutor(stop_grace=5).execute(request, lambda _: None)


async def test_the_kernel_is_counted_with_the_runner(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        BURN.format(s=1.0),
        "b = bytearray(80 * 1024 * 1024); b[::4096] = b'x' * (len(b) // 4096)",
    )
    result = await run(path)
    assert result.success, result
    usage = result.usage
    assert usage is not None
    assert usage.cpu_user_seconds >= 1.0  # the kernel's second, plus the runner's start
    assert (usage.max_rss_bytes or 0) >= 80 * MB


async def test_a_notebook_over_its_cpu_limit_is_killed_with_its_kernel(tmp_path: Path) -> None:
    path = notebook(tmp_path, "while True: pass")
    result = await run(path, cpu_limit_seconds="4")
    assert not result.success
    error = result.error
    assert error.startswith("notebook: CPU limit hit: the run used "), error
    assert error.endswith("over cpu_limit_seconds=4; it was killed with all its processes")
