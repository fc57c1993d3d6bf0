"""The seed experiment's training loop for BasicCSNN: per-epoch metrics, atomic checkpoints, best
model, resume to the same result as an uninterrupted run, and a clean stop on Ctrl-C; on one
device or on several processes under torchrun (DistributedDataParallel).

A run trains one surrogate at a time. Everything random is a function of the seed: the initial
weights (``torch.manual_seed(seed)`` before the model is built) and, per epoch, the order and
flips of the training batches (``snn_triton.data``). A checkpoint holds the weights, Adam's
state and the position in the epoch, so a resumed run continues with the very next batch.

A training step queues its work and moves on: the metrics are summed on the device
(``snn_triton.objective``) and read once per epoch, every batch has the same shape, and the
progress bar only counts batches, so nothing inside an epoch waits for the device.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import data as datalib
from .distributed import Ranks
from .model import BasicCSNN
from .objective import SUMS, Objective

# A resumed run must train the same problem; epochs, device, compile, precision, data path,
# workers and the number of processes may change.
SAME_ON_RESUME = ("dataset", "batch_size", "lr", "T", "beta", "seed", "max_steps")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Config:
    """One experiment; the defaults are the seed's."""
    dataset: str = "cifar10"
    data_dir: str = "data"
    epochs: int = 10
    batch_size: int = 64  # the global batch: split evenly between the processes
    lr: float = 1e-3
    T: int = 8
    beta: float | None = None  # None: each surrogate's default
    seed: int = 0
    max_steps: int | None = None  # cap on batches per epoch (train and test), for smoke runs
    num_workers: int = 0
    device: str = "cpu"  # "cpu" or "cuda" (each process takes its LOCAL_RANK's GPU)
    compile: str | None = None  # a torch.compile mode of COMPILE_MODES; None: eager
    precision: str = "fp32"  # "bf16": autocast the forward to bfloat16
    data_on_device: bool = False  # hold the dataset in device memory, make batches there
    out_dir: str = "runs/seed"
    download: bool = True


def compile_mode(mode: str, device: torch.device) -> tuple[str, str | None]:
    """(the mode torch.compile gets on `device`, a note for the user or None). reduce-overhead
    replays CUDA graphs, which exist only on CUDA: elsewhere it is the default mode."""
    if mode == "reduce-overhead" and device.type != "cuda":
        return "default", f"--compile-mode reduce-overhead: CUDA graphs exist only on CUDA; on {device.type} it compiles as default"
    return mode, None


# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Makes glibc keep the memory a training step frees for the next step, instead of handing it
    back to the kernel; whether it could (glibc only). A CPU step allocates activations of tens of
    MB; glibc maps each one fresh (above 32 MB it always does) and unmaps it when freed, so every
    step page-faults them in anew, which costs the compiled step about a fifth of its time on the
    2-core machine of README's measurements. Process-wide, so the tool calls it, never the library."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


class Interrupted(Exception):
    """Training stopped on Ctrl-C after saving a checkpoint (its path is the message)."""


class StopOnInterrupt:
    """Turns the first Ctrl-C into a request to stop after the current step (which the loop
    polls), so a checkpoint is never taken halfway through an optimizer step. A second Ctrl-C
    stops at once."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to quit at once)", file=sys.stderr)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, flushed, then renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_path(cfg: Config, surrogate: str) -> Path:
    return Path(cfg.out_dir) / f"checkpoint_{surrogate}.pt"


def best_path(cfg: Config, surrogate: str) -> Path:
    return Path(cfg.out_dir) / f"best_{surrogate}.pt"


class EpochTotals:
    """The metric sums (objective.SUMS, then each layer's firing rate) of an epoch's batches so far,
    float64 on the device, and the seconds spent training them. Reading the sums waits for the
    device: it happens once per epoch (and in a checkpoint)."""

    def __init__(self, layers: int, device: torch.device):
        self.sums = torch.zeros(len(SUMS) + layers, dtype=torch.float64, device=device)
        self.seconds = 0.0

    def add(self, sums: torch.Tensor) -> None:
        self.sums += sums


def means(sums: list[float]) -> tuple[float, float, list[float]]:
    """(mean loss, accuracy, mean firing rate of each layer) from read EpochTotals sums."""
    loss, correct, images, *rates = sums
    return loss / images, correct / images, [r / images for r in rates]


class Trainer:
    """Trains one surrogate: `run()` goes from the checkpoint (or from scratch) to the last epoch.
    `splits` are data.splits(data, ...), shared by the surrogates of a run."""

    def __init__(self, cfg: Config, surrogate: str, data: datalib.ImageData, splits: dict, ranks: Ranks = Ranks()):
        self.cfg, self.surrogate, self.data, self.splits, self.ranks = cfg, surrogate, data, splits, ranks
        self.device = ranks.device(cfg.device)
        torch.manual_seed(cfg.seed)  # the initial weights, the same for every surrogate and process
        self.model = BasicCSNN(T=cfg.T, surrogate=surrogate, beta=cfg.beta, in_channels=data.in_channels,
                               num_classes=data.num_classes, image_size=data.image_size).to(self.device)
        objective = Objective(self.model, cfg.precision, loss_scale=ranks.world)
        self.layers = objective.layers
        if ranks.world > 1:
            objective = DistributedDataParallel(objective, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.step = torch.compile(objective, mode=compile_mode(cfg.compile, self.device)[0]) if cfg.compile else objective
        # Fused Adam: one kernel for every parameter, its step count on the GPU (no host sync).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=self.device.type == "cuda" or None)
        self.epoch, self.batch, self.totals = 0, 0, self.new_totals()
        self.history: list[dict] = []
        self.best = {"test_acc": -1.0, "epoch": 0}

    def new_totals(self) -> EpochTotals:
        return EpochTotals(len(self.layers), self.device)

    def plan(self, split: str) -> tuple[datalib.EpochPlan, int]:
        """This process's share of the epoch's batches of `split`, and how many are run."""
        train = split == "train"
        plan = datalib.EpochPlan(len(self.splits[split]), self.cfg.batch_size, shuffle=train,
                                 hflip=train and self.data.hflip, seed=self.cfg.seed, epoch=self.epoch,
                                 rank=self.ranks.rank, world=self.ranks.world)
        return plan, min(len(plan), self.cfg.max_steps or len(plan))

    # ---- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict:
        """What a checkpoint holds; every process takes part (the epoch's sums are summed over them)."""
        sums = self.ranks.sum(self.totals.sums.clone()).cpu()
        return {
            "config": asdict(self.cfg), "surrogate": self.surrogate,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "totals": {"sums": sums, "seconds": self.totals.seconds},
            "history": self.history, "best": self.best,
        }

    def save(self) -> Path:
        """Writes the checkpoint (rank 0); every process calls it."""
        path, state = checkpoint_path(self.cfg, self.surrogate), self.state()
        if self.ranks.main:
            save_atomic(state, path)
        return path

    def resume(self, ckpt: dict) -> None:
        changed = [k for k in SAME_ON_RESUME if ckpt["config"][k] != getattr(self.cfg, k)]
        if changed or ckpt["surrogate"] != self.surrogate:
            raise ValueError(f"cannot resume {checkpoint_path(self.cfg, self.surrogate)}: it was trained with "
                             + ", ".join(f"{k}={ckpt['config'][k]!r}" for k in changed or ["surrogate"]))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch"]
        self.totals.seconds = ckpt["totals"]["seconds"]
        if self.ranks.main:  # the others start from 0: the sums are summed over the processes
            self.totals.sums.copy_(ckpt["totals"]["sums"])
        self.history, self.best = ckpt["history"], ckpt["best"]

    # ---- loops ----------------------------------------------------------------------------

    def progress(self, total: int, initial: int, desc: str) -> tqdm:
        """A bar that counts batches and never reads a device value (that would wait for the device)."""
        return tqdm(total=total, initial=initial, desc=desc, leave=False,
                    disable=not (self.ranks.main and sys.stderr.isatty()))

    def train_epoch(self, stop: StopOnInterrupt | None = None) -> bool:
        """Trains from the current batch to the end of the epoch; False if stopped by Ctrl-C
        (`stop`; None: never stopped, as in the benchmarks)."""
        plan, count = self.plan("train")
        bar = self.progress(count, self.batch, f"{self.surrogate} epoch {self.epoch + 1}")
        started = time.perf_counter()
        for x, y, weight in self.splits["train"].batches(plan, range(self.batch, count)):
            loss, sums = self.step(x, y, weight)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.totals.add(sums)
            self.batch += 1
            bar.update()
            if self.ranks.any(stop is not None and stop.requested):  # all stop after the same batch
                break
        bar.close()
        self.totals.sums.cpu()  # waits for the device: the time below is the epoch's
        self.totals.seconds += time.perf_counter() - started
        return self.batch == count

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """The metric sums over the test set (all processes), read."""
        plan, count = self.plan("test")
        totals, bar = self.new_totals(), self.progress(count, 0, "test")
        for x, y, weight in self.splits["test"].batches(plan, range(count)):
            totals.add(self.step(x, y, weight)[1])
            bar.update()
        bar.close()
        return self.ranks.sum(totals.sums).tolist()

    def finish_epoch(self) -> dict:
        train_sums = self.ranks.sum(self.totals.sums).tolist()
        train_loss, train_acc, _ = means(train_sums)
        test_loss, test_acc, rates = means(self.evaluate())
        images, seconds = train_sums[SUMS.index("images")], self.totals.seconds
        metrics = {
            "surrogate": self.surrogate, "epoch": self.epoch + 1,
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "epoch_time": seconds, "images_per_s": images / seconds if seconds > 0 else math.nan,
            "firing_rates": dict(zip(self.layers, rates)),  # on the test set
        }
        self.history.append(metrics)
        if test_acc > self.best["test_acc"]:
            self.best = {"test_acc": test_acc, "epoch": self.epoch + 1}
            if self.ranks.main:
                save_atomic({"model": self.model.state_dict(), "config": asdict(self.cfg),
                             "surrogate": self.surrogate, **self.best}, best_path(self.cfg, self.surrogate))
        self.next_epoch()
        return metrics

    def next_epoch(self) -> None:
        """Moves to the first batch of the next epoch, with its sums and time at zero."""
        self.epoch, self.batch, self.totals = self.epoch + 1, 0, self.new_totals()

    def run(self, on_epoch) -> list[dict]:
        """Trains to cfg.epochs, calling on_epoch(metrics) after each epoch's checkpoint is saved.
        Raises Interrupted (after saving) on Ctrl-C."""
        with StopOnInterrupt() as stop:
            while self.epoch < self.cfg.epochs:
                if not self.train_epoch(stop):
                    raise Interrupted(str(self.save()))
                metrics = self.finish_epoch()
                self.save()
                on_epoch(metrics)
                if self.ranks.any(stop.requested):
                    raise Interrupted(str(checkpoint_path(self.cfg, self.surrogate)))
        return self.history


def format_epoch(m: dict, epochs: int) -> str:
    """One line per epoch, like the notebook's."""
    rates = "/".join(f"{r:.3f}" for r in m["firing_rates"].values())
    return (f"[{m['surrogate']}] Epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.4f} acc "
            f"{100 * m['train_acc']:.2f}% | test loss {m['test_loss']:.4f} acc {100 * m['test_acc']:.2f}% | "
            f"{m['epoch_time']:.1f} s, {m['images_per_s']:.0f} img/s | firing rates {rates}")


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def summarize(histories: dict[str, list[dict]], config: dict) -> dict:
    """The seed's final comparison: best test accuracy per surrogate, and how fast each trained."""
    rows = {}
    for surrogate, history in histories.items():
        best = max(history, key=lambda m: m["test_acc"])
        rows[surrogate] = {
            "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            "final_test_acc": history[-1]["test_acc"], "epochs": len(history),
            "mean_epoch_time": sum(m["epoch_time"] for m in history) / len(history),
            "mean_images_per_s": sum(m["images_per_s"] for m in history) / len(history),
        }
    return {"config": config, "surrogates": rows}


def format_summary(summary: dict) -> str:
    lines = ["", "Summary: best test accuracy per surrogate",
             f"{'surrogate':<12}{'best acc':>10}{'epoch':>7}{'final acc':>11}{'s/epoch':>9}{'img/s':>8}"]
    for name, r in summary["surrogates"].items():
        lines.append(f"{name:<12}{100 * r['best_test_acc']:>9.2f}%{r['best_epoch']:>7}"
                     f"{100 * r['final_test_acc']:>10.2f}%{r['mean_epoch_time']:>9.1f}{r['mean_images_per_s']:>8.0f}")
    return "\n".join(lines)


def plot_accuracy(histories: dict[str, list[dict]], path: Path) -> None:
    """Train (dashed) and test (solid) accuracy per epoch of every surrogate."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (surrogate, history) in enumerate(histories.items()):
        epochs = [m["epoch"] for m in history]
        color = f"C{i}"
        ax.plot(epochs, [100 * m["test_acc"] for m in history], color=color, marker="o", label=f"{surrogate} test")
        ax.plot(epochs, [100 * m["train_acc"] for m in history], color=color, linestyle="--", label=f"{surrogate} train")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_summary(summary: dict, histories: dict[str, list[dict]], out_dir: Path) -> None:
    """DIR/summary.json and DIR/accuracy.png."""
    tmp = out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out_dir / "summary.json")
    plot_accuracy(histories, out_dir / "accuracy.png")
