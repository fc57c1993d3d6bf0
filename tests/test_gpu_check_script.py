"""bench/gpu_check.sh cannot rot: its dry run takes every stage, tiny, on the CPU, and leaves what
the device tool can bring back (at most 8 plain files with plain names)."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
STAGES = ["setup", "tests", "bench", "epoch", "train", "graphs", "peers", "memory", "lean"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, run the real check: bash bench/gpu_check.sh")
def test_gpu_check_dry_run_takes_every_stage(tmp_path):
    # not an xdist worker's variables: pytest-benchmark would take its runs for parallel ones, and disable them
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST")}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = (tmp_path / "summary.txt").read_text()
    for stage in STAGES:
        assert re.search(rf"^{stage}\s+ok\b", summary, re.M), summary
    assert re.search(r"^bench-sj2\s+(ok|skipped)", summary, re.M), summary
    assert "graph breaks: 0" in summary

    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in tmp_path.iterdir()), files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files), files
    [results] = [name for name in files if name.endswith(".json") and not name.startswith("memory")]
    [memory] = [name for name in files if name.startswith("memory_") and name.endswith(".json")]
    memory_rows = json.loads((tmp_path / memory).read_text())["rows"]
    assert {row["impl"] for row in memory_rows} == {"seed notebook", "BasicCSNN"}
    assert all(row["saved_bytes_per_sample"] > 0 for row in memory_rows)
    rows = [row for run in json.loads((tmp_path / results).read_text())["runs"] for row in run["rows"]]
    assert {row["suite"] for row in rows} == {"kernels", "end_to_end", "libraries"}
    # The peers stage checks before it times: ours and spikingjelly 0.0.0.0.14 (in the test extra) are
    # timed only with what they agreed on; a library that is not installed says so.
    libraries = [row for row in rows if row["suite"] == "libraries"]
    for impl in ("snn_triton", "snn_triton compiled", "spikingjelly 0.0.0.0.14 torch"):
        [checked] = {row.get("check") for row in libraries if row["impl"] == impl and row["seconds"]}
        assert checked.startswith("spikes equal") and "grads equal" in checked, (impl, checked)
    assert all(row["seconds"] or row["note"] for row in libraries), libraries
    assert {"tables.md", "gpu_check.log", "train.tar.gz", "memory_saved_bytes.png"} <= set(files)
    # the lean stage: its rows in the log, its JSON in train.tar.gz
    log = (tmp_path / "gpu_check.log").read_text().splitlines()
    lean_rows = [json.loads(line) for line in log if line.startswith("{") and '"lean=True"' in line]
    assert lean_rows and all(0 < row["lean=True"] < row["unconverted"] for row in lean_rows), lean_rows
    with tarfile.open(tmp_path / "train.tar.gz") as tar:
        assert any(name.startswith("lean/lean_memory_") for name in tar.getnames()), tar.getnames()
