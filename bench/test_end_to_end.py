"""End-to-end suite: the seed experiment's training step, the notebook's code against st.BasicCSNN.

One step = forward, cross-entropy, backward, Adam (lr 1e-3), batch 64, T=8, SuperSpike, on one batch that
every implementation sees. The seed notebook's network (tests/seed_notebook.py, spikingjelly
0.0.0.0.14 single-step, the whole net called T times, reset after each batch) is the baseline.
On a GPU also a CIFAR-10-sized epoch (50,000 random 3x32x32 uint8 images) at batch 64 and 512: the
notebook's code with its DataLoader against train.py's fastest path (the issue's "whole epoch").
"""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from measure import CPU_SECONDS, elapsed_seconds, median_seconds
from peers import COMPILE_BACKEND
from results import BASELINES
from seed_notebook import SeedNet
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from workloads import DEVICE, E2E, randn

import snn_triton as st
from snn_triton import data as datalib
from snn_triton import engine

SEED = BASELINES["train"]
IMPLS = [SEED, "snn_triton BasicCSNN eager", "snn_triton BasicCSNN compiled"]
FAST = "snn_triton train.py, data on the device, reduce-overhead"
CLASSES = 10
SURROGATE = "superspike"  # the surrogate of the seed's first run and of the CPU target (docs/performance.md)


class Trainer:
    """A model, its Adam and its training step, as the seed notebook trains."""

    def __init__(self, impl):
        shape = dict(T=E2E["T"], surrogate=SURROGATE, image_size=E2E["image_size"])
        self.net = (SeedNet(**shape) if impl == SEED else st.BasicCSNN(**shape)).to(DEVICE)
        self.model = torch.compile(self.net, backend=COMPILE_BACKEND) if impl.endswith("compiled") else self.net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def step(self, images, labels):
        """One training step; (logits, loss)."""
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        self.optimizer.step()
        if isinstance(self.net, SeedNet):
            self.net.reset()  # the notebook's functional.reset_net after every batch
        return logits, loss


@pytest.fixture(scope="module")
def trainers():
    """One trainer per implementation for the module: the step and the epoch share one compile."""
    cache = {}

    def get(impl):
        if impl not in cache:
            torch._dynamo.reset()
            cache[impl] = Trainer(impl)
        return cache[impl]

    return get


def batch(n, seed=0):
    labels = torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    return randn((n, 3, E2E["image_size"], E2E["image_size"]), torch.float32, seed), labels


def row(impl, phase, seconds, batch=E2E["batch"], **case):
    return dict(
        suite="end_to_end",
        op="train",
        phase=phase,
        impl=impl,
        T=E2E["T"],
        batch=batch,
        dtype="float32",
        surrogate=SURROGATE,
        seconds=seconds,
        **case,
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark, record, trainers, impl):
    trainer = trainers(impl)
    images, labels = batch(E2E["batch"])
    # A step takes 0.2-1 s on a CPU: ten times the kernels' budget buys about ten rounds.
    seconds = median_seconds(benchmark, lambda: trainer.step(images, labels), cpu_seconds=10 * CPU_SECONDS)
    record(row(impl, "step", seconds))


def notebook_epoch(dataset, batch_size: int):
    """The seed notebook's epoch: a DataLoader with 2 workers applying its transforms to each image,
    then per batch the step, the reset, and .item() reads of the loss and the correct answers."""
    dataset = copy.copy(dataset)
    dataset.transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(datalib.CIFAR10_MEAN, datalib.CIFAR10_STD),
        ]
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2)
    trainer = Trainer(SEED)

    def epoch():
        loss_sum = correct = 0
        for images, labels in loader:
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            logits, loss = trainer.step(images, labels)
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()

    return epoch


def train_py_epoch(dataset, batch_size: int, out_dir: str):
    """train.py's fastest epoch: the dataset in device memory, the step compiled with CUDA graphs
    (reduce-overhead), metrics read once at the end; compiled and recorded before it is timed."""
    data = datalib.ImageData(
        dataset, dataset, 3, E2E["image_size"], CLASSES, hflip=True, mean=datalib.CIFAR10_MEAN, std=datalib.CIFAR10_STD
    )
    compiled = "reduce-overhead" if COMPILE_BACKEND == "inductor" else None  # the dry run: eager
    cfg = engine.Config(
        dataset="cifar10",
        batch_size=batch_size,
        T=E2E["T"],
        device=DEVICE,
        compile=compiled,
        data_on_device=True,
        out_dir=out_dir,
    )
    trainer = engine.Trainer(
        replace(cfg, max_steps=3), SURROGATE, data, datalib.splits(data, torch.device(DEVICE), resident=True)
    )
    trainer.train_epoch()  # compiles; CUDA graphs are recorded by the second and third steps
    trainer.cfg = cfg  # then whole epochs
    trainer.next_epoch()
    return trainer.train_epoch


@pytest.fixture(scope="module")
def cifar10_sized():
    """A CIFAR-10-sized training set as torchvision's CIFAR10 holds it (uint8 [N, H, W, 3] and int
    labels), random pixels: both epochs read the same images, with their own transforms."""
    n, size = E2E["epoch_images"], E2E["image_size"]
    rng = np.random.default_rng(0)
    dataset = datasets.CIFAR10.__new__(datasets.CIFAR10)  # no files: the arrays are set below
    datasets.VisionDataset.__init__(dataset, root="")
    dataset.train, dataset.data = True, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    dataset.targets = rng.integers(0, CLASSES, n).tolist()
    return dataset


EPOCH_IMPLS = {SEED: notebook_epoch, FAST: train_py_epoch}


@pytest.mark.skipif(not E2E["epoch_images"], reason="a full epoch is measured on a GPU only")
@pytest.mark.parametrize("batch_size,impl", [(b, impl) for b in E2E["epoch_batches"] for impl in EPOCH_IMPLS])
def test_train_epoch(benchmark, record, cifar10_sized, tmp_path, batch_size, impl):
    """One epoch of the seed experiment over the same images, each code with its own data path."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    make = EPOCH_IMPLS[impl]
    epoch = make(cifar10_sized, batch_size) if impl == SEED else make(cifar10_sized, batch_size, str(tmp_path))
    seconds = []
    # One epoch, timed with CUDA events; pytest-benchmark only runs it (its host clock is unused).
    benchmark.pedantic(lambda: seconds.append(elapsed_seconds(epoch)), rounds=1, iterations=1)
    record(row(impl, "epoch", seconds[0], batch=batch_size, images=E2E["epoch_images"]))
