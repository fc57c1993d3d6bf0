"""What a training step keeps for backward: the seed notebook's network against BasicCSNN, per sample.

    python bench/memory.py                                 # T = 4, 8, 16, 32 on the CPU, eager
    python bench/memory.py --before ../old_checkout        # and BasicCSNN of another checkout, side by side
    python bench/memory.py --device cuda --peak            # on a GPU: also peak memory, eager and compiled

Saved bytes: the storage of every tensor autograd saves in one training forward (a
saved_tensors_hooks count, each storage once, parameters excluded), over the batch. Peak (GPU):
torch.cuda.max_memory_allocated over a forward and backward, less what was allocated before it.
Results: bench/results/memory/memory_<date>_<device>.json and memory_saved_bytes.png beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 16


def saved_bytes_per_sample(forward, parameters, x) -> int:
    """Bytes of storage autograd keeps for backward in one call of `forward`, parameters excluded, over the batch."""
    import torch

    parameters = {p.untyped_storage().data_ptr() for p in parameters}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(x).sum()
    return sum(storages.values()) // x.shape[0]


def peak_bytes_per_sample(net, x, compiled: bool) -> int:
    """GPU: the peak memory of a forward and backward over what was allocated before, per sample."""
    import torch

    step = torch.compile(net) if compiled else net
    step(x).sum().backward()  # warm up (and compile)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(x).sum().backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) // x.shape[0]


def measure(impl: str, T: int, device: str, peak: bool) -> dict:
    """One row, in this process: impl is 'seed notebook' or 'BasicCSNN'."""
    import torch

    sys.path[:0] = [str(REPO / "tests")]
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    if impl == "seed notebook":
        from seed_notebook import SeedNet

        net = SeedNet(T=T).to(device)

        def forward(images):
            net.reset()
            return net(images)
    else:
        import snn_triton as st

        net = st.BasicCSNN(T=T).to(device)
        forward = net
    row = {
        "impl": impl,
        "T": T,
        "device": device,
        "saved_bytes_per_sample": saved_bytes_per_sample(forward, list(net.parameters()), x),
    }
    if peak:
        row["peak_bytes_per_sample_eager"] = peak_bytes_per_sample(forward, x, compiled=False)
        if impl != "seed notebook":
            row["peak_bytes_per_sample_compiled"] = peak_bytes_per_sample(forward, x, compiled=True)
    return row


def run(impl: str, T: int, device: str, peak: bool, checkout: Path = REPO) -> dict:
    """measure() in a process of its own, importing snn_triton from `checkout`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), str(REPO / "tests")]))
    command = [sys.executable, __file__, "--child", impl, str(T), device] + (["--peak"] if peak else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def traffic_per_sample(T: int, image_size: int = 32) -> dict[str, dict[str, int]]:
    """Bytes the LIF and pooling ops of a BasicCSNN training step move through memory per sample
    (float32, forward + backward), before (LIF scans, then torch's max_pool2d with int64 indices, the
    static input's [T, ...] gradient summed by autograd) and now (the static and pooled scans, the
    pooled spikes packed to bits for conv2 and fc1): the kernels' traffic model, snn_triton.kernels.traffic,
    plus torch's pooling and sum counted the same way (each input read once, each output written once)."""
    import torch

    from snn_triton.kernels import traffic

    f32 = torch.float32
    n1, n2, n3 = 32 * image_size**2, 64 * (image_size // 2) ** 2, 128  # neurons of LIF1, LIF2, LIF3

    def pool(n):  # max_pool2d_with_indices: S in, pooled + int64 indices out; back: grad + indices in, grad S out
        return T * (n * 4 + n // 4 * 4 + n // 4 * 8) + T * (n // 4 * 4 + n // 4 * 8 + n * 4)

    def lif(n, static=False):
        return traffic.lif_scan_forward_bytes(T, n, f32, x_stride_t_zero=static) + traffic.lif_scan_backward_bytes(
            T, n, f32
        )

    def bits(n):  # packed in forward, unpacked in backward
        return traffic.pack_bits_bytes(n * T, f32, programs=0) + traffic.unpack_bits_bytes(n * T, f32)

    before = {
        "LIF1 + pool1": lif(n1, static=True) + pool(n1) + T * n1 * 4 + n1 * 4,  # + the sum over T
        "LIF2 + pool2": lif(n2) + pool(n2),
        "LIF3": lif(n3),
    }
    now = {
        "LIF1 + pool1": traffic.lif_static_forward_bytes(T, n1, f32, pooled=True)
        + traffic.lif_static_backward_bytes(T, n1, f32, pooled=True)
        + bits(n1 // 4),
        "LIF2 + pool2": traffic.lif_pool_forward_bytes(T, n2, f32)
        + traffic.lif_pool_backward_bytes(T, n2, f32)
        + bits(n2 // 4),
        "LIF3": lif(n3),
    }
    return {"before": before, "now": now}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        points = sorted((r["T"], r["saved_bytes_per_sample"] / 1e6) for r in rows if r["impl"] == impl)
        ax.plot(*zip(*points), marker="o", label=impl)
    ax.set(
        yscale="log",
        xlabel="T (time steps)",
        ylabel="MB kept for backward per sample",
        title="What a training forward keeps for backward (float32, eager)",
    )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted({r["T"] for r in rows}), labels=[str(t) for t in sorted({r["T"] for r in rows})])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="4,8,16,32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak", action="store_true", help="also peak memory, eager and compiled (GPU)")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier snn_triton: its BasicCSNN too")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, T, device = args.child
        print(json.dumps(measure(impl, int(T), device, args.peak)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from results import device_name, slug

    rows = []
    for T in (int(t) for t in args.steps.split(",")):
        rows.append(run("seed notebook", T, args.device, args.peak))
        if args.before:
            rows.append(dict(run("BasicCSNN", T, args.device, args.peak, args.before), impl="BasicCSNN before"))
        rows.append(run("BasicCSNN", T, args.device, args.peak))
        for row in rows[-3 if args.before else -2 :]:
            print(json.dumps(row), flush=True)
    print(
        f"BasicCSNN keeps {rows[-1]['saved_bytes_per_sample'] / 1e6:.2f} MB per sample at T={rows[-1]['T']}, "
        f"the seed notebook's network {rows[-2 - bool(args.before)]['saved_bytes_per_sample'] / 1e6:.2f} MB"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"memory_{date.today().isoformat()}_{slug(device_name())}"
    traffic = {T: traffic_per_sample(T) for T in sorted({r["T"] for r in rows})}
    (args.out / f"{name}.json").write_text(
        json.dumps(
            {"device": device_name(), "batch": BATCH, "rows": rows, "traffic_bytes_per_sample": traffic}, indent=1
        )
        + "\n"
    )
    plot(rows, args.out / "memory_saved_bytes.png")


if __name__ == "__main__":
    main()
