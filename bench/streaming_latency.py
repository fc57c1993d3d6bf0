"""Per-step latency of BasicCSNN streaming at batch 1 on a CPU (the edge use case): the network of
``st.export_streaming`` in ONNX Runtime, in PyTorch eager and under torch.compile; ratios over eager.

    python bench/streaming_latency.py [--threads 1] [--image-size 32] [--steps 20]

Each timer runs `--steps` steps, the state carried from step to step, and returns the seconds per
step; the timers run in turn, round after round (``measure.interleaved_medians``), so that the load
of a shared machine falls on all alike. Before timing, each is checked against eager on the same
steps (equal spikes: outputs within 1e-5). Writes bench/results/streaming/<date>_<device>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import interleaved_medians  # noqa: E402
from results import RESULTS_DIR, device_name, slug  # noqa: E402

import snn_triton as st  # noqa: E402


def stepper(step_fn, x, initial, steps: int):
    """A timer: `steps` steps of step_fn from the rest state -> seconds per step; and the outputs."""

    def run():
        state, ys = initial, []
        start = time.perf_counter()
        for _ in range(steps):
            y, *state = step_fn(x, *state)
            ys.append(y)
        return (time.perf_counter() - start) / steps, ys

    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per timed call")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget of the interleaved rounds")
    p.add_argument("--note", default="", help="a note stored in the JSON (e.g. a shared machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    torch.manual_seed(0)
    net = st.BasicCSNN(T=args.steps, image_size=args.image_size).eval()
    x = torch.rand(1, 3, args.image_size, args.image_size)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        streaming = st.export_streaming(net, x, Path(tmp) / "net.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = args.threads
        session = ort.InferenceSession(str(streaming.onnx_path), options, providers=["CPUExecutionProvider"])
        names = ["x", *streaming.state_names]

        def ort_step(x_np, *state):
            return session.run(None, dict(zip(names, (x_np, *state))))

        start = time.perf_counter()
        compiled = torch.compile(streaming.module)
        compiled(x, *streaming.initial_state)
        cold_compile_s = time.perf_counter() - start
        timers = {
            "pytorch eager": stepper(streaming.module, x, streaming.initial_state, args.steps),
            "torch.compile": stepper(compiled, x, streaming.initial_state, args.steps),
            "onnxruntime": stepper(ort_step, x.numpy(), [v.numpy() for v in streaming.initial_state], args.steps),
        }
        _, eager_ys = timers["pytorch eager"]()
        for name, timer in timers.items():  # checked before timed
            ys = [torch.as_tensor(y) for y in timer()[1]]
            torch.testing.assert_close(torch.stack(ys), torch.stack(eager_ys), rtol=0, atol=1e-5, msg=name)
        medians = interleaved_medians({name: (lambda t=t: t()[0]) for name, t in timers.items()}, args.seconds)
    device = device_name()
    eager = medians["pytorch eager"]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "threads": args.threads,
        "note": args.note,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "model": f"BasicCSNN, image 3x{args.image_size}x{args.image_size}, batch 1, one step per call",
        "cold_compile_s": cold_compile_s,
        "rows": [
            {"impl": name, "ms_per_step": s * 1e3, "speedup_over_eager": eager / s} for name, s in medians.items()
        ],
    }
    out = RESULTS_DIR / "streaming" / f"{datetime.date.today().isoformat()}_{slug(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'impl':<16} {'ms/step':>8} {'x eager':>8}")
    for row in result["rows"]:
        print(f"{row['impl']:<16} {row['ms_per_step']:8.3f} {row['speedup_over_eager']:8.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
