"""The results files: where a benchmark run is written, and how runs are read back.

One file per day and device, ``bench/results/<date>_<device>.json`` (``$SNN_BENCH_OUT`` overrides
the folder). A file holds runs; a run is one pytest session: its environment and its rows.

    {"device": "NVIDIA H200", "runs": [{"id", "started", "argv", "env": {...}, "rows": [...]}]}

A row is one measured figure: what was run (suite, op, phase, impl, case fields such as T,
neurons, dtype, surrogate), ``seconds`` (the median) and ``bytes`` (the traffic model's bytes, for
kernels). Ratios are only ever formed between rows of the same run, so a new run of the same
case replaces an older one in the report rather than mixing with it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Every ratio is a speedup over the plain PyTorch code the seed experiment would run, per op.
BASELINES = {
    "lif_scan": "PyTorch eager loop",
    "spike": "notebook autograd Function",
    "train": "seed notebook",
    "neuron_scan": "spikingjelly 0.0.0.0.14 torch",
    "zoo_train": "spikingjelly 0.0.0.0.14 torch",
}
# Our fastest path on each kind of device: the one the roofline is drawn for.
OURS = {"cuda": "snn_triton kernels", "cpu": "snn_triton compiled reference"}
# Fields that say what was measured; rows agreeing on all of them measure the same thing.
KEY_FIELDS = ("suite", "op", "phase", "impl", "neuron", "T", "neurons", "dtype", "surrogate", "batch", "images")


def device_name() -> str:
    import torch  # here, so that report.py starts without it

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M).group(1)
    except (OSError, AttributeError):
        pass
    return f"{model} ({os.cpu_count()} CPUs)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def results_path(device: str) -> Path:
    folder = Path(os.environ.get("SNN_BENCH_OUT") or RESULTS_DIR)
    return folder / f"{date.today().isoformat()}_{slug(device)}.json"


def row_key(row: dict) -> tuple:
    return tuple(row.get(field) for field in KEY_FIELDS)


class Run:
    """The rows of one session, saved after every row so a run cut short still keeps its figures."""

    def __init__(self, env: dict):
        self.device = device_name()
        self.path = results_path(self.device)
        self.run = {
            "id": f"{time.time():.0f}-{os.getpid()}",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "argv": sys.argv[1:],
            "env": env,
            "rows": [],
        }

    def add(self, row: dict) -> None:
        self.run["rows"].append(row)
        self.save()

    def save(self) -> None:
        add_run(self.path, self.device, self.run)


def add_run(path: Path, device: str, run: dict) -> None:
    """Write `run` into the results file at `path` (replacing an older copy of it)."""
    runs = load(path)["runs"] if path.exists() else []
    mine = {row_key(r) for r in run["rows"]}
    # Earlier runs that this one supersedes entirely (a rerun) are dropped to keep files small.
    runs = [r for r in runs if r["id"] != run["id"] and not {row_key(x) for x in r["rows"]} <= mine]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device, "runs": runs + [run]}, indent=1) + "\n")


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def merge(source: Path, folder: Path = RESULTS_DIR) -> Path:
    """Add the runs of a results file made elsewhere (each call of the GPU check brings back its
    own) to the file of the same name in `folder`; returns that file."""
    data, path = load(source), Path(folder) / Path(source).name
    for run in data["runs"]:
        add_run(path, data["device"], run)
    return path


def latest_rows(data: dict) -> list[dict]:
    """Every row of the file, the newest run winning for each measured thing, tagged with its run."""
    latest = {}
    for run in data["runs"]:
        for row in run["rows"]:
            latest[row_key(row)] = dict(row, run=run["id"])
    return list(latest.values())


if __name__ == "__main__":  # python bench/results.py FILE...: merge results brought back from a device
    for name in sys.argv[1:]:
        print(merge(Path(name)))
