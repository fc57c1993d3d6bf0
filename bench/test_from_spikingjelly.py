"""Zoo suite: a training step of a network from spikingjelly's model zoo as spikingjelly runs it,
against the same network converted by ``st.from_spikingjelly``, eager and compiled, on one batch.

SEW-ResNet-18 (IF neurons, ATan, detach_reset, ADD connections), multi-step, T=4, 32x32 images,
10 classes; one step = forward, cross-entropy of the logits averaged over T, backward, Adam (lr
1e-3), ``functional.reset_net``. The baseline is spikingjelly 0.0.0.0.14's torch backend; on a GPU
its cupy backend too (its fastest there). Every implementation starts from the same weights.

Checked before timed (agree.py's protocol): the implementation's weights, whatever its first step
made them, are loaded into a spikingjelly torch-backend copy (the state_dict is the same), and both
take a forward and backward on the timed batch: the logits must be equal (close, for cupy: its
arithmetic is another) and every weight's gradient equal to 1e-4 of its largest entry. The compiled
one is held against spikingjelly's model compiled the same way (see ``check``)."""

import pytest
import torch
from agree import Disagree, close
from measure import CPU_SECONDS, ON_CUDA
from peers import COMPILE_BACKEND, SPIKINGJELLY
from results import BASELINES
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import sew_resnet
from test_kernels import measure_or_skip
from workloads import DEVICE, ZOO, randn

import snn_triton as st

SPIKINGJELLY_TORCH = BASELINES["zoo_train"]
IMPLS = [
    SPIKINGJELLY_TORCH,
    *([f"spikingjelly {SPIKINGJELLY} cupy"] if ON_CUDA else []),
    "snn_triton converted",
    "snn_triton converted compiled",
]
CLASSES = 10


def sew_resnet18(impl: str) -> torch.nn.Module:
    """The zoo's SEW-ResNet-18, multi-step, as `impl` runs it; the same weights for every impl."""
    torch.manual_seed(0)
    net = sew_resnet.sew_resnet18(
        cnf="ADD",
        num_classes=CLASSES,
        spiking_neuron=neuron.IFNode,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )
    functional.set_step_mode(net, "m")
    if impl.endswith("cupy"):
        functional.set_backend(net, "cupy", instance=neuron.IFNode)
    if impl.startswith("snn_triton"):
        st.from_spikingjelly(net)
    return net.to(DEVICE)


class Trainer:
    def __init__(self, impl: str):
        self.net = sew_resnet18(impl)
        self.model = torch.compile(self.net, backend=COMPILE_BACKEND) if impl.endswith("compiled") else self.net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def forward_backward(self, images, labels):
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images).mean(0)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        functional.reset_net(self.net)
        return logits

    def step(self, images, labels):
        self.forward_backward(images, labels)
        self.optimizer.step()


def batch():
    """[T, N, 3, H, W]: the same image at every step, as static images are fed, and the labels."""
    images = randn((ZOO["batch"], 3, ZOO["image_size"], ZOO["image_size"]), torch.float32, seed=0)
    labels = torch.randint(0, CLASSES, (ZOO["batch"],), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    return images.unsqueeze(0).repeat(ZOO["T"], 1, 1, 1, 1), labels


def check(trainer: Trainer, impl: str, images, labels) -> str:
    # A compiled network is checked against spikingjelly's compiled the same way: inductor's convolutions
    # and batch norm round otherwise than eager, a spike flips at a threshold, and 18 layers of IF
    # neurons carry it to the logits (spikingjelly's own model, compiled, is 1.1 off its eager logits).
    baseline = SPIKINGJELLY_TORCH + (" compiled" if impl.endswith("compiled") else "")
    reference = Trainer(baseline)
    reference.net.load_state_dict(trainer.net.state_dict())
    expected = reference.forward_backward(images, labels)
    logits = trainer.forward_backward(images, labels)
    exact = impl == "snn_triton converted"
    if exact and not torch.equal(logits, expected):
        raise Disagree(f"logits differ from {baseline}'s")
    close(logits, expected, None, "logits")
    for (name, theirs), ours in zip(trainer.net.named_parameters(), reference.net.parameters(), strict=True):
        close(theirs.grad, ours.grad, None, f"grad {name}")
    return f"{'logits equal' if exact else 'logits close'}, grads equal {baseline}'s"


@pytest.mark.skipif(not SPIKINGJELLY.startswith("0."), reason="the zoo suite runs beside spikingjelly 0.0.0.0.14")
@pytest.mark.parametrize("impl", IMPLS)
def test_zoo_train_step(benchmark, record, impl):
    images, labels = batch()
    row = dict(
        suite="end_to_end",
        op="zoo_train",
        phase="step",
        impl=impl,
        T=ZOO["T"],
        batch=ZOO["batch"],
        dtype="float32",
        surrogate="atan",
    )
    if impl.endswith("compiled"):  # the converted network is one graph where dynamo traces spikingjelly's own
        torch._dynamo.reset()  # containers (torch 2.11's cannot trace SeqToANNContainer's super().forward)
        theirs = torch._dynamo.explain(sew_resnet18(SPIKINGJELLY_TORCH))(images).graph_break_count
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(sew_resnet18(impl))(images)
        row["graph_breaks"] = explanation.graph_break_count
        if theirs:
            row["graph_breaks_note"] = (
                f"torch {torch.__version__}: spikingjelly's own model breaks the graph {theirs} times"
            )
        assert explanation.graph_break_count <= theirs or explanation.graph_break_count == 0, explanation.break_reasons

    def timed(trainer):
        return lambda: trainer.step(images, labels)

    # A step takes about a second on a CPU: ten times the kernels' budget buys a few rounds.
    measure_or_skip(
        benchmark,
        record,
        row,
        lambda: Trainer(impl),
        timed,
        lambda trainer: check(trainer, impl, images, labels),
        cpu_seconds=10 * CPU_SECONDS,
    )
