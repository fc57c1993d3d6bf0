"""One training step of spikingjelly's zoo models on the CPU, side by side in one run: unconverted,
``st.from_spikingjelly(lean=False)`` and lean=True, eager and (with --compiled) torch.compile'd.

    python bench/lean_speed.py --models lif_fashionmnistnet_64 sew_resnet18_add --T 4
    python bench/lean_speed.py --models lif_fashionmnistnet_64 --compiled

One step: forward [T, N, ...] (batch 8, float32), cross-entropy of the output averaged over T,
backward, ``functional.reset_net``; the three columns take turns, each its median over the repeats
after one warm-up, in wall seconds and in this process's CPU seconds (time.process_time: on a shared
machine, less moved by the other processes). Freed memory is kept in glibc's heap
(``engine.keep_freed_memory``, as train.py does), so page faults do not move one column more than
another. Compiled (torch.compile, inductor on the CPU): the warm-up is the first call, whose seconds
(compiling) are recorded too, and torch._dynamo.explain's graph-break count of each column.
Results: bench/results/lean/lean_speed_<date>_<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from lean_memory import BATCH, machine, write_results, zoo, zoo_columns  # noqa: E402


def step(model, x, labels):
    from spikingjelly.activation_based import functional

    out = model(x)
    logits = out.mean(0) if out.dim() == 3 else out
    torch.nn.functional.cross_entropy(logits, labels).backward()
    functional.reset_net(model)


def measure(name: str, T: int, compiled: bool, repeats: int) -> dict:
    from spikingjelly.activation_based import functional

    columns, x = zoo_columns(name, T)
    runs = {k: (torch.compile(m) if compiled else m, m) for k, m in columns.items()}
    labels = torch.arange(BATCH) % 10
    first_call, graph_breaks = {}, {}
    if compiled:  # dynamo's view of each column, before any is compiled
        for k, model in columns.items():
            graph_breaks[k] = torch._dynamo.explain(model)(x).graph_break_count
            functional.reset_net(model)
        torch._dynamo.reset()
    for k, (run, model) in runs.items():  # warm-up (and compile)
        torch.manual_seed(2)
        start = time.perf_counter()
        step(run, x, labels)
        first_call[k] = round(time.perf_counter() - start, 2)
        model.zero_grad(set_to_none=True)
    times, cpu_times = {k: [] for k in runs}, {k: [] for k in runs}
    for _ in range(repeats):
        for k, (run, model) in runs.items():
            torch.manual_seed(2)
            start, cpu_start = time.perf_counter(), time.process_time()
            step(run, x, labels)
            times[k].append(time.perf_counter() - start)
            cpu_times[k].append(time.process_time() - cpu_start)
            model.zero_grad(set_to_none=True)
    row = {"model": name, "T": T, "compiled": compiled, **{k: round(statistics.median(v), 4) for k, v in times.items()}}
    row["lean=True / lean=False"] = round(row["lean=True"] / row["lean=False"], 3)
    row["lean=True / unconverted"] = round(row["lean=True"] / row["unconverted"], 3)
    row["lean=False / unconverted"] = round(row["lean=False"] / row["unconverted"], 3)
    # CPU seconds of this process: on a shared machine, less moved by the other processes than wall time
    cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    row["cpu s"] = {k: round(v, 4) for k, v in cpu.items()}
    row["cpu lean=True / lean=False"] = round(cpu["lean=True"] / cpu["lean=False"], 3)
    row["cpu lean=True / unconverted"] = round(cpu["lean=True"] / cpu["unconverted"], 3)
    row["cpu lean=False / unconverted"] = round(cpu["lean=False"] / cpu["unconverted"], 3)
    row["first call s"] = first_call
    if compiled:
        row["graph breaks"] = graph_breaks
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=list(zoo()), choices=list(zoo()), metavar="MODEL")
    parser.add_argument("--compiled", action="store_true", help="also torch.compile'd (slow to compile on a CPU)")
    parser.add_argument("--compiled-models", nargs="+", help="compile only these of --models (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "lean"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # freed activations stay in the heap: else glibc maps each tens-of-MB tensor anew every step, and the
    # page faults (which depend on what was freed before) move a column's time by up to a third
    from snn_triton import engine

    kept_freed_memory = engine.keep_freed_memory()
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "batch": BATCH,
        "threads": args.threads,
        "kept_freed_memory": kept_freed_memory,
        "unit": "seconds per training step (median)",
        "rows": [],
    }
    for name in args.models:
        compile_it = args.compiled and (args.compiled_models is None or name in args.compiled_models)
        for compiled in [False, True] if compile_it else [False]:
            row = measure(name, args.T, compiled, args.repeats)
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
    write_results(results, args.out, f"lean_speed_{results['date'][:16].replace(':', '')}")


if __name__ == "__main__":
    main()
