"""The surrogate registry: spikingjelly's surrogates are built in; a user's surrogate, added with a
PyTorch formula and a triton.jit device function (or the formula alone), runs on both backends and
agrees with an oracle written here, independently of snn_triton."""

import math

import pytest
import torch
import triton
import triton.language as tl
from helpers import BACKENDS, DEVICE, assert_grad_close, forward_backward
from oracles import spikingjelly_neuron

import snn_triton as st


def gaussian_torch(x, beta):
    return beta / math.sqrt(2 * math.pi) * torch.exp(-0.5 * (beta * x) ** 2)


@triton.jit
def gaussian_triton(x, beta):
    return beta * 0.3989422804014327 * tl.exp(-0.5 * (beta * x) * (beta * x))


class GaussianSpike(torch.autograd.Function):
    """The oracle: heaviside forward, a Gaussian surrogate backward, as a user would write it."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.beta / math.sqrt(2 * math.pi) * torch.exp(-0.5 * (ctx.beta * x) ** 2), None


class GaussianSurrogate(torch.nn.Module):
    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return GaussianSpike.apply(x, self.beta)


@pytest.fixture(params=["kernel", "formula-only"])
def user_surrogate(request):
    """A user's surrogate, registered for the test and removed after it."""
    name = f"gaussian-{request.param}"
    st.register_surrogate(
        name, gaussian_torch, default_beta=3.0, kernel=gaussian_triton if request.param == "kernel" else None
    )
    yield name
    st.unregister_surrogate(name)
    assert name not in st.SURROGATES


@pytest.mark.parametrize("backend", BACKENDS)
def test_user_surrogate_in_the_lif_scan(backend, user_surrogate):
    x = torch.randn(6, 3, 41, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5 + 0.5
    node = spikingjelly_neuron("lif", tau=3.0, v_reset=None)
    node.surrogate_function = GaussianSurrogate(3.0)
    expected, expected_grad = forward_backward(node, x)
    actual, actual_grad = forward_backward(
        lambda x: st.lif_scan(x, tau=3.0, v_reset=None, surrogate=user_surrogate, backend=backend),
        x.to(DEVICE[backend]),
    )
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta", [None, 0.8])
def test_user_surrogate_in_the_spike(backend, user_surrogate, beta):
    x = torch.randn(3, 700, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected, expected_grad = forward_backward(GaussianSurrogate(3.0 if beta is None else beta), x)
    actual, actual_grad = forward_backward(
        lambda x: st.spike(x, user_surrogate, beta, backend=backend), x.to(DEVICE[backend])
    )
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


def test_user_surrogate_is_listed_with_its_default_beta(user_surrogate):
    assert st.SURROGATES[user_surrogate] == 3.0
    assert st.LIF(surrogate=user_surrogate).params.beta == 3.0


def test_a_kernel_that_is_not_a_triton_function_is_a_type_error():
    with pytest.raises(TypeError, match="kernel must be a @triton.jit"):
        st.register_surrogate("bad", gaussian_torch, default_beta=1.0, kernel=gaussian_torch)
    assert "bad" not in st.SURROGATES


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(name="superspike"), ValueError, "built-in"),
        (dict(name=""), TypeError, "name"),
        (dict(grad="exp"), TypeError, "grad"),
        (dict(default_beta=0.0), ValueError, "default_beta"),
        (dict(default_beta="1"), TypeError, "default_beta"),
    ],
)
def test_bad_registrations(kwargs, error, match):
    args = {**dict(name="mine", grad=gaussian_torch, default_beta=1.0), **kwargs}
    with pytest.raises(error, match=match):
        st.register_surrogate(args.pop("name"), args.pop("grad"), **args)
    assert "mine" not in st.SURROGATES


def test_unknown_surrogate_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"surrogate must be one of \[.*'atan'.*'superspike'.*\], got 'relu'"):
        st.lif_scan(torch.zeros(2, 3), surrogate="relu")
    with pytest.raises(ValueError, match="cannot be removed"):
        st.unregister_surrogate("atan")
