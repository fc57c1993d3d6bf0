"""End-to-end suite: the seed experiment's training step, the notebook's code against st.BasicCSNN.

One step = forward, cross-entropy, backward, Adam (lr 1e-3), batch 64, T=8, on one batch that
every implementation sees. The seed notebook's network (tests/seed_notebook.py, spikingjelly
0.0.0.0.14 single-step, the whole net called T times, reset after each batch) is the baseline.
On a GPU also a CIFAR-10-sized epoch: 50,000 synthetic 3x32x32 images in batches of 64.
"""
import pytest
import torch
from seed_notebook import SeedNet

import snn_triton as st
from measure import CPU_SECONDS, elapsed_seconds, median_seconds
from peers import COMPILE_BACKEND
from results import BASELINES
from workloads import DEVICE, E2E, randn

SEED = BASELINES["train"]
IMPLS = [SEED, "snn_triton BasicCSNN eager", "snn_triton BasicCSNN compiled"]
CLASSES = 10


class Trainer:
    """A model, its Adam and its training step, as the seed notebook trains."""

    def __init__(self, impl):
        shape = dict(T=E2E["T"], surrogate="sigmoid", image_size=E2E["image_size"])
        self.net = (SeedNet(**shape) if impl == SEED else st.BasicCSNN(**shape)).to(DEVICE)
        self.model = torch.compile(self.net, backend=COMPILE_BACKEND) if impl.endswith("compiled") else self.net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def step(self, images, labels):
        # As train.py does: a partial last batch runs eagerly rather than compiling its shape too.
        model = self.model if len(images) == E2E["batch"] else self.net
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        self.optimizer.step()
        if isinstance(self.net, SeedNet):
            self.net.reset()  # the notebook's functional.reset_net after every batch


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


def row(impl, phase, seconds, **case):
    return dict(suite="end_to_end", op="train", phase=phase, impl=impl, T=E2E["T"], batch=E2E["batch"],
                dtype="float32", seconds=seconds, **case)


@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark, record, trainers, impl):
    trainer = trainers(impl)
    images, labels = batch(E2E["batch"])
    # A step takes 0.2-1 s on a CPU: ten times the kernels' budget buys about ten rounds.
    seconds = median_seconds(benchmark, lambda: trainer.step(images, labels), cpu_seconds=10 * CPU_SECONDS)
    record(row(impl, "step", seconds))


@pytest.mark.skipif(not E2E["epoch_images"], reason="a full epoch is measured on a GPU only")
@pytest.mark.parametrize("impl", [SEED, "snn_triton BasicCSNN compiled"])
def test_train_epoch(benchmark, record, trainers, impl):
    trainer = trainers(impl)
    n, size = E2E["epoch_images"], E2E["batch"]
    images, labels = batch(n, seed=1)
    trainer.step(images[:size], labels[:size])  # compiled before the timed epoch

    def epoch():
        for start in range(0, n, size):
            trainer.step(images[start:start + size], labels[start:start + size])
    seconds = []
    # One epoch, timed with CUDA events; pytest-benchmark only runs it (its host clock is unused).
    benchmark.pedantic(lambda: seconds.append(elapsed_seconds(epoch)), rounds=1, iterations=1)
    record(row(impl, "epoch", seconds[0], images=n))
