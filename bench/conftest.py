"""Benchmark session setup: import paths, CPU threads, and the ``record`` fixture.

Run from the repository root: ``python -m pytest bench --benchmark-only`` (see bench/README.md).
Every test hands its figures to ``record``; they go to bench/results/<date>_<device>.json as
they come (results.py), so a session cut short by a timeout keeps what it measured.
"""

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The repo root (train.py's package) and tests/ (the seed notebook's network, the oracles' surrogates).
sys.path[:0] = [str(REPO), str(REPO / "tests")]

if os.environ.get("SNN_BENCH_THREADS"):  # on a shared CPU, 1 thread spares the timings idle-spin stalls
    torch.set_num_threads(int(os.environ["SNN_BENCH_THREADS"]))

from results import Run  # noqa: E402

from snn_triton import engine  # noqa: E402

# As train.py does on a CPU, for every implementation alike: freed activations stay in the heap.
KEPT_FREED_MEMORY = not torch.cuda.is_available() and engine.keep_freed_memory()


def versions() -> dict:
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }
    for package in (
        "triton",
        "spikingjelly",
        "snntorch",
        "norse",
        "sinabs",
        "cupy-cuda13x",
        "cupy-cuda12x",
        "pytest-benchmark",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


@pytest.fixture(scope="session")
def run():
    from peers import COMPILE_BACKEND
    from workloads import TINY

    return Run(dict(versions(), tiny=TINY, compile_backend=COMPILE_BACKEND, kept_freed_memory=KEPT_FREED_MEMORY))


@pytest.fixture
def record(run):
    """record(row): one figure; `seconds` None with a `note` says why an implementation could not run."""
    return run.add
