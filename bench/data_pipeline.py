"""Images/s of the two data paths of train.py, side by side in one process: batches made by a
DataLoader with torchvision's transforms (the seed's way) against batches made from the dataset
held in device memory (``--data-on-device``).

    python bench/data_pipeline.py                      # Fashion-MNIST (apt-get install dataset-fashion-mnist)
    python bench/data_pipeline.py --dataset synthetic  # no data needed

Two measurements, each interleaved round by round so that both paths see the same machine load:
  batches   the data path alone: the training split's batches of one epoch plan, made and moved
            to the device, nothing else;
  training  compiled training steps (BasicCSNN, SuperSpike, Adam) fed by each path.
Prints a Markdown table of medians and ratios and writes bench/results/pipeline/<date>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import device_name, slug  # noqa: E402  (bench/results.py)

from snn_triton import data as datalib  # noqa: E402
from snn_triton import engine  # noqa: E402

PATHS = {
    "DataLoader": dict(resident=False, num_workers=0),
    "DataLoader, 2 workers": dict(resident=False, num_workers=2),
    "on the device": dict(resident=True, num_workers=0),
}


def batches_per_s(split, plan, count: int) -> float:
    start = time.perf_counter()
    for x, y, weight in split.batches(plan, range(count)):
        pass
    x.sum().item()  # waits for the device
    return count / (time.perf_counter() - start)


def measure_batches(data, device, batch_size, count, rounds) -> dict[str, list[float]]:
    plan = datalib.EpochPlan(len(data.train), batch_size, shuffle=True, hflip=data.hflip, seed=0)
    count = min(count, len(plan))
    splits = {name: datalib.splits(data, device, **kw)["train"] for name, kw in PATHS.items()}
    images_per_s = {name: [] for name in PATHS}
    for _ in range(rounds):
        for name, split in splits.items():
            images_per_s[name].append(batch_size * batches_per_s(split, plan, count))
    return images_per_s


def measure_training(data, device, cfg, rounds) -> dict[str, list[float]]:
    """Images/s of `cfg.max_steps` compiled training steps per round and path (after one untimed
    round that compiles)."""
    trainers = {}
    for name, kw in PATHS.items():
        path_cfg = replace(cfg, data_on_device=kw["resident"], num_workers=kw["num_workers"])
        trainers[name] = engine.Trainer(path_cfg, "superspike", data, datalib.splits(data, device, **kw))
    images_per_s = {name: [] for name in PATHS}
    for round_ in range(rounds + 1):
        for name, trainer in trainers.items():
            trainer.train_epoch()
            if round_:
                images_per_s[name].append(cfg.max_steps * cfg.batch_size / trainer.totals.seconds)
            trainer.next_epoch()
    return images_per_s


def table(title: str, images_per_s: dict[str, list[float]]) -> list[str]:
    base = statistics.median(images_per_s["DataLoader"])
    lines = [
        f"**{title}** (median of {len(next(iter(images_per_s.values())))} interleaved rounds)",
        "",
        "| data path | images/s | over DataLoader |",
        "|---|---|---|",
    ]
    for name, values in images_per_s.items():
        lines.append(f"| {name} | {statistics.median(values):,.0f} | {statistics.median(values) / base:.2f}× |")
    return lines + [""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "synthetic", "cifar10"], default="fashion-mnist")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=200, help="batches per round, data path alone")
    p.add_argument("--steps", type=int, default=40, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    data = datalib.load(args.dataset, args.data_dir, download=False)
    result = {
        "device": device_name(),
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batches": measure_batches(data, device, args.batch_size, args.batches, args.rounds),
    }
    lines = table(f"Data path alone: {args.batches} batches of {args.batch_size}, {args.dataset}", result["batches"])
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as out:
            cfg = engine.Config(
                dataset=args.dataset,
                batch_size=args.batch_size,
                max_steps=args.steps,
                device=args.device,
                compile="default",
                out_dir=out,
            )
            result["training"] = measure_training(data, device, cfg, args.rounds)
        lines += table(
            f"Compiled training, {args.steps} steps of {args.batch_size} (T=8, SuperSpike, Adam)", result["training"]
        )
    print("\n".join(lines))
    path = REPO / "bench" / "results" / "pipeline" / f"{date.today().isoformat()}_{slug(result['device'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
