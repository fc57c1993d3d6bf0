"""st.BasicCSNN against the seed notebook's network (spikingjelly 0.0.0.0.14, single-step, called T
times): same state_dict keys, same logits and gradients in float64."""

import pytest
import torch
from helpers import DEVICE
from seed_notebook import SeedNet

import snn_triton as st

SEED_KEYS = [
    "net.0.weight",
    "net.0.bias",
    "net.3.weight",
    "net.3.bias",
    "net.7.weight",
    "net.7.bias",
    "net.9.weight",
    "net.9.bias",
]


def notebook_and_ours(backend="auto", **shape):
    """The notebook's net, and a BasicCSNN that loaded its weights strictly (float64). The weights
    are scaled up from their initial values so that every LIF layer fires on random input."""
    torch.manual_seed(0)
    notebook = SeedNet(**shape).double()
    with torch.no_grad():
        for p in notebook.parameters():
            p.mul_(4.0)
    ours = st.BasicCSNN(**shape, backend=backend).double()
    ours.load_state_dict(notebook.state_dict(), strict=True)
    return notebook, ours


def logits_and_grads(net, x, y):
    net.zero_grad()
    logits = net(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    return logits.detach().cpu(), {k: p.grad.cpu() for k, p in net.named_parameters()}


SEED_SHAPE = dict(T=8, in_channels=3, num_classes=10, image_size=32)  # the seed experiment (CIFAR-10)
SMALL_SHAPE = dict(T=3, in_channels=1, num_classes=5, image_size=12)


# The full-size network on the reference; the kernels (slow under Triton's interpreter) on the small one.
@pytest.mark.parametrize(
    "backend,shape",
    [("torch", SEED_SHAPE), ("torch", SMALL_SHAPE), ("triton", SMALL_SHAPE)],
    ids=["reference-seed", "reference-small", "kernels-small"],
)
@pytest.mark.parametrize("surrogate,beta", [("superspike", None), ("sigmoid", None), ("esser", 2.0)])
def test_basic_csnn_matches_the_notebook(backend, shape, surrogate, beta):
    notebook, ours = notebook_and_ours(backend, surrogate=surrogate, beta=beta, **shape)
    g = torch.Generator().manual_seed(1)
    n = 6
    x = torch.randn(n, shape["in_channels"], shape["image_size"], shape["image_size"], generator=g, dtype=torch.float64)
    x = x * 3.0  # strong enough input that every LIF layer fires
    y = torch.randint(0, shape["num_classes"], (n,), generator=g)

    expected_logits, expected_grads = logits_and_grads(notebook, x, y)
    notebook.reset()
    ours.to(DEVICE[backend])
    logits, grads = logits_and_grads(ours, x.to(DEVICE[backend]), y.to(DEVICE[backend]))

    torch.testing.assert_close(logits, expected_logits, rtol=1e-9, atol=1e-9)
    assert list(grads) == SEED_KEYS
    for key in SEED_KEYS:
        assert expected_grads[key].abs().sum() > 0, f"{key}: the test should reach every layer"
        torch.testing.assert_close(grads[key], expected_grads[key], rtol=1e-9, atol=1e-9, msg=key)


def test_weights_move_both_ways():
    notebook, ours = notebook_and_ours()
    assert list(ours.state_dict()) == SEED_KEYS
    SeedNet().double().load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(ours(x), ours(x)), "no state is kept between calls"


def test_fashion_mnist_shape():
    net = st.BasicCSNN(in_channels=1, image_size=28)
    assert net.net[7].in_features == 64 * 7 * 7
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_compiles_with_no_graph_breaks():
    torch._dynamo.reset()
    net = st.BasicCSNN(T=2, image_size=8)
    assert torch._dynamo.explain(net)(torch.randn(2, 3, 8, 8)).graph_break_count == 0


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(T=0), ValueError, "T"),
        (dict(T=2.0), TypeError, "T"),
        (dict(surrogate="relu"), ValueError, "surrogate"),
        (dict(beta=-1.0), ValueError, "beta"),
        (dict(in_channels=0), ValueError, "in_channels"),
        (dict(num_classes=0), ValueError, "num_classes"),
        (dict(image_size=3), ValueError, "image_size"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        st.BasicCSNN(**kwargs)


@pytest.mark.parametrize(
    "x,error",
    [
        (torch.randn(2, 1, 32, 32), ValueError),
        (torch.randn(3, 32, 32), ValueError),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), TypeError),
    ],
)
def test_bad_input_is_named(x, error):
    with pytest.raises(error, match="x"):
        st.BasicCSNN()(x)


def test_input_on_another_device_than_the_weights_is_named():
    model = st.BasicCSNN(T=2, image_size=8).to("meta")  # a second device without a GPU
    with pytest.raises(ValueError, match="x is on cpu"):
        model(torch.zeros(1, 3, 8, 8))
