"""st.lean and st.from_spikingjelly(lean=True) against the unconverted spikingjelly model: outputs bit for
bit, gradients of inputs, weights and PLIF's w to 1e-9 in float64 (float rounding in float32), running
statistics equal, with the state carried across calls, in training and eval mode and both step modes;
on small instances of spikingjelly's model zoo and on torch-only models given to st.lean. Also what
the rewrites keep for backward (a saved-tensors count), the report, the run-time fallbacks and
torch.compile without graph breaks.

It runs with the spikingjelly importable: 0.0.0.0.14 here, and 2.0.0 in a pytest process of its own
(test_with_spikingjelly_2, as in test_from_spikingjelly.py)."""

import copy
import functools
import importlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    BACKENDS,
    DEVICE,
    NEEDS_SPIKINGJELLY2,
    ONE_VERSION,
    SPIKINGJELLY_VERSION,
    assert_grad_close,
    assert_passes_with_spikingjelly_2,
    covering,
)
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate
from spikingjelly.activation_based.model import parametric_lif_net, sew_resnet, spiking_resnet, spiking_vgg
from test_from_spikingjelly import assert_same, calls, net_input, small_net
from test_lean_backward import saved_bytes as saved_bytes_of
from torch import nn
from torch.nn import functional as F
from user_models import Checked

import snn_triton as st
from snn_triton.compiler import TORCH_VERSION
from snn_triton.lean import (
    LEAN_COMPILED_MIN_TORCH,
    LeanBatchNorm,
    LeanConv,
    LeanLinear,
    LeanMaxPool2d,
    LeanNeuron,
    lean_class,
)
from snn_triton.nn import NeuronLayer

lean_module = importlib.import_module("snn_triton.lean")  # st.lean is the function
AT_LEAST_PASSED_WITH_2 = 188  # the tests of this file that pass under spikingjelly 2.0.0 (kernel cases left out)
REPO = Path(__file__).resolve().parents[1]


def assert_same_training(model, lean, xs):
    expected, expected_grads = calls(model, xs)
    actual, actual_grads = calls(lean, xs)
    assert any(o.abs().sum() > 0 for o in expected), "the test input should reach the output"
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert_grad_close(a.cpu(), e.cpu())
    for a, e in zip(lean.buffers(), model.buffers(), strict=True):  # BatchNorm's running statistics
        assert_same(a, e)


def images(shape, calls=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g, dtype=dtype) * 2.0 for _ in range(calls)]


def lean_copy(model, backend, dtype=torch.float64):
    model = model.to(dtype).to(DEVICE[backend])
    return model, st.from_spikingjelly(copy.deepcopy(model), backend=backend)


def rewrites(model):
    """What the report says was done, by kind."""
    done = {}
    for e in st.lean_report(model).rewritten:
        done[e.rewrite] = done.get(e.rewrite, 0) + 1
    return done


# ---- spikingjelly's zoo, small ----------------------------------------------------------------------


def sew_resnet18(cnf="ADD"):
    return sew_resnet.sew_resnet18(
        cnf=cnf,
        num_classes=10,
        spiking_neuron=neuron.IFNode,
        v_threshold=0.5,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )


def spiking_resnet18():
    return spiking_resnet.spiking_resnet18(
        num_classes=10, spiking_neuron=neuron.LIFNode, v_threshold=0.5, surrogate_function=surrogate.ATan()
    )


def narrow_classifier(vgg):
    """The classifier's two 4096-wide Linear layers narrowed to 16 (hundreds of MB in float64)."""
    vgg.classifier[0], vgg.classifier[3], vgg.classifier[6] = (
        layer.Linear(512 * 7 * 7, 16),
        layer.Linear(16, 16),
        layer.Linear(16, 10),
    )
    return vgg


def spiking_vgg_bn():
    return narrow_classifier(
        spiking_vgg.SpikingVGG(
            [8, "M", 512],
            batch_norm=True,
            num_classes=10,
            spiking_neuron=neuron.LIFNode,
            tau=1.5,
            v_threshold=0.2,
            surrogate_function=surrogate.ATan(),
        )
    )


def spiking_vgg_plain():
    return narrow_classifier(
        spiking_vgg.SpikingVGG(
            [8, "M", 8, "M", 512],
            batch_norm=False,
            num_classes=10,
            spiking_neuron=neuron.LIFNode,
            v_threshold=0.05,
            surrogate_function=surrogate.ATan(),
        )
    )


def plif_cifar10():
    return parametric_lif_net.CIFAR10Net(
        channels=2,
        spiking_neuron=neuron.ParametricLIFNode,
        init_tau=3.0,
        decay_input=False,
        v_reset=None,
        v_threshold=0.5,
        surrogate_function=surrogate.Sigmoid(),
    )


def lif_fashion():
    return parametric_lif_net.FashionMNISTNet(
        channels=2, spiking_neuron=neuron.LIFNode, v_threshold=0.2, surrogate_function=surrogate.Sigmoid()
    )


DROPPED = "input kept as bits and a scale"  # a Linear after a Dropout of spikes
# model, one call's input [T, N, C, H, W], and the rewrites it must get
ZOO = {
    "sew_resnet18": (
        sew_resnet18,
        (2, 2, 3, 16, 16),
        {"keeps no float tensor": 20, "input kept as uint8": 10, "fused into the neuron": 1},
    ),
    "sew_resnet18_iand": (  # spikes * (1 - spikes) between blocks: spikes again, kept as bits
        functools.partial(sew_resnet18, "IAND"),
        (2, 2, 3, 16, 16),
        {"keeps no float tensor": 20, "fused into the neuron": 1, "input kept as bits": 19},
    ),
    "spiking_resnet18": (
        spiking_resnet18,
        (2, 2, 3, 16, 16),
        {"keeps no float tensor": 9, "fused into the neuron": 1, "input kept as bits": 19},
    ),
    "spiking_vgg_bn": (
        spiking_vgg_bn,
        (2, 2, 3, 4, 4),
        {"keeps no float tensor": 2, "fused into the neuron": 1, "input kept as bits": 1, DROPPED: 2},
    ),
    "spiking_vgg": (
        spiking_vgg_plain,
        (2, 2, 3, 8, 8),
        {"bits kept, no indices": 2, "input kept as bits": 2, DROPPED: 2},
    ),
    "plif_cifar10": (
        plif_cifar10,
        (2, 2, 3, 32, 32),
        {"keeps no float tensor": 6, "fused into the neuron": 2, "input kept as bits": 5, DROPPED: 2},
    ),
    "lif_fashion": (
        lif_fashion,
        (2, 2, 1, 28, 28),
        {"keeps no float tensor": 2, "fused into the neuron": 2, "input kept as bits": 1, DROPPED: 2},
    ),
}


def zoo_model(name, step_mode="m"):
    make, shape, _ = ZOO[name]
    torch.manual_seed(0)
    model = make()
    functional.set_step_mode(model, step_mode)
    return model, shape


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_train_as_in_spikingjelly(name):
    """Multi-step, training mode, float64, two calls with the state carried: outputs bit for bit,
    gradients to 1e-9, running statistics equal; the rewrites each model must get were made."""
    model, shape = zoo_model(name)
    model, lean = lean_copy(model, "torch")
    expected = {k: v for k, v in ZOO[name][2].items()}
    done = rewrites(lean)
    assert {k: done.get(k, 0) for k in expected} == expected, str(st.lean_report(lean))
    assert_same_training(model, lean, images(shape))


# 8x8 images: SEW-ResNet's 3x3/2 pool (padding 1) gets a 4x4 map, all of whose windows but one reach
# the padding; its backward kernel is the interpreter's slowest, a quarter of the 16x16 cost.
FLOAT32_SHAPES = {"sew_resnet18": (2, 2, 3, 8, 8)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["sew_resnet18", "plif_cifar10"])
def test_zoo_models_in_float32(backend, name):
    """float32: the same logits, gradients to float rounding; both backends (kernels: interpreter or GPU).
    PLIF's dL/dw, one sum over every neuron and step, is summed in another order by the kernels than by
    spikingjelly (1e-4 apart here, with or without lean): it is held to the neuron-only conversion's
    bit for bit, and to spikingjelly's to 1e-4."""
    model, shape = zoo_model(name)
    shape = FLOAT32_SHAPES.get(name, shape)
    model, lean = lean_copy(model, backend, torch.float32)
    xs = [x.to(DEVICE[backend]) for x in images(shape, dtype=torch.float32)]
    neurons_only = st.from_spikingjelly(copy.deepcopy(model), backend=backend, lean=False)
    expected, expected_grads = calls(model, xs)
    actual, actual_grads = calls(lean, xs)
    _, neuron_grads = calls(neurons_only, xs)
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)
    for a, e, n in zip(actual_grads, expected_grads, neuron_grads, strict=True):
        if a.numel() == 1:
            assert_same(a, n)
            torch.testing.assert_close(a, e, rtol=1e-4, atol=0)
        else:
            assert_grad_close(a.cpu(), e.cpu())


def conv_bn_neuron(c_in, c_out):
    return layer.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer.BatchNorm2d(c_out), neuron.IFNode(v_threshold=0.3)


class SewAdd(nn.Module):
    """SEW-ResNet's ADD block, small: its sum of spikes (0, 1 or 2) is kept as uint8 by the conv after it."""

    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(*conv_bn_neuron(c, c))

    def forward(self, x):
        return self.block(x) + x


def multi_step(model):
    functional.set_step_mode(model, "m")
    return model


HALF_MODELS = {  # each rewrite with a half type in it: the neuron's pooling, BN's pooling, the uint8 store
    "lif_fashion": lambda: zoo_model("lif_fashion"),
    "pooled_batch_norms": lambda: (multi_step(pooled_batch_norms(False)), (2, 2, 2, 16, 16)),
    "sew_block": lambda: (
        multi_step(nn.Sequential(*conv_bn_neuron(2, 4), SewAdd(4), layer.Conv2d(4, 3, 3))),
        (2, 2, 2, 8, 8),
    ),
}


# the reference in each half type; the kernels (the interpreter's slowest cases here) under autocast
HALF_CASES = [("torch", half) for half in ("autocast", "bfloat16", "float16")] + [("triton", "autocast")]


@pytest.mark.parametrize(
    "backend, half",
    HALF_CASES,
    ids=[f"{half}-{'kernels' if backend == 'triton' else 'reference'}" for backend, half in HALF_CASES],
)
@pytest.mark.parametrize("name", HALF_MODELS)
def test_lean_models_in_half_types_compute_what_the_neurons_alone_do(name, half, backend):
    """Under bfloat16 autocast (convolutions and BatchNorm in bfloat16, the neurons computing in float32
    inside) and as bfloat16 or float16 models: the lean model gives the neuron-only conversion's outputs
    bit for bit and its gradients to the rounding of the gradients' dtype, with the state carried. (In a
    half type the neurons compute in float32, spikingjelly's in the half type: near the threshold the
    spikes of the two may differ, so the neuron-only conversion is the reference here.)"""
    model, shape = HALF_MODELS[name]()
    dtype = torch.float32 if half == "autocast" else getattr(torch, half)
    model = model.to(dtype).to(DEVICE[backend])
    neurons_only = st.from_spikingjelly(copy.deepcopy(model), backend=backend, lean=False)
    lean = st.from_spikingjelly(copy.deepcopy(model), backend=backend)
    assert len(rewrites(lean)) >= 3, str(st.lean_report(lean))
    xs = [x.to(DEVICE[backend]) for x in images(shape, dtype=dtype)]
    with torch.autocast(DEVICE[backend], dtype=torch.bfloat16, enabled=half == "autocast"):
        expected, expected_grads = calls(neurons_only, xs)
        actual, actual_grads = calls(lean, xs)
    assert any(o.abs().sum() > 0 for o in expected), "the test input should reach the output"
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)
    for a, e in zip(actual_grads, expected_grads, strict=True):  # autocast: the weights' in bfloat16
        assert_grad_close(a.cpu(), e.cpu(), torch.bfloat16 if half == "autocast" else None)


def test_zoo_model_on_the_kernels_in_float64():
    """The kernels (interpreter or GPU) in float64: FashionMNISTNet's two neurons with their 2x2 pools
    fused (the pooling and its routing by the pool kernels) and its Linear after a Dropout of spikes
    (the scaled store's kernels) against the unconverted spikingjelly model: outputs bit for bit,
    gradients to 1e-9, with the state carried across calls."""
    model, shape = zoo_model("lif_fashion")
    model, lean = lean_copy(model, "triton")
    assert rewrites(lean)["fused into the neuron"] == 2 and rewrites(lean)[DROPPED] == 2
    assert_same_training(model, lean, [x.to(DEVICE["triton"]) for x in images(shape)])


@pytest.mark.parametrize("name", ["spiking_vgg_bn", "plif_cifar10"])
def test_zoo_models_in_eval_mode(name):
    """Eval mode: BatchNorm's running statistics (made such that layers fire), the neurons' eval-mode
    charge, two calls with the state carried: outputs bit for bit."""
    model, shape = zoo_model(name)
    g = torch.Generator().manual_seed(3)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=g) * 0.5)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) * 0.05 + 0.01)
    model.eval()
    model, lean = lean_copy(model, "torch")
    assert not lean.training
    fired = []
    for node in model.modules():
        if isinstance(node, neuron.BaseNode):
            node.register_forward_hook(lambda module, inputs, spikes: fired.append(bool(spikes.any())))
    with torch.no_grad():  # spikingjelly's eval-mode neurons have no surrogate gradient
        for x in images(shape):
            assert_same(lean(x), model(x))
    assert any(fired)
    for a, e in zip(lean.buffers(), model.buffers(), strict=True):
        assert_same(a, e)


def zoo_of_2(name):
    """spikingjelly 2.x's transformers and MS-ResNets, small: LIF neurons with ATan (the papers')."""
    from spikingjelly.activation_based.model import maxformer, ms_resnet, qkformer, spike_driven_transformer, spikformer

    kw = dict(spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan(), T=2, num_classes=3)
    return {
        "spikformer": lambda: spikformer.Spikformer(
            img_size_h=16, img_size_w=16, patch_size=4, embed_dims=16, num_heads=2, depths=1, **kw
        ),
        "spike_driven_transformer": lambda: spike_driven_transformer.SpikeDrivenTransformer(
            embed_dims=16, num_heads=2, depths=1, **kw
        ),
        "qkformer": lambda: qkformer.QKFormer(embed_dims=16, num_heads=(1, 2, 2), depths=(1, 1, 1), **kw),
        "maxformer": lambda: maxformer.MaxFormer(embed_dims=16, depths=(1, 1, 1), cifar=True, **kw),
        "ms_resnet": lambda: ms_resnet.MSResNet(layers=(1, 1, 1), base_channels=4, **kw),
    }[name]()


ZOO_OF_2 = {  # name: (input of one call [N, C, H, W], repeated T times inside; rewrites at least)
    "spikformer": ((2, 3, 16, 16), {"keeps no float tensor": 9, "keeps nothing": 2, "input kept as bits": 6}),
    "spike_driven_transformer": (
        (2, 3, 32, 32),
        {"keeps no float tensor": 8, "keeps nothing": 1, "fused into the neuron": 3, "input kept as bits": 10},
    ),
    "qkformer": ((2, 3, 32, 32), {"keeps no float tensor": 22, "keeps nothing": 4, "input kept as uint8": 10}),
    "maxformer": ((2, 3, 32, 32), {"keeps no float tensor": 8, "keeps nothing": 4, "input kept as bits": 17}),
    "ms_resnet": ((2, 3, 16, 16), {"keeps no float tensor": 4, "input kept as bits": 6}),
}


@pytest.mark.skipif(not SPIKINGJELLY_VERSION.startswith("2"), reason="spikingjelly 2.x's zoo: test_with_spikingjelly_2")
@pytest.mark.parametrize("name", ZOO_OF_2)
def test_transformers_of_spikingjelly_2_train_as_before(name):
    """spikingjelly 2.0.0's own Spikformer, Spike-driven Transformer, QKFormer, Max-Former and MS-ResNet
    (small), float64, two calls with the state carried: outputs bit for bit, gradients to 1e-9, running
    statistics equal; at least the rewrites listed were made."""
    torch.manual_seed(0)
    model = zoo_of_2(name).double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    shape, expected = ZOO_OF_2[name]
    done = rewrites(lean)
    assert all(done.get(k, 0) >= n for k, n in expected.items()), str(st.lean_report(lean))
    assert_same_training(model, lean, images(shape))


@pytest.mark.parametrize("name", ["sew_resnet18", "lif_fashion"])
def test_zoo_models_in_single_step_mode(name):
    """Single-step mode, the model called once a step (as spikingjelly's tutorials run it), the state
    carried across steps and then across a reset_net."""
    model, shape = zoo_model(name, "s")
    model, lean = lean_copy(model, "torch")
    assert rewrites(lean).get("keeps no float tensor", 0) >= 2
    steps = images(shape[1:], calls=3)
    assert_same_training(model, lean, steps)
    for m in (model, lean):
        functional.reset_net(m)
    assert_same_training(model, lean, steps[:2])


# Every neuron form a lean block recomputes: IF, and (P)LIF with decay_input or not, each with every
# reset (hard, nonzero-hard, soft): so each charge form of PLIF's leak gradient, decay_input's,
# decay_potential's (nonzero v_reset) and scaled (v_reset 0 or soft); the reset detached or not.
BLOCK_NEURONS = covering(
    neuron=[("if", True), ("lif", True), ("lif", False), ("plif", True), ("plif", False)],
    v_reset=[0.0, -0.2, None],
    detach_reset=[False, True],
)


@pytest.mark.parametrize("case", BLOCK_NEURONS, ids=lambda c: f"{c[0][0]}-{c[0][1]}-{c[1]}-{c[2]}")
def test_every_neuron_form_in_a_lean_block(case):
    """A conv BN neuron pool Linear neuron model of each neuron form in float64, the state carried across
    calls: outputs bit for bit, gradients (PLIF's w too) to 1e-9; the block's neuron keeps no float tensor
    and makes the pooling."""
    (kind, decay_input), v_reset, detach_reset = case
    settings = dict(v_threshold=0.3, v_reset=v_reset, detach_reset=detach_reset, surrogate_function=surrogate.ATan())
    if kind != "if":
        settings.update(decay_input=decay_input, **({"init_tau": 1.7} if kind == "plif" else {"tau": 1.7}))
    node = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}[kind]
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1),
        layer.BatchNorm2d(4),
        node(**settings),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(4 * 4 * 4, 5),
        node(**settings),
    )
    functional.set_step_mode(model, "m")
    model, lean = lean_copy(model, "torch")
    assert rewrites(lean)["keeps no float tensor"] == 1 and rewrites(lean)["fused into the neuron"] == 1
    assert_same_training(model, lean, images((3, 2, 2, 8, 8), calls=3))


def pooled_batch_norms(wrapped: bool) -> nn.Sequential:
    """conv BN, max pooling, neuron (as Spikformer's stem): twice, the second pooling 3x3/2/1 and its
    neuron's spikes pooled again; in SeqToANNContainers (wrapped) or spikingjelly's layers."""
    if wrapped:
        return nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2)),
            neuron.IFNode(v_threshold=0.3),
            layer.SeqToANNContainer(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2, ceil_mode=True)),
            layer.Conv2d(4, 3, 1),  # fed a pooled BatchNorm output: left
            neuron.LIFNode(),
            layer.Flatten(),
            layer.Linear(3 * 5 * 5, 3),
        )
    return nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),
        layer.MaxPool2d(2),
        neuron.LIFNode(v_threshold=0.3),
        layer.Conv2d(4, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),
        layer.MaxPool2d(3, 2, 1),
        neuron.ParametricLIFNode(v_threshold=0.3, v_reset=None),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(4 * 2 * 2, 3),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wrapped, step_mode", [(False, "m"), (False, "s"), (True, "m")])
def test_max_pooling_of_a_batch_norm_keeps_nothing(wrapped, step_mode, backend):
    """BatchNorm, MaxPool2d, neuron: the pooling keeps neither its input nor its indices (backward pools
    BatchNorm's output again, from the input BatchNorm keeps) and the neuron keeps no float tensor (it
    recomputes its input the same way); float64, three calls with the state carried, outputs bit for bit,
    gradients to 1e-9, then eval mode."""
    torch.manual_seed(0)
    model = pooled_batch_norms(wrapped).double()
    functional.set_step_mode(model, step_mode)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    model, lean = lean_copy(model, backend)
    done = rewrites(lean)
    assert done["keeps nothing"] == 2 and done["hands its input to the pool"] == 2, str(st.lean_report(lean))
    assert done["keeps no float tensor"] == (1 if wrapped else 2), str(st.lean_report(lean))
    shape = (3, 2, 2, 16 if not wrapped else 20, 16 if not wrapped else 20)
    xs = [x.to(DEVICE[backend]) for x in images(shape if step_mode == "m" else shape[1:], calls=3)]
    assert_same_training(model, lean, xs)
    if wrapped:  # the pool that feeds a conv hands nothing on, so it holds nothing after the step
        assert lean[2][2].lean_stash is None
    for m in (model, lean):
        functional.reset_net(m)
        m.eval()
    with torch.no_grad():
        for x in xs:
            assert_same(lean(x), model(x))
    if not wrapped:  # what conv, BN and the pooling keep: what conv and BN keep
        lean.train()
        x, parameters = xs[0].requires_grad_(), list(lean.parameters())
        assert saved_bytes_of(lean[:3], parameters, x) == saved_bytes_of(lean[:2], parameters, x) > 0


# ---- random models: what a user might build from spikingjelly's layers -----------------------------


def random_neuron(r: random.Random):
    """An IF, LIF or PLIF node of random settings (reset, charge form, surrogate)."""
    kind = r.choice([neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode])
    settings = dict(
        v_threshold=r.choice([0.2, 0.3, 0.5]),
        v_reset=r.choice([0.0, -0.1, None]),
        detach_reset=r.random() < 0.3,
        surrogate_function=r.choice([surrogate.ATan(alpha=r.choice([2.0, 3.0])), surrogate.Sigmoid(alpha=2.5)]),
    )
    if kind is neuron.LIFNode:
        settings.update(tau=r.choice([1.5, 2.0, 3.0]), decay_input=r.random() < 0.7)
    elif kind is neuron.ParametricLIFNode:
        settings.update(init_tau=r.choice([1.5, 2.0, 3.0]), decay_input=r.random() < 0.7)
    return kind(**settings)


class RandomResidual(nn.Module):
    """conv BN neuron, joined to its input by SEW's ADD, IAND or AND."""

    def __init__(self, c: int, r: random.Random, wrapped: bool):
        super().__init__()
        if wrapped:
            self.conv = layer.SeqToANNContainer(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        else:
            self.conv = nn.Sequential(layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c))
        self.sn, self.cnf = random_neuron(r), r.choice(["ADD", "IAND", "AND"])

    def forward(self, x):
        s = self.sn(self.conv(x))
        return s + x if self.cnf == "ADD" else s * (1.0 - x) if self.cnf == "IAND" else s * x


def random_model(seed: int, step_mode: str = "m") -> nn.Sequential:
    """One to three blocks of conv (BN, maybe a max pooling) neuron, each maybe followed by a pooling (max
    2x2 or 3x3/2/1, a ceil_mode or average one, which are left), a Dropout and a residual block; then Flatten, maybe
    Linear neuron (Dropout), and Linear, maybe a neuron. Input [T, N, 2, 12, 12] (multi-step; torch
    layers wrapped in SeqToANNContainer among them) or [N, 2, 12, 12]."""
    r = random.Random(seed)
    wrap = lambda: step_mode == "m" and r.random() < 0.3  # noqa: E731 (SeqToANNContainer: multi-step only)
    torch.manual_seed(seed)
    modules, c, side = [], 2, 12
    for _ in range(r.randint(1, 3)):
        out, k = r.choice([3, 4, 6]), r.choice([1, 3])
        stride, bn = (r.choice([1, 2]) if side > 4 else 1), r.random() < 0.7
        conv = nn.Conv2d if wrap() else layer.Conv2d
        conv = conv(c, out, k, stride=stride, padding=k // 2, bias=not bn and r.random() < 0.5)
        modules.append(conv if isinstance(conv, layer.Conv2d) else layer.SeqToANNContainer(conv))
        c, side = out, (side - 1) // stride + 1
        if bn:
            modules.append(layer.BatchNorm2d(c, affine=r.random() < 0.8, track_running_stats=r.random() < 0.8))
        pools = lambda: [(layer.MaxPool2d(2), side // 2), (layer.MaxPool2d(3, 2, 1), (side - 1) // 2 + 1)]  # noqa: E731
        if bn and side >= 6 and r.random() < 0.25:  # BN, max pooling, neuron
            pool, side = r.choice(pools())
            modules.append(pool)
        modules.append(random_neuron(r))
        more = [(layer.AvgPool2d(2), side // 2), (layer.MaxPool2d(2, ceil_mode=True), -(-side // 2))]
        if side >= 3 and r.random() < 0.6:
            pool, side = r.choice(pools() + more)
            modules.append(pool)
        if r.random() < 0.2:
            modules.append(layer.Dropout(0.3))
        if r.random() < 0.4:
            modules.append(RandomResidual(c, r, wrap()))
    modules.append(layer.Flatten())
    features = c * side * side
    if r.random() < 0.5:
        modules += [layer.Linear(features, 7), random_neuron(r)] + ([layer.Dropout(0.5)] if r.random() < 0.3 else [])
        features = 7
    modules.append(layer.Linear(features, 3))
    model = nn.Sequential(*modules, *([random_neuron(r)] if r.random() < 0.5 else []))
    with torch.no_grad():  # weights 3x torch's default: spikes in every layer, so gradients reach the input
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    return model


RANDOM_MODELS = range(24)


@pytest.mark.parametrize("seed", RANDOM_MODELS)
def test_random_spikingjelly_models(seed):
    """Random models of spikingjelly's layers (random_model), float64, three calls with the state carried:
    outputs bit for bit; in training, in multi-step or single-step mode, gradients to 1e-9 and the running
    statistics equal; in eval mode (where spikingjelly's neurons give no gradient) the outputs."""
    step_mode, training = [("m", True), ("s", True), ("m", False)][seed % 3]
    model = random_model(seed, step_mode).double()
    functional.set_step_mode(model, step_mode)
    if not training:
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None:
                bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 1.5)
        model.eval()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    T = random.Random(seed).choice([1, 2, 4])
    xs = images((T, 2, 2, 12, 12) if step_mode == "m" else (2, 2, 12, 12), calls=3, seed=seed)
    if training:
        assert_same_training(model, lean, xs)
        return
    with torch.no_grad():
        expected, actual = [model(x) for x in xs], [lean(x) for x in xs]
    assert any(o.abs().sum() > 0 for o in expected), "the test input should reach the output"
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)


# Selections of spikes that keep their [T, N, C, 8, 8] shape (some reorder them, one sums them).
SHAPE_KEEPING_SELECTIONS = {
    "flip": lambda s: s.flip(-1),
    "roll": lambda s: s.roll(1, -2),
    "halves swapped": lambda s: torch.cat([s[..., 4:], s[..., :4]], -1),
    "transpose": lambda s: s.transpose(-1, -2),
    "padded and cropped": lambda s: F.pad(s, (1, 1, 1, 1))[..., 1:-1, 1:-1],
    "clone": lambda s: s.clone(),
    "channels stacked": lambda s: torch.stack([s[:, :, :2], s[:, :, 2:]], 2).flatten(2, 3),
    "sum with its flip": lambda s: s + s.flip(-1),
    "itself": lambda s: s,
}


class SelectedBlock(nn.Module):
    """conv BN random neuron, a selection of its spikes, maybe a max pooling."""

    def __init__(self, r: random.Random, c: int, selection: str, pool: bool):
        super().__init__()
        self.conv, self.bn = layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c)
        self.sn, self.selection = random_neuron(r), selection
        self.pool = layer.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x):
        return self.pool(SHAPE_KEEPING_SELECTIONS[self.selection](self.sn(self.bn(self.conv(x)))))


@pytest.mark.parametrize("seed", range(6))
def test_random_models_with_selections_of_spikes(seed):
    """A conv, then three blocks of conv BN random neuron, a selection of the spikes and maybe a max pooling
    (over the seeds, each selection with and without one), then Flatten and Linear: float64, two calls with
    the state carried, training as before."""
    r = random.Random(seed)
    torch.manual_seed(seed)
    names = list(SHAPE_KEEPING_SELECTIONS)
    blocks = [SelectedBlock(r, 4, names[(3 * seed + k) % len(names)], (seed + k) % 2 == 0) for k in range(3)]
    size = 8 // 2 ** sum(isinstance(b.pool, layer.MaxPool2d) for b in blocks)
    model = multi_step(
        nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), *blocks, layer.Flatten(), layer.Linear(4 * size**2, 3))
    )
    model = model.double()
    with torch.no_grad():
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.mul_(3.0)
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert "input kept as bits" in rewrites(lean) or "input kept as uint8" in rewrites(lean), str(st.lean_report(lean))
    assert_same_training(model, lean, images((3, 2, 2, 8, 8), seed=seed))


def test_random_models_get_every_rewrite():
    """The random models above meet every rewrite, and leave what is not one."""
    done, left = set(), set()
    for seed in RANDOM_MODELS:
        lean = st.from_spikingjelly(random_model(seed))
        done |= {e.rewrite for e in st.lean_report(lean).rewritten}
        left |= {e.layer for e in st.lean_report(lean).left}
    assert done == {
        "keeps no float tensor",
        "hands its input to the neuron",
        "hands its input to the pool",
        "keeps nothing",
        "fused into the neuron",
        "input kept as bits",
        "input kept as uint8",
        "bits kept, no indices",
        DROPPED,
    }
    assert {"Conv2d", "Linear"} <= left  # fed floats: the first conv, and a Linear after an average pool


def saved_bytes(model, x):
    """What autograd keeps in one forward: each storage once, parameters and buffers excluded."""
    return saved_bytes_of(model, [*model.parameters(), *model.buffers()], x)


THIRD = {
    "sew_resnet18": (
        lambda: sew_resnet.sew_resnet18(
            cnf="ADD", num_classes=10, spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan()
        ),
        (2, 2, 3, 32, 32),
    ),
    "plif_cifar10": (
        lambda: parametric_lif_net.CIFAR10Net(
            channels=16, spiking_neuron=neuron.ParametricLIFNode, surrogate_function=surrogate.ATan()
        ),
        (2, 2, 3, 32, 32),
    ),
    "lif_fashion": (
        lambda: parametric_lif_net.FashionMNISTNet(
            channels=16, spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.Sigmoid()
        ),
        (2, 2, 1, 28, 28),
    ),
}


@pytest.mark.parametrize("name", THIRD)
def test_lean_keeps_a_third_or_less(name):
    """The saved bytes of one training forward, float32 (the zoo's layer widths, or 16 channels):
    lean=True at most a third of the unconverted model's, and below the neuron-only conversion's."""
    make, shape = THIRD[name]
    torch.manual_seed(0)
    model = make()
    functional.set_step_mode(model, "m")
    lean = st.from_spikingjelly(copy.deepcopy(model))
    x = images(shape, calls=1, dtype=torch.float32)[0]
    neurons_only = st.from_spikingjelly(copy.deepcopy(model), lean=False)
    sizes = [saved_bytes(m, x) for m in (model, neurons_only, lean)]
    assert sizes[2] * 3 <= sizes[0] and sizes[2] < sizes[1], sizes


def test_lean_false_converts_the_neurons_only():
    model, _ = zoo_model("plif_cifar10")
    converted = st.from_spikingjelly(model, lean=False)
    assert not any(
        isinstance(m, (LeanConv, LeanLinear, LeanMaxPool2d, LeanBatchNorm, LeanNeuron)) for m in converted.modules()
    )
    with pytest.raises(ValueError, match="not given to st.lean"):
        st.lean_report(converted)
    with pytest.raises(TypeError, match="lean must be a bool"):
        st.from_spikingjelly(model, lean="yes")


# ---- st.lean on torch layers and our neurons --------------------------------------------------------


class Residual(nn.Module):
    """A SEW block in torch layers: spikes + its input (spikes, or sums of them) feed the next layer."""

    def __init__(self, c, neuron):
        super().__init__()
        self.conv, self.bn, self.sn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), neuron()

    def forward(self, x_seq):  # [T, N, C, H, W] of spikes (or sums of them)
        y = self.bn(self.conv(x_seq.flatten(0, 1))).unflatten(0, x_seq.shape[:2])
        return self.sn(y) + x_seq


class TorchNet(nn.Module):
    """Conv BN neuron pool(k, s, p), two residual blocks, and a head of Flatten, Linear, neuron, Linear."""

    def __init__(self, neuron, pool):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.sn, self.pool = neuron(), pool
        self.blocks = nn.Sequential(Residual(4, neuron), Residual(4, neuron))
        self.head = nn.Sequential(nn.Flatten(2), nn.Linear(4 * 16, 8), neuron(), nn.Linear(8, 3))

    def forward(self, x_seq):
        T, N = x_seq.shape[:2]
        s = self.sn(self.stem(x_seq.flatten(0, 1)).unflatten(0, (T, N)))
        p = self.pool(s.flatten(0, 1)).unflatten(0, (T, N))
        return self.head(self.blocks(p).flatten(0, 1).unflatten(0, (T, N)))


NEURONS = {
    "lif": lambda: st.LIF(tau=1.7, v_threshold=0.4, stateful=True),
    "if-soft": lambda: st.IF(v_threshold=0.6, v_reset=None, detach_reset=True),
    "plif": lambda: st.PLIF(init_tau=2.5, v_threshold=0.3, stateful=True, surrogate="atan"),
}
POOLS = {
    "k2s2": dict(kernel_size=2),
    "k3s2p1": dict(kernel_size=3, stride=2, padding=1),
    "k3s1": dict(kernel_size=3, stride=1),
    "k2s1p1": dict(kernel_size=2, stride=1, padding=1),
}


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kind", NEURONS)
def test_lean_torch_model(kind, pool):
    """st.lean on torch layers + st.LIF/IF/PLIF (stateful or not), pools of several windows: outputs bit
    for bit, gradients to 1e-9, running statistics equal, three calls."""
    torch.manual_seed(0)
    pool_layer = nn.MaxPool2d(**POOLS[pool])
    side = nn.functional.max_pool2d(torch.zeros(1, 8, 8), **POOLS[pool]).shape[-1]
    model = TorchNet(NEURONS[kind], pool_layer)
    model.head[1] = nn.Linear(4 * side * side, 8)
    model = model.double()
    lean = st.lean(copy.deepcopy(model))
    assert lean is not model and isinstance(lean, TorchNet)
    done = rewrites(lean)
    assert done == {
        "keeps no float tensor": 3,
        "hands its input to the neuron": 3,
        "fused into the neuron": 1,
        "input kept as bits": 2,
        "input kept as uint8": 2,
    }, str(st.lean_report(lean))
    xs = [
        torch.rand(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(k), dtype=torch.float64) * 3 for k in range(3)
    ]
    assert_same_training(model, lean, xs)
    assert lean.state_dict().keys() == model.state_dict().keys()


class RateTerm(nn.Module):
    """Conv BN neuron pool Linear, the neuron's spikes also used directly (a firing-rate term added to
    the output), as a user's hook or regularizer would use them."""

    def __init__(self, neuron, pool):
        super().__init__()
        self.conv, self.bn, self.sn, self.pool = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), neuron(), pool
        side = nn.functional.max_pool2d(torch.zeros(1, 8, 8), pool.kernel_size, pool.stride, pool.padding).shape[-1]
        self.fc = nn.Linear(4 * side * side, 3)

    def forward(self, x_seq):
        T, N = x_seq.shape[:2]
        s = self.sn(self.bn(self.conv(x_seq.flatten(0, 1))).unflatten(0, (T, N)))
        p = self.pool(s.flatten(0, 1)).unflatten(0, (T, N))
        return self.fc(p.flatten(2)) + s.mean((2, 3, 4))[..., None]


@pytest.mark.parametrize("pool", ["k2s2", "k3s2p1"])
@pytest.mark.parametrize("kind", NEURONS)
def test_fused_pool_keeps_the_neurons_own_output(kind, pool):
    """The neuron that makes its pool's pooling still returns its spikes, with their gradient: a term
    on them and the pooling both reach the loss (the two gradients summed), three calls, state carried."""
    torch.manual_seed(0)
    model = RateTerm(NEURONS[kind], nn.MaxPool2d(**POOLS[pool])).double()
    lean = st.lean(copy.deepcopy(model))
    assert rewrites(lean).get("fused into the neuron") == 1, str(st.lean_report(lean))
    xs = [
        torch.rand(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(k), dtype=torch.float64) * 3 for k in range(3)
    ]
    assert_same_training(model, lean, xs)


@pytest.mark.parametrize("name", ["plif_cifar10", "sew_resnet18"])
def test_zoo_models_with_cpu_blocks_of_a_few_samples(name, monkeypatch):
    """The recomputing neurons' backward runs block by block of samples on a CPU (H rebuilt, pooling
    routed and the scan's backward run per block): with blocks of one sample, still spikingjelly's
    outputs and gradients (PLIF's dL/dw summed over the blocks)."""
    from snn_triton import cpu_blocks, reference

    model, shape = zoo_model(name)
    model, lean = lean_copy(model, "torch")
    routed = []
    route = reference.route_to_max
    monkeypatch.setattr(reference, "route_to_max", lambda g, *a: routed.append(g.shape[1]) or route(g, *a))
    monkeypatch.setattr(cpu_blocks, "CACHE_BLOCK", 1)  # one sample a block
    assert_same_training(model, lean, images(shape, calls=1))
    pools = rewrites(lean)["fused into the neuron"]
    assert routed == [1] * pools * shape[1], "each fused pool's gradient routed block by block"


def test_fused_pool_given_other_input_pools_it_itself():
    """The pool's input is not its neuron's last output (called on its own): it pools that input, as
    the lean pool does, and the neuron's stash is not used."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), st.LIF(v_threshold=0.2), nn.MaxPool2d(2)).double()
    lean = st.lean(copy.deepcopy(model))
    assert rewrites(lean).get("fused into the neuron") == 1
    lean(torch.rand(3, 1, 8, 8, dtype=torch.float64) * 3)  # leaves nothing behind: the pool used the stash
    lean[0:3](torch.rand(3, 1, 8, 8, dtype=torch.float64) * 3)  # a stash the pool does not get
    x = (torch.rand(2, 2, 6, 6, dtype=torch.float64) > 0.5).double().requires_grad_()
    expected = torch.autograd.grad(model[3](x).sum(), x)[0]
    assert torch.equal(torch.autograd.grad(lean[3](x).sum(), x)[0], expected)
    assert torch.equal(lean[3](x), model[3](x))


def conv_net(dims: int) -> nn.Sequential:
    """spikingjelly's Conv1d (sequences, as audio models have) or Conv3d: conv BN LIF, conv IF, Linear."""
    conv, bn = {1: (layer.Conv1d, layer.BatchNorm1d), 3: (layer.Conv3d, layer.BatchNorm3d)}[dims]
    side = {1: 10, 3: 4}[dims] ** dims
    return nn.Sequential(
        conv(2, 4, 3, padding=1, bias=False),
        bn(4),
        neuron.LIFNode(v_threshold=0.3),
        conv(4, 3, 3, stride=1, padding=1),
        neuron.IFNode(v_threshold=0.2, v_reset=None),
        layer.Flatten(),
        layer.Linear(3 * side, 5),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d_fed_spikes_keep_bits(dims, backend):
    """Conv1d and Conv3d fed spikes keep them as bits, as Conv2d does: float64, multi-step, two calls
    with the state carried, outputs bit for bit and gradients to 1e-9 against the unconverted model;
    the conv keeps about 1/64 of its float64 input."""
    torch.manual_seed(0)
    model = conv_net(dims).double()
    functional.set_step_mode(model, "m")
    model, lean = lean_copy(model, backend)
    assert rewrites(lean) == {"hands its input to the neuron": 1, "keeps no float tensor": 1, "input kept as bits": 2}
    shape = (3, 2, 2) + ((10,) if dims == 1 else (4, 4, 4))
    assert_same_training(model, lean, [x.to(DEVICE[backend]) for x in images(shape)])
    spikes = (images((3, 2, 4) + shape[3:], calls=1)[0] > 1.0).double().to(DEVICE[backend])
    kept, plain = (saved_bytes_of(m[3], list(m.parameters()), spikes.requires_grad_()) for m in (lean, model))
    assert kept * 32 < plain, (kept, plain)


def test_lean_torch_model_in_eval_mode_with_gradients():
    """Eval mode with gradients (our neurons have their surrogate there too): BatchNorm's running
    statistics, so the neuron must not recompute from batch statistics; outputs and gradients as before."""
    torch.manual_seed(0)
    model = TorchNet(NEURONS["plif"], nn.MaxPool2d(2)).double()
    xs = [
        torch.rand(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(k), dtype=torch.float64) * 3 for k in range(2)
    ]
    calls(model, xs)  # running statistics away from their initial values
    for m in model.modules():
        if isinstance(m, NeuronLayer):  # the potentials back to rest, out of the graph
            m.reset()
    lean = st.lean(copy.deepcopy(model)).eval()
    assert_same_training(model.eval(), lean, xs)


def test_report_says_what_was_left_and_why():
    torch.manual_seed(0)
    lean = st.lean(TorchNet(NEURONS["lif"], nn.MaxPool2d(2)))
    report = st.lean_report(lean)
    left = {e.path: e.reason for e in report.left}
    assert "float value" in left["stem.0"]  # the image is not spikes
    assert left["head.2"] == "not fed by one BatchNorm directly"  # a Linear feeds it
    text = str(report)
    assert text.splitlines()[0] == f"st.lean: {len(report.rewritten)} layers rewritten, {len(report.left)} left"
    assert "blocks.1.conv" in text and "uint8" in text


class OneNormTwoNeurons(nn.Module):
    """One BatchNorm's output fed to two neurons, whose spikes are added."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.a, self.b = st.LIF(step_mode="m"), st.IF(step_mode="m")

    def forward(self, x):
        y = self.bn(self.conv(x.flatten(0, 1))).unflatten(0, x.shape[:2])
        return self.a(y) + self.b(y)


def test_a_batch_norm_feeding_two_neurons_is_one_entry_and_exact():
    torch.manual_seed(0)
    model = OneNormTwoNeurons().double()
    lean = st.lean(copy.deepcopy(model))
    report = st.lean_report(lean)
    assert [e.path for e in report.entries] == ["conv", "bn", "a", "b"], "each layer once"
    assert [e.reason for e in report.entries if e.path == "bn"] == ["feeds a and b"]
    assert str(report).splitlines()[0] == "st.lean: 3 layers rewritten, 1 left"
    assert isinstance(lean.a, LeanNeuron) and isinstance(lean.b, LeanNeuron)
    assert_same_training(model, lean, images((3, 2, 2, 6, 6)))


class Doubled(nn.Identity):  # someone's subclasses of the layers the analysis passes spikes through
    def forward(self, x):
        return 2 * x


class HalvedFlatten(nn.Flatten):
    def forward(self, x):
        return super().forward(x) * 0.5


class DropoutPlus(nn.Dropout):
    def forward(self, x):
        return super().forward(x) + 0.1


class AveragingMaxPool(nn.MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size)


class TwiceIF(st.IF):
    def forward(self, x):
        return 2 * super().forward(x)


SUBCLASSES = {
    "Identity": lambda: nn.Sequential(nn.Linear(8, 8), st.IF(), Doubled(), nn.Linear(8, 3)),
    "Flatten": lambda: nn.Sequential(nn.Linear(8, 8), st.IF(), HalvedFlatten(), nn.Linear(8, 3)),
    "Dropout": lambda: nn.Sequential(nn.Linear(8, 8), st.IF(), DropoutPlus(0.2), nn.Linear(8, 3)),
    "neuron": lambda: nn.Sequential(nn.Linear(8, 8), TwiceIF(), nn.Linear(8, 3)),
    "MaxPool2d": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), st.IF(), AveragingMaxPool(2), nn.Flatten(), nn.Linear(32, 3)
    ),
}


@pytest.mark.parametrize("name", SUBCLASSES)
def test_a_subclass_with_its_own_forward_is_not_taken_for_its_base(name):
    """A layer whose class derives from one the analysis knows, with a forward of its own, computes
    what it likes (here: spikes doubled, halved, shifted, averaged): what follows it is left as it was."""
    torch.manual_seed(0)
    model = SUBCLASSES[name]().double()
    lean = st.lean(copy.deepcopy(model))
    shape = (4, 1, 8, 8) if name == "MaxPool2d" else (4, 8)
    assert_same_training(model, lean, [x * 10 for x in images(shape)])
    left = {e.path: e.reason for e in st.lean_report(lean).left}
    if name == "neuron":
        assert "a neuron of a class of someone else's (TwiceIF)" in left["1"]
        assert type(lean[1]) is TwiceIF
    else:
        assert "not known to be spikes" in left[str(len(model) - 1)]


class AddedInPlace(nn.Module):
    """`t += u` on spikes: fx records t + u, but the tensor changes in place, so with `alias` the name
    `a` (t's other name) holds sums of spikes when conv2 reads it; without, conv2 reads t itself."""

    def __init__(self, alias: bool):
        super().__init__()
        self.alias = alias
        self.conv0, self.conv1 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)
        self.if0, self.if1 = st.IF(step_mode="s"), st.IF(step_mode="s", v_threshold=-1.0)  # if1 always fires
        self.conv2 = nn.Conv2d(4, 3, 3)

    def forward(self, x):
        a = self.if0(self.conv0(x))
        t = a
        t += self.if1(self.conv1(x))
        return self.conv2(a if self.alias else t)


@pytest.mark.parametrize("alias", [True, False], ids=["read through another name", "read as the sum"])
def test_spikes_added_to_in_place_are_not_spikes_under_another_name(alias):
    torch.manual_seed(0)
    model = AddedInPlace(alias).double()
    lean = st.lean(copy.deepcopy(model))
    assert_same_training(model, lean, [x * 3 for x in images((2, 2, 6, 6))])
    # conv2 reads the sum, 0, 1 or 2 at every cell, never bits: through `a` it is left (the analysis
    # knows only that the values changed), through `t` kept one a byte
    report = {e.path: (e.rewrite, e.reason) for e in st.lean_report(lean).entries}
    assert report["conv2"] == (
        (None, "its input is a float value (not known to be spikes)")
        if alias
        else ("input kept as uint8", "fed sums of spikes")
    )


class TwoWays(nn.Module):
    """A branch on the data: the second Linear gets spikes one way, halved spikes the other."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(1, 2, 3), st.IF(), nn.MaxPool2d(2))
        self.fc1, self.fc2 = nn.Linear(8, 2), nn.Linear(8, 2)

    def forward(self, x):
        y = self.inner(x).flatten(1)
        z = y if y.sum() > 2 else y * 0.5
        return self.fc1(y) + self.fc2(z)


def test_forward_with_branches_is_followed_along_each_way():
    """A branch on a traced value is followed both ways: a layer is rewritten where every way feeds it what
    the rewrite needs (fc1: spikes), and left where one does not (fc2); inputs taking each way train as
    before."""
    torch.manual_seed(0)
    model = TwoWays().double()
    with torch.no_grad():
        model.inner[0].weight.mul_(4.0)
    lean = st.lean(copy.deepcopy(model))
    assert {e.path for e in st.lean_report(lean).rewritten} == {"inner.2", "fc1"}, str(st.lean_report(lean))
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64) * 3
    for scale, spikes in ((1.0, 3), (0.5, 1)):  # 3 spikes, then 1: each way of the branch
        assert model.inner(x * scale).sum() == spikes
        assert_same_training(model, lean, [x * scale])


def test_untraceable_forward_is_left_and_its_children_looked_at():
    class Looped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(1, 2, 3), st.IF(), nn.MaxPool2d(2))
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            y = self.inner(x)
            for i in range(y.shape[0]):  # a loop over a traced value: torch.fx cannot follow it
                y[i] = y[i] * 2
            return self.fc(y.flatten(2).mean(-1))

    model = Looped().double()
    lean = st.lean(copy.deepcopy(model))
    report = st.lean_report(lean)
    assert any("forward not traced" in e.reason for e in report.left)
    assert {e.path for e in report.rewritten} == {"inner.2"}  # the pool after the IF, inside the Sequential
    x = torch.rand(2, 1, 7, 7, dtype=torch.float64) * 3
    assert_same_training(model, lean, [x])


def test_forward_with_checks_on_its_input_is_traced():
    """A branch on a traced value where one way raises at once (``if x.ndim != 5: raise``, ``assert``) is a
    check: every forward that returns went the other way, so the trace follows that one and the layers
    behind the checks are rewritten; the checks still run and raise as before."""
    torch.manual_seed(0)
    model = Checked().double()
    with torch.no_grad():
        model.conv.weight.mul_(3.0)
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert rewrites(lean) == {"hands its input to the neuron": 1, "keeps no float tensor": 1, "input kept as bits": 1}
    assert_same_training(model, lean, images((3, 2, 2, 6, 6)))
    with pytest.raises(ValueError, match="expected"):
        lean(torch.zeros(2, 2, 6, 6, dtype=torch.float64))
    with pytest.raises(AssertionError, match="two channels"):
        lean(torch.zeros(3, 2, 1, 6, 6, dtype=torch.float64))


def test_neuron_fed_otherwise_at_run_time_runs_as_before():
    """The structure promised BatchNorm's output; a call that brings something else gets the plain scan."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), st.LIF(v_threshold=0.2)).double()
    lean = st.lean(copy.deepcopy(model))
    x = torch.rand(4, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    expected = torch.autograd.grad(model[2](x).sum(), x)
    assert torch.equal(torch.autograd.grad(lean[2](x).sum(), x)[0], expected[0])
    lean[1](torch.rand(4, 2, 6, 6, dtype=torch.float64))  # a stash that the neuron does not get
    assert torch.equal(torch.autograd.grad(lean[2](x).sum(), x)[0], expected[0])


class Shift(nn.Module):
    """Adds 0.5 to its input in place, unseen from its parent's forward."""

    def forward(self, x):
        return x.add_(0.5)


def augmented_assignment(m, y):
    y += 0.5  # in place on the tensor; the name then stands for the sum
    return y


# A value changed in place between its layer and the next: BatchNorm's output before its neuron
# ("bn"), or the neuron's spikes before a conv and a pool ("spikes"). Each returns what the code reads next.
IN_PLACE = {
    "method": lambda m, y: (y.mul_(1.5), y)[1],
    "augmented assignment": augmented_assignment,
    "function": lambda m, y: (torch.relu_(y), y)[1],
    "inplace=True": lambda m, y: (F.leaky_relu(y, 0.1, inplace=True), y)[1],
    "inplace module": lambda m, y: (m.inplace_relu(y), y)[1],
    "inplace module in a Sequential": lambda m, y: (m.in_sequential(y), y)[1],
    "through a view": lambda m, y: (y.flatten(2).sub_(0.25), y)[1],
    "through a slice": lambda m, y: (y[:, :, :2].add_(0.5), y)[1],
    "inside a child": lambda m, y: (m.shift(y), y)[1],  # the analysis cannot see it: the run-time checks do
}


class ChangedInPlace(nn.Module):
    def __init__(self, where, change, conv=True):
        super().__init__()
        self.where, self.change = where, IN_PLACE[change]
        self.conv, self.bn = layer.Conv2d(2, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4)
        self.sn, self.pool, self.fc = neuron.LIFNode(v_threshold=0.3), layer.MaxPool2d(2), layer.Linear(4 * 6 * 6, 3)
        self.conv2 = layer.Conv2d(4, 3, 3, padding=1) if conv else None
        self.inplace_relu, self.shift = nn.ReLU(inplace=True), Shift()
        self.in_sequential = nn.Sequential(nn.Identity(), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.where == "bn":
            y = self.change(self, y)
        s = self.sn(y)
        if self.where == "spikes":
            s = self.change(self, s)
        out = self.fc(self.pool(s).flatten(2))
        return out if self.conv2 is None else out + self.conv2(s).mean((3, 4))


@pytest.mark.parametrize("where", ["bn", "spikes"])
@pytest.mark.parametrize("change", IN_PLACE)
def test_values_changed_in_place_are_not_taken_for_what_they_were(where, change):
    """A BatchNorm output changed in place before its neuron reads it is not recomputed from BatchNorm's
    input, and spikes changed in place are neither kept as bits nor pooled by their neuron: the model
    trains as it did, with no error, where the analysis sees the change. One it cannot see (inside a
    child) meets the run-time checks: the neuron runs its plain scan; spikes that are no longer spikes
    fail loudly in the layer that would keep them as bits, and the fused pool pools its input itself
    (the same error there), never handing over the neuron's pooling of other values."""
    torch.manual_seed(0)
    hidden = change == "inside a child"
    model = ChangedInPlace(where, change, conv=not (hidden and where == "spikes")).double()
    functional.set_step_mode(model, "m")
    with torch.no_grad():
        model.conv.weight.mul_(3.0)
    lean = st.from_spikingjelly(copy.deepcopy(model))
    done = rewrites(lean)
    xs = images((3, 2, 2, 12, 12), calls=2)
    if where == "spikes" and hidden:
        assert done["fused into the neuron"] == 1, str(st.lean_report(lean))
        with pytest.raises(RuntimeError, match="spikes"):
            calls(lean, xs)
        return
    assert_same_training(model, lean, xs)
    assert ("keeps no float tensor" in done) == (where == "spikes" or hidden), str(st.lean_report(lean))
    if where == "spikes":
        assert not {"fused into the neuron", "input kept as bits"} & set(done), str(st.lean_report(lean))


def test_layers_with_forward_hooks_are_taken_as_changing_what_they_feed_or_make():
    """A forward hook may change a layer's output and a forward pre-hook its input: st.lean takes the
    hooked neuron's output and the pre-hooked Linear's input for any values, and the model computes
    what it did (a hook that halves the spikes, one that shifts the Linear's input)."""
    torch.manual_seed(0)
    for hook in ("neuron", "pre-hook"):
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), st.LIF(step_mode="s"), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
        ).double()
        if hook == "neuron":
            model[1].register_forward_hook(lambda module, args, out: out * 0.5)
        else:
            model[3].register_forward_pre_hook(lambda module, args: (args[0] + 0.1,))
        lean = st.lean(copy.deepcopy(model))
        assert "input kept as bits" not in rewrites(lean), str(st.lean_report(lean))
        assert_same_training(model, lean, images((3, 2, 6, 6)))


def test_a_fused_pool_fed_spikes_reshaped_into_maps_pools_them_itself():
    """BatchNorm1d -> LIF on [T, N, F], its spikes unflattened into maps for a 3x3 max pooling: the neuron,
    whose own spikes are no maps the window fits, leaves the pooling to the pool, which pools the maps
    (the same outputs and gradients as spikingjelly's)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.bn = layer.Linear(5, 4 * 6 * 6), layer.SeqToANNContainer(nn.BatchNorm1d(4 * 6 * 6))
            self.sn, self.pool = neuron.LIFNode(v_threshold=0.3), nn.MaxPool2d(3)
            self.fc2 = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            s = self.sn(self.bn(self.fc1(x)))
            return self.fc2(self.pool(s.flatten(0, 1).unflatten(1, (4, 6, 6))).flatten(1))

    torch.manual_seed(0)
    model = multi_step(Net()).double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert rewrites(lean)["fused into the neuron"] == 1, str(st.lean_report(lean))
    assert_same_training(model, lean, images((3, 2, 5)))


class Selected(nn.Module):
    """conv BN neuron, then `select` of its spikes (some of their values, moved, joined or padded), then a conv."""

    def __init__(self, select):
        super().__init__()
        self.select = select
        self.block = nn.Sequential(*conv_bn_neuron(2, 4))
        self.conv = layer.SeqToANNContainer(nn.LazyConv2d(3, 3, padding=1))
        self.fc = layer.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.conv(self.select(self.block(x))).mean((-1, -2)))


# How the conv after each keeps its input: a selection of spikes is spikes, of sums of spikes such sums.
SELECTIONS = {
    "slice": (lambda s: s[:, :, :, 1:], "input kept as bits"),
    "chunk": (lambda s: s.chunk(2, dim=3)[0], "input kept as bits"),
    "flip": (lambda s: torch.flip(s, [-1]), "input kept as bits"),
    "roll": (lambda s: s.roll(1, -1), "input kept as bits"),
    "cat": (lambda s: torch.cat([s, s[:, :, :2]], 2), "input kept as bits"),
    "stack": (lambda s: torch.stack([s, s.flip(-1)], 2).flatten(2, 3), "input kept as bits"),
    "zero padding": (lambda s: F.pad(s, (1, 1, 1, 1)), "input kept as bits"),
    "sum of moved spikes": (lambda s: s + s.flip(-1), "input kept as uint8"),
    "padding with 0.5": (lambda s: F.pad(s, (1, 1), value=0.5), None),
    "scaled": (lambda s: s[:, :, :, 1:] * 0.5, None),
}


@pytest.mark.parametrize("name", SELECTIONS)
def test_spikes_selected_moved_or_joined_are_still_spikes(name):
    """Spikes sliced, chunked, flipped, rolled, concatenated, stacked or padded with zeros are spikes for the
    conv they feed (kept as bits; a sum of such as uint8), other values are not; each model trains as
    before, float64, the state carried."""
    select, expected = SELECTIONS[name]
    torch.manual_seed(0)
    model = multi_step(Selected(select)).double()
    xs = images((2, 2, 2, 8, 8))
    model(xs[0])  # the LazyConv2d's weight
    functional.reset_net(model)
    lean = st.from_spikingjelly(copy.deepcopy(model))
    entry = next(e for e in st.lean_report(lean).entries if e.path == "conv.0")
    assert entry.rewrite == expected, str(st.lean_report(lean))
    assert_same_training(model, lean, xs)


class TwoDropouts(nn.Module):
    """Spikes through two Dropouts of other p (0 or 2; 0 or 4/3), concatenated, into a conv."""

    def __init__(self):
        super().__init__()
        self.block, self.drops = nn.Sequential(*conv_bn_neuron(2, 4)), (layer.Dropout(0.5), layer.Dropout(0.25))
        self.first, self.second = self.drops
        self.conv, self.fc = layer.Conv2d(4, 3, 3, padding=1), layer.Linear(3, 3)

    def forward(self, x):
        s = self.block(x)
        return self.fc(self.conv(torch.cat([self.first(s), self.second(s)], 3)).mean((-1, -2)))


def test_spikes_of_two_dropouts_joined_are_not_taken_for_one_scale():
    """A concatenation of two Dropouts' outputs holds two scales: the conv after it is left (the "scaled"
    store would fail its check there) and the model trains as before."""
    torch.manual_seed(0)
    model = multi_step(TwoDropouts()).double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    entry = next(e for e in st.lean_report(lean).entries if e.path == "conv")
    assert entry.rewrite is None, str(st.lean_report(lean))
    assert_same_training(model, lean, images((2, 2, 2, 8, 8)))


class Reordered(nn.Module):
    """conv BN neuron pool linear, with `reorder` of the BatchNorm's output ("bn") or of the spikes."""

    def __init__(self, where, reorder):
        super().__init__()
        self.where, self.reorder = where, reorder
        self.conv, self.bn = layer.Conv2d(2, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4)
        self.sn, self.pool, self.fc = neuron.LIFNode(v_threshold=0.3), layer.MaxPool2d(2), layer.Linear(64, 3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        s = self.sn(self.reorder(y) if self.where == "bn" else y)
        return self.fc(self.pool(self.reorder(s) if self.where == "spikes" else s).flatten(2))


# where, the reordering, and what the report says of the neuron (bn) or of the pool (spikes)
REORDERED = {
    "BatchNorm output transposed": ("bn", lambda y: y.transpose(-1, -2), None),
    "BatchNorm output permuted": ("bn", lambda y: y.permute(0, 1, 2, 4, 3), None),
    "spikes transposed": ("spikes", lambda s: s.transpose(-1, -2), "bits kept, no indices"),
    # a view, its values in order, into other maps: the analysis fuses the pool, the run-time check does not
    "spikes viewed as other maps": ("spikes", lambda s: s.flatten(2).unflatten(2, (4, 4, 16)), "fused into the neuron"),
}


@pytest.mark.parametrize("case", REORDERED)
def test_values_reordered_are_not_taken_for_the_layer_output(case):
    """A transpose or permute of a BatchNorm's output holds its values in another order, so the neuron it
    feeds is not recomputed from the BatchNorm's input (which would give the values in BatchNorm's order),
    and one of spikes is not the neuron's output its fused pool pools (nor is a view into other maps):
    each trains as before, float64, the state carried."""
    where, reorder, expected = REORDERED[case]
    torch.manual_seed(0)
    model = multi_step(Reordered(where, reorder)).double()
    with torch.no_grad():
        model.conv.weight.mul_(3.0)
    lean = st.from_spikingjelly(copy.deepcopy(model))
    entry = next(e for e in st.lean_report(lean).entries if e.path == ("sn" if where == "bn" else "pool"))
    assert entry.rewrite == expected, str(st.lean_report(lean))
    assert_same_training(model, lean, images((3, 2, 2, 8, 8)))


class PooledAsOneBatch(nn.Module):
    """conv BN LIF on [T, N, C, H, W], its spikes max-pooled as [T, N * C, H, W] (T the pool's batch)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.sn, self.pool, self.fc = st.LIF(v_threshold=0.3), nn.MaxPool2d(2), nn.Linear(64, 3)

    def forward(self, x):
        T, N = x.shape[0], x.shape[1]
        spikes = self.sn(self.bn(self.conv(x.flatten(0, 1))).unflatten(0, (T, N)))
        return self.fc(self.pool(spikes.flatten(1, 2)).unflatten(1, (N, 4)).flatten(2))


def test_fused_pool_of_spikes_reshaped_into_other_leading_dims():
    """The pool fused into the neuron, fed the neuron's spikes with its leading dims reshaped (the same
    maps): it hands over the neuron's pooling in its input's leading dims; trains as before, float64."""
    torch.manual_seed(0)
    model = PooledAsOneBatch().double()
    with torch.no_grad():
        model.conv.weight.mul_(3.0)
    lean = st.lean(copy.deepcopy(model))
    assert rewrites(lean)["fused into the neuron"] == 1, str(st.lean_report(lean))
    assert_same_training(model, lean, images((3, 2, 2, 8, 8)))


def test_same_values_are_the_tensor_or_a_reshaping_view_of_it():
    """The run-time check of a stash: the tensor, a view of it that reshapes (its values in their order,
    in either memory format), unchanged; not a transpose, a copy, nor a tensor changed in place since."""
    y = torch.rand(6, 4, 5, 3)
    version = lean_module.version_of(y)
    reshaped = [y, y.view(2, 3, 4, 15), y.flatten(1), y.unsqueeze(0), y.view(24, 1, 15).squeeze(1)]
    assert all(lean_module.same_values(x, y, version) for x in reshaped)
    channels_last = y.contiguous(memory_format=torch.channels_last)
    assert lean_module.same_values(channels_last.unflatten(0, (2, 3)), channels_last, version)
    others = [y.transpose(1, 2), y.permute(0, 2, 3, 1), y.transpose(0, 1).reshape(6, 4, 5, 3), y.clone(), y[:3]]
    assert not any(lean_module.same_values(x, y, version) for x in others)
    y.add_(1.0)
    assert not lean_module.same_values(y, y, version)


BATCH_NORM_CASES = [  # (BatchNorm class, input shape, channels-last, affine, dtype)
    (nn.BatchNorm2d, (6, 16, 9, 11), False, True, torch.float32),
    (nn.BatchNorm2d, (6, 16, 9, 11), True, True, torch.float32),
    (nn.BatchNorm2d, (4, 64, 7, 7), True, True, torch.float64),
    (nn.BatchNorm2d, (5, 3, 5, 7), False, False, torch.float32),
    (nn.BatchNorm1d, (16, 10), False, True, torch.float32),
    (nn.BatchNorm1d, (16, 10, 13), False, True, torch.float64),
]


def lean_batch_norm(cls, shape, affine, dtype):
    torch.manual_seed(0)
    bn = cls(shape[1], affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(-2.0, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    bn.__class__ = lean_class(type(bn), LeanBatchNorm)
    return bn


@pytest.mark.parametrize("case", BATCH_NORM_CASES, ids=lambda c: f"{c[0].__name__}-{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_batch_norm_replay_is_its_output_normalized_by_the_kept_statistics(case):
    """On a CPU the neuron's backward makes BatchNorm's output again in one pass, from the batch mean and
    1/sqrt(var + eps) that BatchNorm's backward keeps anyway: the same bits as forward gave."""
    cls, shape, channels_last, affine, dtype = case
    bn = lean_batch_norm(cls, shape, affine, dtype)
    x = torch.randn(shape, dtype=dtype) * 3.0 + 1.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = bn(x.requires_grad_())
    source, kept_out, _, replay = bn.lean_stash
    assert source is x and kept_out is out
    assert isinstance(replay, functools.partial) and replay.func is lean_module.normalize_by, "the one-pass form"
    mean, invstd = replay.args[:2]
    dims = [d for d in range(x.dim()) if d != 1]
    wide = x.detach().double()
    torch.testing.assert_close(mean.double(), wide.mean(dims), rtol=1e-6, atol=1e-6)
    expected_invstd = (wide.var(dims, unbiased=False) + bn.eps).rsqrt()
    torch.testing.assert_close(invstd.double(), expected_invstd, rtol=1e-5, atol=0.0)
    assert torch.equal(replay(x.detach()), out)


def test_batch_norm_replay_not_exact_is_not_used(monkeypatch):
    """Where the one-pass form does not give forward's bits (another CPU kernel's rounding), backward
    runs BatchNorm's own call again, and the neuron's gradients are the unconverted model's."""
    monkeypatch.setattr(lean_module, "NORMALIZE_IS_EXACT", {})
    exact = lean_module.normalize_by
    one_ulp_off = lambda *args: torch.nextafter(exact(*args), torch.tensor(math.inf, dtype=torch.float64))  # noqa: E731
    monkeypatch.setattr(lean_module, "normalize_by", one_ulp_off)
    bn = lean_batch_norm(nn.BatchNorm2d, (4, 3, 5, 5), True, torch.float64)
    bn(torch.rand(4, 3, 5, 5, dtype=torch.float64, requires_grad=True))
    replay = bn.lean_stash[3]
    assert replay.func == bn.replay and replay.keywords["weight"] is bn.weight and replay.keywords["bias"] is bn.bias
    torch.manual_seed(0)
    model = RateTerm(NEURONS["lif"], nn.MaxPool2d(2)).double()
    lean = st.lean(copy.deepcopy(model))
    assert rewrites(lean).get("keeps no float tensor") == 1, str(st.lean_report(lean))
    assert_same_training(model, lean, images((2, 3, 2, 8, 8)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dropout", ["torch", "spikingjelly"])
def test_linear_after_a_dropout_of_spikes_keeps_bits_and_the_scale(dropout, dtype, backend):
    """Spikes, Dropout(p) (values 0 or 1/(1-p)), Linear: the Linear keeps bits and the scale, about
    1/32 of its float input; outputs and gradients as before, training and eval mode; the store's
    kernels (one launch to save, one to load) or its reference."""
    torch.manual_seed(0)
    drop = nn.Dropout(0.3) if dropout == "torch" else layer.Dropout(0.3, step_mode="m")
    model = nn.Sequential(st.IF(v_threshold=0.5), drop, nn.Linear(64, 5)).to(dtype).to(DEVICE[backend])
    lean = st.lean(copy.deepcopy(model), backend=backend)
    assert rewrites(lean) == {DROPPED: 1}, str(st.lean_report(lean))
    xs = [x.to(DEVICE[backend]) for x in images((3, 4, 64), calls=2, dtype=dtype)]
    for train in (True, False):
        model.train(train), lean.train(train)
        for m in (model, lean):
            functional.reset_net(m)  # spikingjelly's Dropout: a new mask
        assert_same_training(model, lean, xs)
    x = images((3, 4, 64), calls=1, dtype=dtype)[0].to(DEVICE[backend]).requires_grad_()
    lean.train()
    kept, plain = saved_bytes(lean[2], lean[1](lean[0](x))), saved_bytes(model[2], model[1](model[0](x)))
    assert kept * 16 < plain, (kept, plain)


SCALED_STORE_CASES = covering(
    dtype=[torch.float32, torch.float64, torch.float16, torch.bfloat16],
    layout=["rows", "channels_last", "strided"],
    values=["dropout", "all zero", "ones"],
)


@ONE_VERSION
@pytest.mark.parametrize("case", SCALED_STORE_CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_scaled_store_kernels_keep_what_the_reference_keeps(case):
    """The "scaled" store's kernels: the same bytes as its reference (the bits, then c = max(x)), and its
    load gives x back bit for bit in x's shape and strides, in every dtype and layout."""
    dtype, layout, values = case
    g = torch.Generator().manual_seed(SCALED_STORE_CASES.index(case))
    shape = {"rows": (5, 37), "channels_last": (2, 3, 5, 7), "strided": (6, 9, 4)}[layout]
    mask = (torch.rand(shape, generator=g) < {"dropout": 0.4, "all zero": 0.0, "ones": 1.0}[values]).to(dtype)
    x = mask * torch.tensor(1 / 0.7, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # not dense: kept as a contiguous copy
        x = x[:, ::2].transpose(0, 1)
    # x not dense is kept as its contiguous copy (as the "bits" store keeps it), the reference's x / c in x's order
    like = x if layout != "strided" else x.contiguous()
    kept, layout_kept = st.ops.save_input(x.to(DEVICE["triton"]), "scaled", "triton")
    expected, expected_layout = st.ops.save_input(like, "scaled", "torch")
    assert torch.equal(kept.cpu(), expected) and layout_kept[0][0] == expected_layout[0][0]  # memory order's shape
    loaded = st.ops.load_input(kept, layout_kept, "scaled", "triton")
    assert torch.equal(loaded.cpu(), x) and loaded.stride() == like.stride()


BAD_SCALED = {
    "two scales": [0.0, 2.0, 1.0, 2.0],
    "just below the scale": [0.0, 2.0, float(torch.nextafter(torch.tensor(2.0), torch.tensor(0.0))), 2.0],
    "negative": [0.0, -2.0, 0.0, 0.0],
    "all negative": [-2.0, -2.0, -2.0, -2.0],
    "infinite": [0.0, float("inf"), 0.0, float("inf")],
    "nan": [0.0, 2.0, float("nan"), 2.0],
    "underflows against c": [0.0, 1e-45, 1e30, 1e30],  # 1e-45 / c is 0 in float32
}


@pytest.mark.parametrize(
    "backend, bad",
    [pytest.param(backend.values[0], bad, id=f"{backend.id}-{bad}") for backend in BACKENDS for bad in BAD_SCALED],
)
def test_scaled_spikes_promised_but_not_given_fail_loudly(backend, bad):
    model = st.lean(nn.Sequential(st.IF(), nn.Dropout(0.5), nn.Linear(4, 2)).to(DEVICE[backend]), backend=backend)
    x = torch.tensor([BAD_SCALED[bad]], device=DEVICE[backend])
    with pytest.raises(RuntimeError, match="spikes times one factor"):
        model[2](x)


def test_spikes_promised_but_not_given_fail_loudly():
    model = st.lean(nn.Sequential(st.IF(), nn.Flatten(1), nn.Linear(4, 2)))
    with pytest.raises(RuntimeError, match="spikes"):
        model[2](torch.full((3, 4), 0.5))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        st.lean("net")
    with pytest.raises(ValueError, match="backend"):
        st.lean(nn.Linear(2, 2), backend="cupy")
    for rules in (1, 0, {"sequential": ()}):  # 0 was taken for the default rules, 1 failed deep in the analysis
        with pytest.raises(TypeError, match="^rules must be a snn_triton.lean.Rules or None, got"):
            st.lean(nn.Linear(2, 2), rules=rules)


def test_compiled_lean_model_has_no_graph_breaks():
    """torch.compile of rewritten blocks (BatchNorm -> LIF with its pool fused, bits, BatchNorm -> max
    pooling -> LIF) traces as one graph and computes the same with inductor, backward included (to
    float32 rounding of a compiled graph: inductor reorders sums)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        st.LIF(v_threshold=0.2),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 3),
        nn.BatchNorm2d(2),
        nn.MaxPool2d(2),
        st.LIF(v_threshold=0.1),
    )
    lean = st.lean(copy.deepcopy(model))
    assert rewrites(lean)["keeps nothing"] == 1 and rewrites(lean)["keeps no float tensor"] == 2
    x = torch.rand(3, 1, 10, 10)
    explained = torch._dynamo.explain(lean)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(copy.deepcopy(lean))
    expected, expected_grads = calls(model, [x])
    actual, actual_grads = calls(compiled, [x])
    assert torch.equal(actual[0], expected[0])
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6)  # sums near 0 (a BatchNorm bias): absolute


# Run with TRITON_INTERPRET=0, so that the kernels are JITFunctions the ops hand to torch.compile (as on
# CUDA); runs_triton is made to choose them for CPU tensors, which are traced, never run.
TRACE_TRITON_PATH = """
import json
import torch
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import default_partition
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
import snn_triton as st
from snn_triton import ops

ops.runs_triton = lambda backend, x, surrogate=None: True
joint = []

class Traced(Exception):
    pass

def partition(gm, *args, **kwargs):
    joint.append(gm)
    return default_partition(gm, *args, **kwargs)

def not_run(gm, example_inputs):
    def run(*args):
        raise Traced
    return run

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), st.LIF(v_threshold=0.2), nn.MaxPool2d(3, 2, 1),
                      nn.Dropout(0.3), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
lean = st.lean(model, backend="triton")
backend = aot_autograd(fw_compiler=not_run, bw_compiler=not_run, partition_fn=partition)
try:
    torch.compile(lean, backend=backend, fullgraph=True)(torch.rand(3, 1, 8, 8))
except Traced:
    pass
kernels = [
    [kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__ for n in g.graph.nodes
     if n.op == "call_function" and "triton_kernel_wrapper" in str(n.target)]
    for g in joint
]
print(json.dumps(kernels))
"""


@ONE_VERSION
@pytest.mark.skipif(
    TORCH_VERSION < LEAN_COMPILED_MIN_TORCH,
    reason="compiled, the lean layers compute as the layers they replace on torch < 2.13 (docs/support.md)",
)
def test_compiled_lean_model_on_the_kernels_has_no_graph_breaks():
    """The Triton path (use_triton, as on CUDA) of BatchNorm -> LIF with its pool fused and a Linear after a
    Dropout of spikes: torch.compile(fullgraph=True) traces forward and backward as one joint graph, its
    launches those of the fused pool's kernels (pooling unpacked, routing from the recomputed spikes) and
    of the scaled store's (pack, unpack), with the scans'."""
    env = dict(
        os.environ,
        TRITON_INTERPRET="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run([sys.executable, "-c", TRACE_TRITON_PATH], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    (launches,) = json.loads(done.stdout.splitlines()[-1])  # one joint graph: no graph break
    assert launches == [
        "lif_scan_forward_kernel",
        "spike_max_pool2d_forward_kernel",
        "pack_scaled_kernel",
        "unpack_bits_kernel",
        "lif_scan_forward_kernel",  # backward: the scan again, for H and the spikes
        "spike_max_pool2d_backward_kernel",
        "lif_scan_backward_kernel",
    ], launches


def test_compiled_lean_spikingjelly_net_computes_what_eager_does():
    """A converted spikingjelly net (BatchNorm -> PLIF, pool, bits into Linear, a Dropout of spikes into
    Linear), torch.compile'd with inductor, called with a batch of 4 and then of 3 (as an epoch's last
    batch: recompiled with dynamic shapes): the same logits as eager, gradients to float32 rounding of a
    compiled graph (inductor reorders sums: the neuron-only conversion differs from eager by as much).
    On torch < 2.13 the compiled lean layers compute as the layers they replace; on torch 2.11 (CI's
    floor stage), one batch: there inductor fails to recompile spikingjelly's own model for the second.
    From torch 2.13 the compiled model keeps what eager keeps for backward (a replay of the BatchNorm
    that inductor's partitioner merges with forward's would keep its output: twice as much here)."""
    model = small_net()
    model.insert(7, layer.Dropout(0.5))
    functional.set_step_mode(model, "m")
    st.from_spikingjelly(model)
    assert rewrites(model) == {
        "hands its input to the neuron": 1,
        "keeps no float tensor": 1,
        "fused into the neuron": 1,
        "input kept as bits": 1,
        DROPPED: 1,
    }
    torch._dynamo.reset()
    compiled = torch.compile(model)
    batches = (4, 3) if TORCH_VERSION >= (2, 12) else (4,)
    for batch, x in zip(batches, net_input(calls=2)):
        x = x[:, :batch]
        expected, expected_grads = calls(model, [x])
        functional.reset_net(model)
        with torch._inductor.config.patch(fallback_random=True):  # eager's dropout masks
            actual, actual_grads = calls(compiled, [x])
            functional.reset_net(model)
            if TORCH_VERSION >= LEAN_COMPILED_MIN_TORCH:
                kept = []
                for run in (model, compiled):
                    kept.append(saved_bytes(run, x.detach().requires_grad_()))
                    functional.reset_net(model)
                assert kept[1] <= 1.1 * kept[0], kept
        assert torch.equal(actual[0], expected[0]) and expected[0].sum() > 0
        for a, e in zip(actual_grads, expected_grads, strict=True):
            # PLIF's dL/dw: a float32 sum over every neuron-step, with cancellation (5e-4 apart in either conversion)
            rtol = 1e-3 if e.numel() == 1 else 1e-4
            torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * e.abs().max().item())


@ONE_VERSION
@NEEDS_SPIKINGJELLY2
def test_with_spikingjelly_2(tmp_path, request):
    """This file again, in a process with spikingjelly 2.0.0 first on the path."""
    assert_passes_with_spikingjelly_2(request, tmp_path, AT_LEAST_PASSED_WITH_2)


def test_undo_lean_gives_each_layer_its_own_class_and_the_same_outputs():
    """What the exporters run: the lean rewrites undone, layer by layer, with the outputs unchanged."""
    from snn_triton.lean import undo_lean

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        st.LIF(step_mode="s"),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )
    classes = [type(m) for m in net]
    x = torch.rand(3, 1, 8, 8) * 3
    expected = net(x)
    st.lean(net)
    assert [type(m) for m in net] != classes
    undo_lean(net)
    assert [type(m) for m in net] == classes
    assert not any(name.startswith("lean_") for m in net.modules() for name in m.__dict__)
    assert torch.equal(net(x), expected)


# Another process: loads the models (pickle imports what they name), runs a call on the input, saves
# each model's output and the gradients of its sum w.r.t. the input and the parameters.
LOAD_AND_RUN = """
import sys, torch
models, x = torch.load(sys.argv[1], weights_only=False)
results = {}
for name, model in models.items():
    torch.manual_seed(0)
    x_in = x.clone().requires_grad_()
    out = model(x_in)
    results[name] = [out.detach(), *torch.autograd.grad(out.sum(), [x_in, *model.parameters()])]
torch.save(results, sys.argv[2])
"""


def test_whole_converted_models_saved_and_loaded_elsewhere_carry_on(tmp_path):
    """torch.save of the whole model (not its state_dict), lean=True and lean=False, after a training step
    (its state carried, detached), loaded in another process:
    the next call gives the outputs bit for bit and the gradients the model in this process gives. Loaded
    in this process, each layer has its class of before (the same object)."""
    model, shape = zoo_model("lif_fashion")
    model = model.double()
    models = {
        "lean": st.from_spikingjelly(copy.deepcopy(model)),
        "neurons": st.from_spikingjelly(copy.deepcopy(model), lean=False),
    }
    first, second = images(shape)
    for m in models.values():  # a training step, the state kept without its graph (as in truncated BPTT)
        m(first).sum().backward()
        functional.detach_net(m)
    saved, results = tmp_path / "models.pt", tmp_path / "results.pt"
    torch.save((models, second), saved)
    loaded, _ = torch.load(saved, weights_only=False)
    for name, m in models.items():
        assert [type(a) for a in loaded[name].modules()] == [type(b) for b in m.modules()]
    assert str(st.lean_report(loaded["lean"])) == str(st.lean_report(models["lean"]))
    # what a BatchNorm holds for its neuron between the two layers' calls is not saved
    batch_norm = models["lean"].conv_fc[1]
    batch_norm(models["lean"].conv_fc[0](first))
    assert batch_norm.lean_stash is not None and copy.deepcopy(batch_norm).lean_stash is None
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(saved), str(results)], cwd=REPO, check=True)
    elsewhere = torch.load(results)
    for name, m in models.items():
        torch.manual_seed(0)
        x = second.clone().requires_grad_()
        out = m(x)
        here = [out.detach(), *torch.autograd.grad(out.sum(), [x, *m.parameters()])]
        assert torch.equal(elsewhere[name][0], here[0]) and here[0].abs().sum() > 0
        for a, e in zip(elsewhere[name][1:], here[1:], strict=True):
            assert_grad_close(a, e)


def frozen_features_plif():
    """A frozen conv + BatchNorm (training mode, no gradient of its own) before a PLIF whose w trains:
    the BatchNorm's output has no autograd node, so backward recomputes it from its weight and bias."""
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),
        neuron.ParametricLIFNode(surrogate_function=surrogate.ATan(), v_threshold=0.5),
        layer.Flatten(),
        layer.Linear(4 * 8 * 8, 3),
    ).double()
    functional.set_step_mode(model, "m")
    model[0].requires_grad_(False)
    model[1].requires_grad_(False)
    return model


def test_batch_norm_weight_lent_by_functional_call_is_the_one_recomputed_with():
    """torch.func.functional_call lends the BatchNorm another weight for one call: backward recomputes
    the BatchNorm's output with that weight (it is gone from the module by then), so PLIF's w gets the
    unconverted model's gradient."""
    model = frozen_features_plif()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert rewrites(lean).get("keeps no float tensor") == 1, str(st.lean_report(lean))
    x = images((3, 2, 1, 8, 8), calls=1)[0]
    grads = []
    for net in (model, lean):
        lent = {name: p.detach().clone().requires_grad_(p.requires_grad) for name, p in net.named_parameters()}
        lent["1.weight"] = lent["1.weight"] * 1.5
        out = torch.func.functional_call(net, lent, (x,))
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        grads.append(lent["2.w"].grad)
    assert grads[0] != 0
    assert_grad_close(grads[1], grads[0])


def test_batch_norm_changed_before_backward_is_recomputed_as_forward_had_it_or_raises():
    """A BatchNorm weight changed in place between forward and backward. Frozen (its output has no
    autograd node), the unconverted model's backward reads what forward computed, and the lean model's
    recompute uses the weight forward had. Trained, autograd raises in the unconverted model, and the
    lean model raises the same error where it would recompute with the changed weight."""
    x = images((3, 2, 1, 8, 8), calls=1)[0]
    model = frozen_features_plif()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    grads = []
    for net in (model, lean):
        out = net(x)
        with torch.no_grad():
            net[1].weight.mul_(1.5)
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
        grads.append(net[2].w.grad)
    assert_grad_close(grads[1], grads[0])
    for net in (model, lean):
        net.requires_grad_(True)
        out = net(x)
        with torch.no_grad():
            net[1].weight.mul_(1.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


class RecurrentCell(base.MemoryModule):
    """A single-step recurrent cell as users write one: its fed-back spikes a spikingjelly memory made on
    first use, and a count of its calls (a warm-up) bumped in forward."""

    def __init__(self):
        super().__init__()
        self.fc, self.sn = nn.Linear(8 + 6, 6), neuron.LIFNode(v_threshold=0.5)
        self.bn, self.sn2, self.out = nn.BatchNorm1d(6), neuron.IFNode(v_threshold=0.5), nn.Linear(6, 3)
        self.register_memory("s_prev", None)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.s_prev is None:
            self.s_prev = x.new_zeros(x.shape[0], 6)
        s = self.sn(self.fc(torch.cat([x, self.s_prev], 1)))
        self.s_prev = s
        return self.out(self.sn2(self.bn(s))) * min(1.0, self.calls / 4)


class Steps(nn.Module):
    """RecurrentCell over the steps of [T, N, 8]."""

    def __init__(self):
        super().__init__()
        self.cell = RecurrentCell()

    def forward(self, x_seq):
        return torch.stack([self.cell(x) for x in x_seq])


def test_what_a_forward_stores_on_its_modules_is_left_as_it_was():
    """st.lean traces forward, which runs its Python: the state a forward makes on first use and a count
    of its calls are as they were before the conversion, and the model trains as before."""
    torch.manual_seed(0)
    model = Steps().double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert lean.cell.calls == 0 and lean.cell.s_prev is None
    assert rewrites(lean), str(st.lean_report(lean))
    assert_same_training(model, lean, images((3, 2, 8)))


class DropoutInTraining(nn.Module):
    """A Dropout that forward runs in training mode only."""

    def __init__(self):
        super().__init__()
        self.conv1 = layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.sn1, self.drop = neuron.LIFNode(step_mode="m", v_threshold=0.5), nn.Dropout(0.3)
        self.conv2, self.sn2 = layer.SeqToANNContainer(nn.Conv2d(4, 4, 3, padding=1)), neuron.IFNode(step_mode="m")

    def forward(self, x):
        s = self.sn1(self.conv1(x))
        if self.training:
            s = self.drop(s)
        return self.sn2(self.conv2(s))


def test_model_converted_in_eval_mode_trains_as_before():
    """Converted in eval mode (a checkpoint loaded for fine-tuning), a forward that takes another way in
    training (a Dropout there only) is rewritten for both ways, and trains as before."""
    torch.manual_seed(0)
    model = DropoutInTraining().double().eval()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert rewrites(lean).get("input kept as bits and a scale") == 1, str(st.lean_report(lean))
    model.train()
    lean.train()
    assert_same_training(model, lean, images((2, 2, 2, 8, 8)))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_unbatched_spikes_into_a_lean_conv(dims):
    """Spikes of one sample [C, ...] (no batch dim), which torch's convs take, into a conv rewritten to
    keep them as bits: it trains as before."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    torch.manual_seed(0)
    model = nn.Sequential(conv(2, 3, 3, padding=1), neuron.IFNode(v_threshold=0.3), conv(3, 2, 3)).double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    assert rewrites(lean).get("input kept as bits") == 1, str(st.lean_report(lean))
    assert_same_training(model, lean, images((2,) + (5,) * dims))


class TemporalBatchNorms(nn.Module):
    """2.x's TEBN (it scales each step after normalizing) and threshold-dependent BatchNorm (a plain one,
    its weight set from the threshold), each before a neuron and a pool."""

    def __init__(self):
        super().__init__()
        self.conv = layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
        self.bn = layer.TemporalEffectiveBatchNorm2d(3, 4)
        self.sn, self.pool = neuron.LIFNode(step_mode="m", v_threshold=0.5), layer.MaxPool2d(2, step_mode="m")
        self.conv2 = layer.Conv2d(4, 4, 3, padding=1, step_mode="m")
        self.bn2 = layer.ThresholdDependentBatchNorm2d(alpha=1.0, v_th=0.5, num_features=4)
        self.pool2, self.sn2 = layer.MaxPool2d(2, step_mode="m"), neuron.IFNode(step_mode="m", v_threshold=0.5)
        with torch.no_grad():
            self.bn.scale.copy_(torch.tensor([0.5, 1.0, 1.5]).view(self.bn.scale.shape))

    def forward(self, x):
        return self.sn2(self.pool2(self.bn2(self.conv2(self.pool(self.sn(self.bn(self.conv(x))))))))


@pytest.mark.skipif(not hasattr(layer, "WSConv2d"), reason="2.x's weight-standardized layers: test_with_spikingjelly_2")
def test_a_layer_with_its_own_convolution_is_left_and_said_so():
    """spikingjelly 2.x's WSConv2d and WSLinear standardize the weight and call F.conv2d / F.linear
    themselves, past the convolution the lean form replaces: left, and the report says why."""
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(1, 2, 3), neuron.IFNode(), layer.WSConv2d(2, 2, 3), layer.Flatten(), layer.WSLinear(8, 3)
    ).double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    left = {e.path: e.reason for e in st.lean_report(lean).left}
    assert "its class's own forward (WSConv2d)" in left["2"] and "its class's own forward (WSLinear)" in left["4"]
    assert_same_training(model, lean, [x * 4 for x in images((2, 1, 6, 6))])


@pytest.mark.skipif(not SPIKINGJELLY_VERSION.startswith("2"), reason="2.x's BatchNorms: test_with_spikingjelly_2")
def test_batch_norms_that_scale_after_normalizing_are_not_recomputed():
    """A BatchNorm whose output is not its normalization alone (TEBN) is not taken for one the neuron
    could make again: the report says so (no rewrite that would fall back at run time); the
    threshold-dependent one is, and the model trains as before."""
    torch.manual_seed(0)
    model = TemporalBatchNorms().double()
    lean = st.from_spikingjelly(copy.deepcopy(model))
    report = st.lean_report(lean)
    done = {e.path: e.rewrite for e in report.rewritten}
    assert not {"bn", "sn"} & set(done), str(report)
    assert done.get("conv2") == "input kept as bits" and done.get("sn2") == "keeps no float tensor", str(report)
    assert_same_training(model, lean, images((3, 2, 2, 8, 8)))


class EmptyBatchBlocks(nn.Module):
    """Conv BN LIF (fused max pooling), conv of the pooled spikes, Linear of spikes: [T, N, 2, 8, 8]."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.sn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), st.LIF(v_threshold=0.3)
        self.pool, self.conv2, self.sn2 = nn.MaxPool2d(2), nn.Conv2d(3, 3, 3), st.IF(v_threshold=0.3)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x_seq):
        T, N = x_seq.shape[:2]
        s = self.sn(self.bn(self.conv(x_seq.flatten(0, 1))).unflatten(0, (T, N)))
        s = self.sn2(self.conv2(self.pool(s.flatten(0, 1))).unflatten(0, (T, N)))
        return self.fc(s.flatten(2))


def test_empty_batch_through_lean_layers():
    """A batch of no samples (an empty shard of a split) runs forward and backward through the lean
    layers as through the model before st.lean: empty outputs, and the parameters' gradients (zeros
    but for BatchNorm's, which torch makes NaN from no samples) the same."""
    torch.manual_seed(0)
    model = EmptyBatchBlocks().double()
    lean = st.lean(copy.deepcopy(model))
    assert {"keeps no float tensor", "input kept as bits"} <= set(rewrites(lean)), str(st.lean_report(lean))
    x = torch.rand(3, 0, 2, 8, 8, dtype=torch.float64)
    grads = []
    for net in (model, lean):
        out = net(x)
        assert out.shape == (3, 0, 2)
        grads.append(torch.autograd.grad(out.sum(), list(net.parameters()), allow_unused=True))
    for a, e in zip(*grads, strict=True):
        assert (a is None) == (e is None) and (a is None or torch.equal(a, e) or (a.isnan().all() and e.isnan().all()))
