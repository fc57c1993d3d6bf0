"""The seed experiment's training loop for BasicCSNN: per-epoch metrics, atomic checkpoints, best
model, resume to the same result as an uninterrupted run, and a clean stop on Ctrl-C; on one
device or on several processes under torchrun (DistributedDataParallel).

A run trains one surrogate with one beta from one seed. Everything random is a function of the
seed: the initial weights (``torch.manual_seed(seed)`` before the model is built) and, per epoch,
the order and flips of the training batches (``snn_triton.data``). A checkpoint holds the weights,
Adam's state, the position in the epoch and the run's history, so a resumed run continues with the
very next batch, and a checkpoint is the record of its run (``snn_triton.study`` reads them).

What survives what: a checkpoint is written after every epoch and on Ctrl-C, to a temporary file
that is then renamed over the old one, so a kill at any moment (SIGKILL included) leaves the
previous checkpoint whole; a resumed run redoes the batches after it and, every batch being a
function of (seed, epoch), ends with the same weights and metrics.

A training step queues its work and moves on: the metrics are summed on the device
(``snn_triton.objective``) and read once per epoch, every batch has the same shape, and the
progress bar only counts batches, so nothing inside an epoch waits for the device.
"""

from __future__ import annotations

import ctypes
import json
import logging
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
from .surrogate import SURROGATES

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
        return (
            "default",
            f"--compile-mode reduce-overhead: CUDA graphs exist only on CUDA; on {device.type} it compiles as default",
        )
    return mode, None


class _NoCudaRuntimeNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def quiet_cpu_compile(device: torch.device) -> None:
    """Compiling for a CPU imports torch.utils.cpp_extension, which warns "No CUDA runtime is
    found" whenever a CUDA toolkit is installed on a machine without a GPU: true, and irrelevant to
    a CPU run. Drops that one message (other warnings of that logger still show)."""
    if device.type == "cpu":
        logger = logging.getLogger("torch.utils.cpp_extension")
        if not any(isinstance(f, _NoCudaRuntimeNote) for f in logger.filters):
            logger.addFilter(_NoCudaRuntimeNote())


# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Makes glibc keep the memory a training step frees for the next step, instead of handing it
    back to the kernel; whether it could (glibc only). A CPU step allocates activations of tens of
    MB; glibc maps each one fresh (above 32 MB it always does) and unmaps it when freed, so every
    step page-faults them in anew, which costs the compiled step about a fifth of its time on the
    2-core machines of docs/performance.md. Process-wide, so the tool calls it, never the library."""
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


def temporary(path: Path) -> Path:
    """Where write_atomic writes `path` before renaming it (a kill can leave it behind)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, write) -> None:
    """write(file) into a temporary file in the same folder, flushed to disk, then renamed over
    `path`: a kill at any moment leaves either the old file or the new one, both whole."""
    tmp = temporary(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_atomic(obj, path: Path) -> None:
    """torch.save(obj) to `path`, atomically (write_atomic)."""
    write_atomic(path, lambda f: torch.save(obj, f))


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed; the message is one line: the file, what is wrong, what to do."""


# What every checkpoint holds (Trainer.state()); the config's keys are those a resume compares.
CHECKPOINT_KEYS = ("config", "surrogate", "model", "optimizer", "epoch", "batch", "totals", "history", "best")


def load_checkpoint(path: Path) -> dict:
    """The checkpoint at `path`, checked for the keys a resume reads; CheckpointError if it is
    truncated, corrupt, not a checkpoint or incomplete."""

    def broken(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; delete it to start that run over, or point --out elsewhere")

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated (zip reader), not a pickle, foreign types: all corrupt here
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise broken(f"not a readable checkpoint, the file is truncated or corrupt ({first_line.strip()})") from None
    if not isinstance(ckpt, dict):
        raise broken(f"not a checkpoint (it holds a {type(ckpt).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    missing += [f"config.{k}" for k in SAME_ON_RESUME if k not in ckpt.get("config", {})]
    missing += [f"totals.{k}" for k in ("sums", "seconds", "grad_norms") if k not in ckpt.get("totals", {})]
    if missing:
        raise broken(f"an incomplete checkpoint, without {', '.join(missing)}")
    wrong = wrong_values(ckpt)
    if wrong:
        raise broken(f"a checkpoint with values no run writes ({'; '.join(wrong)})")
    return ckpt


def wrong_values(ckpt: dict) -> list[str]:
    """What in a checkpoint (with every key of CHECKPOINT_KEYS) no Trainer writes: each entry's type,
    and the counts and seconds in range; edited or foreign files would otherwise fail deep in a run."""

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def vector(value) -> bool:
        return isinstance(value, torch.Tensor) and value.dim() == 1 and value.dtype == torch.float64

    totals, best = ckpt["totals"], ckpt["best"]
    checks = {
        "epoch": count(ckpt["epoch"]),
        "batch": count(ckpt["batch"]),
        "surrogate": isinstance(ckpt["surrogate"], str),
        "model": isinstance(ckpt["model"], dict) and all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()),
        "optimizer": isinstance(ckpt["optimizer"], dict),
        "totals.sums": vector(totals["sums"]),
        "totals.grad_norms": vector(totals["grad_norms"]),
        "totals.seconds": isinstance(totals["seconds"], (int, float))
        and not isinstance(totals["seconds"], bool)
        and math.isfinite(totals["seconds"])
        and totals["seconds"] >= 0,
        "history": isinstance(ckpt["history"], list) and all(isinstance(m, dict) for m in ckpt["history"]),
        "best": isinstance(best, dict) and isinstance(best.get("test_acc"), (int, float)) and count(best.get("epoch")),
    }
    return [f"{key}={short(key, ckpt)}" for key, fine in checks.items() if not fine]


def short(key: str, ckpt: dict) -> str:
    """The value at `key` (or totals.key) of a checkpoint, in a few words for an error message."""
    head, _, tail = key.partition(".")
    value = ckpt[head][tail] if tail else ckpt[head]
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def run_name(surrogate: str, beta: float, seed: int) -> str:
    """The name of one run of a study, in its files: ``superspike_beta10_seed0``."""
    return f"{surrogate}_beta{beta:g}_seed{seed}"


def beta_of(cfg: Config, surrogate: str) -> float:
    return SURROGATES[surrogate] if cfg.beta is None else cfg.beta


def checkpoint_path(cfg: Config, surrogate: str) -> Path:
    return Path(cfg.out_dir) / f"checkpoint_{run_name(surrogate, beta_of(cfg, surrogate), cfg.seed)}.pt"


def best_path(cfg: Config, surrogate: str) -> Path:
    return Path(cfg.out_dir) / f"best_{run_name(surrogate, beta_of(cfg, surrogate), cfg.seed)}.pt"


class EpochTotals:
    """The metric sums (objective.SUMS, then each layer's firing rate) of an epoch's batches so far,
    the sums of each weight's gradient norm over its steps, float64 on the device, and the seconds
    spent training them. Reading them waits for the device: it happens once per epoch (and in a
    checkpoint)."""

    def __init__(self, layers: int, weights: int, device: torch.device):
        self.sums = torch.zeros(len(SUMS) + layers, dtype=torch.float64, device=device)
        self.grad_norms = torch.zeros(weights, dtype=torch.float64, device=device)
        self.seconds = 0.0

    def add(self, sums: torch.Tensor) -> None:
        self.sums += sums

    def add_grad_norms(self, weights: list[torch.Tensor]) -> None:
        """Adds the L2 norm of each weight's gradient: queued on the device, never read here."""
        self.grad_norms += torch.stack([torch.linalg.vector_norm(w.grad) for w in weights])


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
        self.beta = beta_of(cfg, surrogate)
        torch.manual_seed(cfg.seed)  # the initial weights, the same for every surrogate and process
        self.model = BasicCSNN(
            T=cfg.T,
            surrogate=surrogate,
            beta=self.beta,
            in_channels=data.in_channels,
            num_classes=data.num_classes,
            image_size=data.image_size,
        ).to(self.device)
        # The weights whose gradient norms are diagnosed, named by kind and order: conv1, conv2, fc1, fc2.
        layers = [m for m in self.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        kind = {m: "conv" if isinstance(m, torch.nn.Conv2d) else "fc" for m in layers}  # SpikeConv2d is a conv
        self.weights = {
            f"{kind[m]}{sum(kind[k] == kind[m] for k in layers[: i + 1])}": m.weight for i, m in enumerate(layers)
        }
        objective = Objective(self.model, cfg.precision, loss_scale=ranks.world)
        self.layers = objective.layers
        if ranks.world > 1:
            objective = DistributedDataParallel(
                objective, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            quiet_cpu_compile(self.device)
            torch._dynamo.reset()  # each run of a study compiles its own model; no recompile limit reached
            objective = torch.compile(objective, mode=compile_mode(cfg.compile, self.device)[0])
        self.step = objective
        # Fused Adam: one kernel for every parameter, its step count on the GPU (no host sync).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=self.device.type == "cuda" or None)
        self.epoch, self.batch, self.totals = 0, 0, self.new_totals()
        self.history: list[dict] = []
        self.best = {"test_acc": -1.0, "epoch": 0}
        if ranks.main:  # what a kill during a write left behind
            for path in (checkpoint_path(cfg, surrogate), best_path(cfg, surrogate)):
                temporary(path).unlink(missing_ok=True)

    def new_totals(self) -> EpochTotals:
        return EpochTotals(len(self.layers), len(self.weights), self.device)

    def plan(self, split: str) -> tuple[datalib.EpochPlan, int]:
        """This process's share of the epoch's batches of `split`, and how many are run."""
        train = split == "train"
        plan = datalib.EpochPlan(
            len(self.splits[split]),
            self.cfg.batch_size,
            shuffle=train,
            hflip=train and self.data.hflip,
            seed=self.cfg.seed,
            epoch=self.epoch,
            rank=self.ranks.rank,
            world=self.ranks.world,
        )
        return plan, min(len(plan), self.cfg.max_steps or len(plan))

    # ---- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict:
        """What a checkpoint holds; every process takes part (the epoch's sums are summed over them)."""
        sums = self.ranks.sum(self.totals.sums.clone()).cpu()
        return {
            "config": asdict(self.cfg),
            "surrogate": self.surrogate,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "totals": {"sums": sums, "seconds": self.totals.seconds, "grad_norms": self.totals.grad_norms.cpu()},
            "history": self.history,
            "best": self.best,
        }

    def save(self) -> Path:
        """Writes the checkpoint (rank 0); every process calls it."""
        path, state = checkpoint_path(self.cfg, self.surrogate), self.state()
        if self.ranks.main:
            save_atomic(state, path)
        return path

    def resume(self, ckpt: dict) -> None:
        """Continues from `ckpt` (load_checkpoint's); ValueError if it trained another problem,
        CheckpointError if its tensors do not fit this model."""
        path = checkpoint_path(self.cfg, self.surrogate)
        trained = {**ckpt["config"], "surrogate": ckpt["surrogate"]}
        now = {**asdict(self.cfg), "surrogate": self.surrogate}
        changed = [k for k in (*SAME_ON_RESUME, "surrogate") if trained[k] != now[k]]
        if changed:
            raise ValueError(
                f"cannot resume {path}: it was trained with " + ", ".join(f"{k}={trained[k]!r}" for k in changed)
            )
        unfit = self.unfit_tensors(ckpt)
        if unfit:
            raise CheckpointError(
                f"{path}: its tensors do not fit this network ({unfit}); "
                "delete it to start that run over, or point --out elsewhere"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.totals.grad_norms.copy_(ckpt["totals"]["grad_norms"])  # the same in every process
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise CheckpointError(
                f"{path}: its tensors do not fit this network ({first_line}); "
                "delete it to start that run over, or point --out elsewhere"
            ) from None
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch"]
        self.totals.seconds = ckpt["totals"]["seconds"]
        if self.ranks.main:  # the others start from 0: the sums are summed over the processes
            self.totals.sums.copy_(ckpt["totals"]["sums"])
        self.history, self.best = ckpt["history"], ckpt["best"]

    def unfit_tensors(self, ckpt: dict) -> str:
        """What load_state_dict and copy_ would take without a word: weights of another dtype (cast,
        their precision lost) and totals of another shape (broadcast); '' where all fit."""
        own = self.model.state_dict()
        for key, value in ckpt["model"].items():
            if key in own and value.dtype != own[key].dtype:
                return f"{key} is {value.dtype}, this network's is {own[key].dtype}"
        for key in ("sums", "grad_norms"):
            shape, expected = ckpt["totals"][key].shape, getattr(self.totals, key).shape
            if shape != expected:
                return f"totals.{key} has shape {list(shape)}, this network's has {list(expected)}"
        return ""

    # ---- loops ----------------------------------------------------------------------------

    def progress(self, total: int, initial: int, desc: str) -> tqdm:
        """A bar that counts batches and never reads a device value (that would wait for the device)."""
        return tqdm(
            total=total, initial=initial, desc=desc, leave=False, disable=not (self.ranks.main and sys.stderr.isatty())
        )

    def train_epoch(self, stop: StopOnInterrupt | None = None) -> bool:
        """Trains from the current batch to the end of the epoch; False if stopped by Ctrl-C
        (`stop`; None: never stopped, as in the benchmarks)."""
        plan, count = self.plan("train")
        bar = self.progress(count, self.batch, f"{self.surrogate} epoch {self.epoch + 1}")
        started = time.perf_counter()
        for x, y, weight in self.splits["train"].batches(plan, range(self.batch, count)):
            loss, sums = self.step(x, y, weight)
            loss.backward()
            self.totals.add_grad_norms(list(self.weights.values()))
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
        steps = max(self.batch, 1)
        metrics = {
            "surrogate": self.surrogate,
            "beta": self.beta,
            "seed": self.cfg.seed,
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "epoch_time": seconds,
            "images_per_s": images / seconds if seconds > 0 else math.nan,
            "firing_rates": dict(zip(self.layers, rates)),  # on the test set
            # the mean over the epoch's steps of each weight's gradient norm (the same in every process)
            "grad_norms": dict(zip(self.weights, (self.totals.grad_norms / steps).tolist())),
        }
        self.history.append(metrics)
        if test_acc > self.best["test_acc"]:
            self.best = {"test_acc": test_acc, "epoch": self.epoch + 1}
            if self.ranks.main:
                save_atomic(
                    {
                        "model": self.model.state_dict(),
                        "config": asdict(self.cfg),
                        "surrogate": self.surrogate,
                        "beta": self.beta,
                        **self.best,
                    },
                    best_path(self.cfg, self.surrogate),
                )
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
    return (
        f"[{run_name(m['surrogate'], m['beta'], m['seed'])}] Epoch {m['epoch']}/{epochs}: "
        f"train loss {m['train_loss']:.4f} acc "
        f"{100 * m['train_acc']:.2f}% | test loss {m['test_loss']:.4f} acc {100 * m['test_acc']:.2f}% | "
        f"{m['epoch_time']:.1f} s, {m['images_per_s']:.0f} img/s | firing rates {rates}"
    )


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Appends `rows` in one write (processes of a split study may append to the same file)."""
    with open(path, "a") as f:
        f.write(jsonl(rows))
