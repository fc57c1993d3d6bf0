"""Where one eager CPU training step of a zoo model spends its time, op by op, in the three columns of
bench/lean_speed.py (unconverted, ``lean=False``, ``lean=True``): torch.profiler's self CPU time and
call count of each op, per step, and the ops where lean=True differs most from lean=False and
lean=False from the unconverted model. At batch 8 a step is mostly per-op overhead, so the counts
matter as much as the times.

    python bench/lean_profile.py --models lif_fashionmnistnet_64 sew_resnet18_add

The same step as lean_speed.py (T=4, batch 8, float32, 1 thread), two warm-ups, then --steps steps
profiled one at a time, the columns taking turns; each op's time is its median over the steps (on a
shared machine one disturbed step moves a median little). Self times of Python-level rows (an
autograd Function, a custom op) include the Python they run. The profiler adds its own overhead to
every op, so compare the columns, not these seconds with lean_speed.py's.
Results: bench/results/lean/lean_profile_<date>_<machine>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from lean_memory import BATCH, machine, write_results, zoo, zoo_columns  # noqa: E402
from lean_speed import step  # noqa: E402


def profiled_step(model, x, labels) -> dict:
    """op name -> (calls, self CPU ms) of one step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(model, x, labels)
        model.zero_grad(set_to_none=True)
    return {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()}


def median_step(steps: list) -> dict:
    """op name -> (calls, median self CPU ms) over the profiled steps (0 where a step lacks the op)."""
    keys = set().union(*steps)
    return {
        k: (max(s.get(k, (0, 0))[0] for s in steps), statistics.median(s.get(k, (0, 0))[1] for s in steps))
        for k in keys
    }


def differences(before: dict, after: dict, top: int) -> list:
    """The `top` ops whose self time differs most between two columns."""
    keys = sorted(set(before) | set(after), key=lambda k: -abs(after.get(k, (0, 0))[1] - before.get(k, (0, 0))[1]))
    rows = []
    for k in keys[:top]:
        (calls_a, ms_a), (calls_b, ms_b) = before.get(k, (0, 0)), after.get(k, (0, 0))
        rows.append({"op": k, "calls": [calls_a, calls_b], "ms": [round(ms_a, 3), round(ms_b, 3)]})
    return rows


def totals(ops: dict) -> dict:
    return {
        "self ms": round(sum(ms for _, ms in ops.values()), 2),
        "aten calls": round(sum(calls for k, (calls, _) in ops.items() if k.startswith("aten::"))),
    }


def measure(name: str, T: int, steps: int, top: int) -> dict:
    columns, x = zoo_columns(name, T)
    labels = torch.arange(BATCH) % 10
    for model in columns.values():  # warm-up
        for _ in range(2):
            step(model, x, labels)
            model.zero_grad(set_to_none=True)
    profiled = {k: [] for k in columns}
    for _ in range(steps):  # the columns take turns, as in lean_speed.py
        for k, model in columns.items():
            profiled[k].append(profiled_step(model, x, labels))
    ops = {k: median_step(v) for k, v in profiled.items()}
    return {
        "model": name,
        "T": T,
        "per step": {k: totals(v) for k, v in ops.items()},
        "lean=True vs lean=False": differences(ops["lean=False"], ops["lean=True"], top),
        "lean=False vs unconverted": differences(ops["unconverted"], ops["lean=False"], top),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=list(zoo()), choices=list(zoo()), metavar="MODEL")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "lean"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from snn_triton import engine

    kept_freed_memory = engine.keep_freed_memory()  # as bench/lean_speed.py: no page faults in one column only
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "batch": BATCH,
        "threads": 1,
        "kept_freed_memory": kept_freed_memory,
        "unit": "per training step: [calls, calls] and [ms, ms] of self CPU time (median of the steps), each pair A, B",
        "rows": [],
    }
    for name in args.models:
        row = measure(name, args.T, args.steps, args.top)
        print(name, row["per step"], flush=True)
        results["rows"].append(row)
    write_results(results, args.out, f"lean_profile_{results['date'][:16].replace(':', '')}")


if __name__ == "__main__":
    main()
