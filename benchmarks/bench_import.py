"""Benchmark ``import dkron_lab`` as a kernel pays it: the package alone, with the client, and
with the magics (``%load_ext dkron_lab``), each minus a bare interpreter's start-up.

    .venv/bin/python benchmarks/bench_import.py              # 30 runs of each
    .venv/bin/python benchmarks/bench_import.py --runs 100

Each figure is the median (and the best) over ``--runs`` fresh interpreters of
``python -c "<statement>"`` minus the median of ``python -c "pass"``; the last line times the
import inside an interpreter that has already imported what a kernel has (``ipykernel``), which
is what a notebook user waits for. Target (issue 5):
``import dkron_lab`` at most 150 ms, and no server module imported (tornado, pysyncobj, duckdb,
jupyter_server, the node): the module list is printed, and tests/jupyter/test_import.py checks it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "baseline (python -c pass)": "pass",
    "import dkron_lab": "import dkron_lab",
    "dkron_lab.Client": "import dkron_lab; dkron_lab.Client",
    "%load_ext dkron_lab (magics)": "import dkron_lab.jupyter.magics",
}
SERVER_MODULES = ("tornado", "pysyncobj", "duckdb", "jupyter_server", "dkron_lab.node")


def wall(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


IN_KERNEL = (
    "import ipykernel.ipkernel, time; started = time.perf_counter(); import dkron_lab; "
    "print(time.perf_counter() - started)"
)


def in_kernel() -> float:
    out = subprocess.run([sys.executable, "-c", IN_KERNEL], check=True, capture_output=True)
    return float(out.stdout)


def imported(statement: str) -> list[str]:
    """The modules ``statement`` leaves imported that are server code."""
    probe = f"{statement}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    names = json.loads(out.stdout)
    return [n for n in names if n.startswith(SERVER_MODULES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    times = {label: [wall(code) for _ in range(options.runs)] for label, code in STATEMENTS.items()}
    base = statistics.median(times["baseline (python -c pass)"])
    print(
        f"{options.runs} runs each; python {sys.version.split()[0]}; baseline {base * 1000:.1f} ms"
    )
    for label, runs in times.items():
        if label.startswith("baseline"):
            continue
        median, best = statistics.median(runs) - base, min(runs) - base
        server = imported(STATEMENTS[label])
        print(
            f"{label:32s} median {median * 1000:6.1f} ms  best {best * 1000:6.1f} ms  "
            f"server modules: {server or 'none'}"
        )
    kernel = [in_kernel() for _ in range(options.runs)]
    median, best = statistics.median(kernel), min(kernel)
    label = "import dkron_lab in a kernel"
    print(f"{label:32s} median {median * 1000:6.1f} ms  best {best * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
