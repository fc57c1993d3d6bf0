"""How compile time and the cost per neuron-step grow with T on the CPU: `st.lif_scan`
forward+backward (sigmoid surrogate, [T, 16, 4096]) and a BasicCSNN training step, compiled and eager,
for the scan as the library runs it (mode `loop`: unrolled up to compiler.UNROLLED_STEPS steps, a loop
beyond) and unrolled at every T (mode `unrolled`), each case in a fresh process with an empty inductor cache.

    python bench/sequence_length.py                     # everything below, ~1 h on 2 shared cores
    python bench/sequence_length.py --cases lif:8,lif:128 --modes loop

Times are the process's own CPU time (time.thread_time) with one thread, so that other work on a shared
machine disturbs them less; the cold compile is wall time. Results: bench/results/sequence_length/<date>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIF_SHAPE = (16, 4096)
STEP_BATCH = 64
DEFAULT_CASES = [f"lif:{T}" for T in (8, 32, 128, 512)] + [f"step:{T}" for T in (8, 32, 128)]


def measure(kind: str, T: int, mode: str, rounds: int) -> dict:
    """In this process (a fresh one): cold compile + first call, then CPU time per call, compiled and eager."""
    import torch

    torch.set_num_threads(1)
    import snn_triton as st
    from snn_triton import compiler, engine

    engine.keep_freed_memory()
    if mode == "unrolled":
        compiler.UNROLLED_STEPS = 1 << 30
    torch.manual_seed(0)
    if kind == "lif":
        x = (torch.randn(T, *LIF_SHAPE) * 1.5 + 0.5).requires_grad_()
        grad = torch.randn(T, *LIF_SHAPE)

        def call(fn):
            return torch.autograd.grad(fn(x), x, grad)

        def fn(x):
            return st.lif_scan(x, surrogate="sigmoid")

        units = T * x[0].numel()  # neuron-steps
        eager = lambda: call(fn)  # noqa: E731
        compiled_fn = torch.compile(fn)
        compiled = lambda: call(compiled_fn)  # noqa: E731
    else:
        net = st.BasicCSNN(T=T, surrogate="superspike")
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        images, labels = torch.randn(STEP_BATCH, 3, 32, 32), torch.randint(0, 10, (STEP_BATCH,))

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            opt.step()

        units = 1  # steps
        eager = step
        compiled = torch.compile(step)
    start = time.perf_counter()
    compiled()
    compile_seconds = time.perf_counter() - start
    out = {"kind": kind, "T": T, "mode": mode, "cold_compile_s": compile_seconds}
    for name, timed in (("compiled", compiled), ("eager", eager)):
        timed()
        cpu = []
        for _ in range(rounds):
            begin = time.thread_time()
            timed()
            cpu.append(time.thread_time() - begin)
        out[f"{name}_cpu_s"] = sorted(cpu)[len(cpu) // 2]
    if kind == "lif":
        for name in ("compiled", "eager"):
            out[f"{name}_ns_per_neuron_step"] = out[f"{name}_cpu_s"] / units * 1e9
    return out


def run_case(kind: str, T: int, mode: str, rounds: int, limit: float) -> dict:
    """measure() in a fresh process with an empty inductor cache; a case over `limit` s is recorded as such."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        command = [sys.executable, __file__, "--child", f"{kind}:{T}", "--modes", mode, "--rounds", str(rounds)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"kind": kind, "T": T, "mode": mode, "note": f"not finished in {limit:.0f} s (compile)"}
    if done.returncode:
        return {"kind": kind, "T": T, "mode": mode, "note": done.stderr.strip().splitlines()[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


KINDS, MODES = ("lif", "step"), ("loop", "unrolled")


def listed(parse, what: str):
    """An argparse type: a comma-separated list, each item checked by parse (ValueError: refused)."""

    def parse_list(text):
        try:
            return [parse(item) for item in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}") from None

    return parse_list


def case(text: str) -> tuple[str, int]:
    kind, _, T = text.partition(":")
    if kind not in KINDS or not T.isdigit() or int(T) < 1:
        raise ValueError(text)
    return kind, int(T)


def mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        type=listed(case, "kind:T,... with kind lif or step and T >= 1"),
        default=",".join(DEFAULT_CASES),
        help="kind:T,... (kind: lif or step)",
    )
    parser.add_argument(
        "--modes",
        type=listed(mode, "loop, unrolled or both, comma-separated"),
        default="loop,unrolled",
        help="loop (as the library runs), unrolled (every step unrolled)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--limit", type=float, default=1200, help="seconds per case before it is given up")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, T = case(args.child)
        print(json.dumps(measure(kind, T, args.modes[0], args.rounds)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from results import device_name, slug

    path = REPO / "bench" / "results" / "sequence_length" / f"{date.today().isoformat()}_{slug(device_name())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for kind, T in args.cases:
        for mode_name in args.modes:
            row = run_case(kind, T, mode_name, args.rounds, args.limit)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["kind"], r["T"], r["mode"]) != (kind, T, mode_name)] + [row]
            path.write_text(json.dumps({"device": device_name(), "threads": 1, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
