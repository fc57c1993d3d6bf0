"""What a training forward keeps for backward, per sample: spikingjelly's model zoo as it is, converted
with ``st.from_spikingjelly(lean=False)`` (neurons only) and with lean=True; and BasicCSNN rebuilt from
torch layers plus ``st.lean`` against the hand-built one.

    python bench/lean_memory.py                      # T = 4, 8, 16, batch 8, float32, on the CPU
    python bench/lean_memory.py --T 4 --models sew_resnet18
    python bench/lean_memory.py --T 4 --device cuda --peak   # on a GPU (bench/gpu_check.sh): also peak memory
    python bench/lean_memory.py --T 4 --models lif_fashionmnistnet_64 --no-csnn --compiled   # torch.compile'd
    PYTHONPATH=DIR python bench/lean_memory.py --T 4 --models spikformer_cifar10 --no-csnn   # 2.x's zoo

Saved bytes: the storage of every tensor autograd saves in one training forward (a
saved_tensors_hooks count, each storage once, parameters and buffers excluded), over the batch. With
--peak (a GPU): torch.cuda.max_memory_allocated over one training step (forward and backward, after
one warm-up step), less what was allocated before it, per sample. The logits of the three columns are
checked equal before a row is written (on a GPU to 1e-5: its kernels divide as a CPU does, spikingjelly
as PyTorch does there). With --compiled, each column is torch.compile'd (inductor) and counted on its
second call. Results: bench/results/lean/lean_memory[_compiled]_<date>_<machine>.json.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from memory import peak_bytes_per_sample, saved_bytes_per_sample  # noqa: E402
from results import slug  # noqa: E402

import snn_triton as st  # noqa: E402

BATCH = 8
MIB = 2**20


def zoo() -> dict:
    """name -> (a function making the model, the image shape [C, H, W]); the issue's configurations, and
    with spikingjelly 2.x its transformers and MS-ResNet at their CIFAR sizes (ZOO_OF_2)."""
    from spikingjelly.activation_based import neuron, surrogate
    from spikingjelly.activation_based.model import parametric_lif_net, sew_resnet, spiking_resnet, spiking_vgg

    return {
        "spiking_vgg11_bn": (
            lambda: spiking_vgg.spiking_vgg11_bn(
                num_classes=10, spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan()
            ),
            (3, 32, 32),
        ),
        "spiking_vgg11": (
            lambda: spiking_vgg.spiking_vgg11(
                num_classes=10, spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan()
            ),
            (3, 32, 32),
        ),
        "sew_resnet18_add": (
            lambda: sew_resnet.sew_resnet18(
                cnf="ADD", num_classes=10, spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan()
            ),
            (3, 32, 32),
        ),
        "spiking_resnet18": (
            lambda: spiking_resnet.spiking_resnet18(
                num_classes=10, spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan()
            ),
            (3, 32, 32),
        ),
        "plif_cifar10net_64": (
            lambda: parametric_lif_net.CIFAR10Net(
                channels=64, spiking_neuron=neuron.ParametricLIFNode, surrogate_function=surrogate.ATan()
            ),
            (3, 32, 32),
        ),
        "lif_fashionmnistnet_64": (
            lambda: parametric_lif_net.FashionMNISTNet(
                channels=64, spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.Sigmoid()
            ),
            (1, 28, 28),
        ),
        **zoo_of_2(),
    }


# spikingjelly 2.x's models that take an image [N, C, H, W] and repeat it over their own T (their makers
# take T): name -> (its module in spikingjelly.activation_based.model, the maker there).
ZOO_OF_2 = {
    "spikformer_cifar10": ("spikformer", "spikformer_cifar10"),
    "sdt_8_384": ("spike_driven_transformer", "sdt_8_384"),
    "qkformer_10_384": ("qkformer", "qkformer_10_384"),
    "maxformer_cifar": ("maxformer", "maxformer_cifar"),
    "ms_resnet18": ("ms_resnet", "ms_resnet18"),
}
STATIC = set(ZOO_OF_2)


def zoo_of_2() -> dict:
    """ZOO_OF_2's models (Spikformer for CIFAR-10, Spike-driven Transformer 8-384, QKFormer 10-384,
    Max-Former for CIFAR, MS-ResNet-18) as zoo() gives its own, their makers taking T; LIF neurons with
    ATan as their papers. None with 0.0.0.0.14."""
    from spikingjelly.activation_based import neuron, surrogate

    try:
        makers = {
            name: getattr(importlib.import_module(f"spikingjelly.activation_based.model.{module}"), maker)
            for name, (module, maker) in ZOO_OF_2.items()
        }
    except ImportError:
        return {}
    kw = dict(num_classes=10, spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan())
    return {name: (lambda T, make=make: make(T=T, **kw), (3, 32, 32)) for name, make in makers.items()}


def buffers_and_parameters(model: nn.Module) -> list:
    return [*model.parameters(), *model.buffers()]


def zoo_columns(name: str, T: int, device: str = "cpu") -> tuple[dict, torch.Tensor]:
    """The zoo model `name` (multi-step) in the three columns, unconverted, lean=False and lean=True, with the
    same weights, and an input [T, BATCH, ...] of one image repeated over time."""
    from spikingjelly.activation_based import functional

    make, image = zoo()[name]
    torch.manual_seed(0)
    base = (make(T) if name in STATIC else make()).to(device)
    functional.set_step_mode(base, "m")
    columns = {
        "unconverted": base,
        "lean=False": st.from_spikingjelly(copy.deepcopy(base), lean=False),
        "lean=True": st.from_spikingjelly(copy.deepcopy(base), lean=True),
    }
    x = torch.rand(BATCH, *image, generator=torch.Generator().manual_seed(1))
    if name not in STATIC:  # [T, N, C, H, W]: the image at every step
        x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    return columns, x.to(device)


def zoo_row(name: str, T: int, device: str = "cpu", peak: bool = False, compiled: bool = False) -> dict:
    from spikingjelly.activation_based import functional

    columns, x = zoo_columns(name, T, device)
    row, logits = {"model": name, "T": T, "device": device, "compiled": compiled}, {}
    for column, model in columns.items():
        run = torch.compile(model) if compiled else model

        def forward(x_seq, model=model, run=run):
            functional.reset_net(model)
            torch.manual_seed(2)  # the same dropout masks in every column
            out = run(x_seq)
            logits[column] = out.detach()
            return out

        # the helpers take the batch first and divide by it
        batch_first = (lambda t, f=forward: f(t)) if name in STATIC else (lambda t, f=forward: f(t.transpose(0, 1)))
        x_batch_first = x if name in STATIC else x.transpose(0, 1)
        if compiled:
            batch_first(x_batch_first)  # compiled here, not in the count
        row[column] = saved_bytes_per_sample(batch_first, buffers_and_parameters(model), x_batch_first)
        if peak:
            row[f"peak {column}"] = peak_bytes_per_sample(batch_first, x_batch_first, False)
    same = torch.equal if device == "cpu" else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert all(same(logits["unconverted"], v) for v in logits.values()), f"{name}: logits differ"
    row["less, lean=True"] = round(row["unconverted"] / row["lean=True"], 2)
    if peak:
        row["peak less, lean=True"] = round(row["peak unconverted"] / row["peak lean=True"], 2)
    row["rewritten"] = len(st.lean_report(columns["lean=True"]).rewritten)
    return row


def csnn_from_layers(T: int) -> nn.Module:
    """BasicCSNN's layers, from torch layers and st.LIF, as a user would write them (multi-step,
    the image fed at every step)."""
    lif = lambda: st.LIF(tau=2.0, v_threshold=1.0, v_reset=0.0)  # noqa: E731

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), lif(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1)
            )
            self.lif2, self.pool2 = lif(), nn.MaxPool2d(2)
            self.fc1, self.lif3, self.fc2 = nn.Linear(64 * 8 * 8, 128), lif(), nn.Linear(128, 10)

        def forward(self, x):  # x [N, 3, 32, 32]
            x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
            c1 = self.features[0](x_seq.flatten(0, 1)).unflatten(0, (T, -1))
            p1 = self.features[2](self.features[1](c1).flatten(0, 1))
            c2 = self.features[3](p1).unflatten(0, (T, -1))
            p2 = self.pool2(self.lif2(c2).flatten(0, 1))
            s3 = self.lif3(self.fc1(p2.flatten(1)).unflatten(0, (T, -1)))
            return self.fc2(s3).mean(0)

    return Net()


def csnn_rows(T: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.rand(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows = []
    for impl, net in (
        ("torch layers", csnn_from_layers(T)),
        ("torch layers + st.lean", st.lean(csnn_from_layers(T))),
        ("BasicCSNN (hand-built)", st.BasicCSNN(T=T)),
    ):
        rows.append(
            {
                "model": impl,
                "T": T,
                "saved_bytes_per_sample": saved_bytes_per_sample(net, buffers_and_parameters(net), x),
            }
        )
    return rows


def machine() -> str:
    try:
        return (
            subprocess.run(["lscpu"], capture_output=True, text=True)
            .stdout.split("Model name:")[1]
            .splitlines()[0]
            .strip()
        )
    except (OSError, IndexError):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--models", nargs="+", default=list(zoo()), choices=list(zoo()), metavar="MODEL")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak", action="store_true", help="also the peak memory of a training step (GPU)")
    parser.add_argument("--no-csnn", action="store_true", help="the zoo only, not BasicCSNN's rows")
    parser.add_argument("--compiled", action="store_true", help="torch.compile'd columns (slow to compile)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "lean"))
    args = parser.parse_args()
    if args.peak and not args.device.startswith("cuda"):
        parser.error("--peak measures torch.cuda.max_memory_allocated: it takes --device cuda")
    torch.set_num_threads(1)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "batch": BATCH,
        "dtype": "float32",
        "device": args.device,
        "compiled": args.compiled,
        "unit": "saved bytes per sample" + ("; peak: bytes per sample over a training step" if args.peak else ""),
        "zoo": [],
        "basic_csnn": [],
    }
    for T in args.T:
        for name in args.models:
            row = zoo_row(name, T, args.device, args.peak, args.compiled)
            print(
                json.dumps(
                    {
                        k: (round(v / MIB, 2) if isinstance(v, int) and k not in ("T", "rewritten", "compiled") else v)
                        for k, v in row.items()
                    }
                ),
                flush=True,
            )
            results["zoo"].append(row)
        for row in [] if args.no_csnn else csnn_rows(T):
            print(json.dumps(row), flush=True)
            results["basic_csnn"].append(row)
    kind = "lean_memory_compiled" if args.compiled else "lean_memory"
    write_results(results, args.out, f"{kind}_{results['date'][:10]}")


def write_results(results: dict, folder: str, stem: str) -> None:
    """results as JSON in `folder`, named `stem` and the machine; the path printed."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}_{slug(results['machine'])[:40]}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
