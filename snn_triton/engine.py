"""The seed experiment's training loop for BasicCSNN: per-epoch metrics, atomic checkpoints, best
model, resume to the same result as an uninterrupted run, and a clean stop on Ctrl-C.

A run trains one surrogate at a time. Everything random is a function of the seed: the initial
weights (``torch.manual_seed(seed)`` before the model is built) and, per epoch, the order and
flips of the training batches (``snn_triton.data``). A checkpoint holds the weights, Adam's
state and the position in the epoch, so a resumed run continues with the very next batch.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data as datalib
from .model import BasicCSNN
from .nn import LIF

# A resumed run must train the same problem; epochs, device, compile, workers may change.
SAME_ON_RESUME = ("dataset", "batch_size", "lr", "T", "beta", "seed", "max_steps")


@dataclass(frozen=True)
class Config:
    """One experiment; the defaults are the seed's."""
    dataset: str = "cifar10"
    data_dir: str = "data"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    T: int = 8
    beta: float | None = None  # None: each surrogate's default
    seed: int = 0
    max_steps: int | None = None  # cap on batches per epoch (train and test), for smoke runs
    num_workers: int = 0
    device: str = "cpu"
    compile: bool = False
    out_dir: str = "runs/seed"
    download: bool = True


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


class FiringRates:
    """Mean spike count per neuron and step of each LIF layer, averaged over the batches added
    since `reset`. Forward hooks keep each layer's latest rate (torch.compile traces them)."""

    def __init__(self, model: BasicCSNN):
        self.latest: dict[str, torch.Tensor] = {}
        lifs = [m for m in model.modules() if isinstance(m, LIF)]
        for i, module in enumerate(lifs):
            module.register_forward_hook(self._hook(f"lif{i + 1}"))
        self.reset()

    def _hook(self, name: str):
        def record(module, inputs, spikes):
            self.latest[name] = spikes.detach().mean()
        return record

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.batches = 0

    def add_latest(self) -> None:
        for name, rate in self.latest.items():
            self.sums[name] = self.sums.get(name, 0.0) + rate.double()  # on the device: no wait
        self.batches += 1

    def means(self) -> dict[str, float]:
        return {name: float(s) / self.batches for name, s in self.sums.items()}


@dataclass
class EpochTotals:
    """Sums over the batches of an epoch so far (what a checkpoint taken mid-epoch keeps). Within
    an epoch the loss and the count of correct answers stay device tensors: reading one waits for
    the device, so `settle` does it once, at the end."""
    loss: float | torch.Tensor = 0.0
    correct: int | torch.Tensor = 0
    seen: int = 0
    seconds: float = 0.0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss = self.loss + loss.detach().double() * n
        self.correct = self.correct + correct
        self.seen += n

    def settle(self) -> EpochTotals:
        """The sums as Python numbers (waits for the device)."""
        self.loss, self.correct = float(self.loss), int(self.correct)
        return self


class Trainer:
    """Trains one surrogate: `run()` goes from the checkpoint (or from scratch) to the last epoch."""

    def __init__(self, cfg: Config, surrogate: str, data: datalib.ImageData, log=print):
        self.cfg, self.surrogate, self.data, self.log = cfg, surrogate, data, log
        torch.manual_seed(cfg.seed)  # the initial weights, the same for every surrogate
        self.model = BasicCSNN(T=cfg.T, surrogate=surrogate, beta=cfg.beta, in_channels=data.in_channels,
                               num_classes=data.num_classes, image_size=data.image_size).to(cfg.device)
        self.rates = FiringRates(self.model)
        # Partial last batches run eagerly (same weights, same math) instead of compiling a graph
        # for their shape too.
        self.compiled = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.epoch, self.batch, self.totals = 0, 0, EpochTotals()
        self.history: list[dict] = []
        self.best = {"test_acc": -1.0, "epoch": 0}

    # ---- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "config": asdict(self.cfg), "surrogate": self.surrogate,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "totals": asdict(self.totals.settle()),
            "history": self.history, "best": self.best,
        }

    def save(self) -> Path:
        path = checkpoint_path(self.cfg, self.surrogate)
        save_atomic(self.state(), path)
        return path

    def resume(self, ckpt: dict) -> None:
        changed = [k for k in SAME_ON_RESUME if ckpt["config"][k] != getattr(self.cfg, k)]
        if changed or ckpt["surrogate"] != self.surrogate:
            raise ValueError(f"cannot resume {checkpoint_path(self.cfg, self.surrogate)}: it was trained with "
                             + ", ".join(f"{k}={ckpt['config'][k]!r}" for k in changed or ["surrogate"]))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.batch, self.totals = ckpt["epoch"], ckpt["batch"], EpochTotals(**ckpt["totals"])
        self.history, self.best = ckpt["history"], ckpt["best"]

    # ---- loops ----------------------------------------------------------------------------

    def net_for(self, x: torch.Tensor):
        return self.compiled if x.shape[0] == self.cfg.batch_size else self.model

    def train_epoch(self, stop: StopOnInterrupt) -> bool:
        """Trains from the current batch to the end of the epoch; False if stopped by Ctrl-C."""
        cfg = self.cfg
        batches = datalib.loader(self.data, "train", cfg.batch_size, seed=cfg.seed, epoch=self.epoch,
                                 start=self.batch, limit=cfg.max_steps, num_workers=cfg.num_workers)
        bar = tqdm(batches, desc=f"{self.surrogate} epoch {self.epoch + 1}", leave=False,
                   disable=not sys.stderr.isatty())
        started = time.perf_counter()
        for x, y in bar:
            x, y = x.to(cfg.device), y.to(cfg.device)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.net_for(x)(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            self.optimizer.step()
            self.totals.add(loss, (logits.argmax(1) == y).sum(), len(y))
            self.batch += 1
            if stop.requested:
                break
        self.totals.settle()  # the device is done: the time below is the epoch's
        self.totals.seconds += time.perf_counter() - started
        return not stop.requested

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the test set; the firing rates are recorded on it."""
        cfg, totals = self.cfg, EpochTotals()
        self.rates.reset()
        batches = datalib.loader(self.data, "test", cfg.batch_size, limit=cfg.max_steps, num_workers=cfg.num_workers)
        for x, y in tqdm(batches, desc="test", leave=False, disable=not sys.stderr.isatty()):
            x, y = x.to(cfg.device), y.to(cfg.device)
            logits = self.net_for(x)(x)
            totals.add(F.cross_entropy(logits, y), (logits.argmax(1) == y).sum(), len(y))
            self.rates.add_latest()
        totals.settle()
        return totals.loss / totals.seen, totals.correct / totals.seen

    def finish_epoch(self) -> dict:
        test_loss, test_acc = self.evaluate()
        t = self.totals
        metrics = {
            "surrogate": self.surrogate, "epoch": self.epoch + 1,
            "train_loss": t.loss / t.seen, "train_acc": t.correct / t.seen,
            "test_loss": test_loss, "test_acc": test_acc,
            "epoch_time": t.seconds, "images_per_s": t.seen / t.seconds if t.seconds > 0 else math.nan,
            "firing_rates": self.rates.means(),
        }
        self.history.append(metrics)
        if test_acc > self.best["test_acc"]:
            self.best = {"test_acc": test_acc, "epoch": self.epoch + 1}
            save_atomic({"model": self.model.state_dict(), "config": asdict(self.cfg), "surrogate": self.surrogate,
                         **self.best}, best_path(self.cfg, self.surrogate))
        self.epoch, self.batch, self.totals = self.epoch + 1, 0, EpochTotals()
        return metrics

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
                if stop.requested:
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
