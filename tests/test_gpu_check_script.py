"""bench/gpu_check.sh cannot rot: its dry run takes every stage, tiny, on the CPU, and leaves what
the device tool can bring back (at most 8 plain files with plain names)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
STAGES = ["setup", "tests", "bench", "epoch", "train", "graphs"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, run the real check: bash bench/gpu_check.sh")
def test_gpu_check_dry_run_takes_every_stage(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = (tmp_path / "summary.txt").read_text()
    for stage in STAGES:
        assert re.search(rf"^{stage}\s+ok\b", summary, re.M), summary
    assert re.search(r"^bench-sj2\s+(ok|skipped)", summary, re.M), summary
    assert "graph breaks: 0" in summary

    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in tmp_path.iterdir()), files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files), files
    [results] = [name for name in files if name.endswith(".json")]
    rows = [row for run in json.loads((tmp_path / results).read_text())["runs"] for row in run["rows"]]
    assert {row["suite"] for row in rows} == {"kernels", "end_to_end"}
    assert {"tables.md", "gpu_check.log", "train.tar.gz"} <= set(files)
