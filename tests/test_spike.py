"""st.spike and st.Spike against the notebook's surrogate formulas and spikingjelly's own
surrogates (Sigmoid, ATan, SoftSign, ...) in float64."""

import pytest
import torch
from helpers import BACKENDS, DEVICE, assert_grad_close, covering, forward_backward
from oracles import oracle_spike

import snn_triton as st

# Every dtype, surrogate, beta and shape, and every pair of them, instead of their product.
GRID = covering(
    dtype=[torch.float16, torch.bfloat16, torch.float32, torch.float64],
    surrogate=list(st.SURROGATES),
    beta=[None, 0.7, 3.0],
    shape=[(), (1,), (7, 3), (2, 3, 1030)],
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, surrogate, beta, shape", GRID, ids=[f"{s}-{b}-{u}-{d}" for d, u, b, s in GRID])
def test_spike_matches_oracle_formula(backend, dtype, surrogate, beta, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64).mul(1.5).to(dtype)
    x.view(-1)[:2] = torch.tensor([0.0, -0.0], dtype=dtype)[: x.numel()]  # x = +-0 must fire
    expected, expected_grad = forward_backward(lambda x: oracle_spike(x, surrogate, beta), x.double())
    actual, actual_grad = forward_backward(
        lambda x: st.spike(x, surrogate, beta, backend=backend), x.to(DEVICE[backend])
    )
    assert actual.dtype == dtype and actual.shape == x.shape
    assert torch.equal(actual.double(), expected)
    assert_grad_close(actual_grad, expected_grad.to(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_spike_non_contiguous(backend):
    x = torch.randn(9, 6, dtype=torch.float64).to(DEVICE[backend]).t()[::2]
    actual, actual_grad = forward_backward(lambda x: st.spike(x, "sigmoid", backend=backend), x)
    expected, expected_grad = forward_backward(lambda x: oracle_spike(x, "sigmoid"), x.cpu().contiguous())
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


def test_spike_module_is_the_function():
    x = torch.randn(4, 5, dtype=torch.float64)
    layer = st.Spike("esser", beta=2.0)
    assert torch.equal(layer(x), st.spike(x, "esser", 2.0))
    assert "esser" in repr(layer) and "2.0" in repr(layer)


def test_surrogates_table():
    """The seed's three with their defaults, and spikingjelly's one-parameter surrogates with theirs."""
    assert st.SURROGATES == {
        "superspike": 10.0,
        "sigmoid": 4.0,
        "esser": 1.0,
        "spikingjelly_sigmoid": 4.0,
        "atan": 2.0,
        "soft_sign": 2.0,
        "piecewise_quadratic": 1.0,
        "piecewise_exp": 1.0,
        "erf": 2.0,
        "nonzero_sign_log_abs": 1.0,
        "spikingjelly_superspike": 1.0,
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", list(st.SURROGATES))
def test_a_nan_input_gives_a_nan_gradient(backend, surrogate):
    """NaN does not fire, and its gradient is NaN as the oracle's (a clamp or maximum that dropped
    it would hide a diverged run behind a zero gradient)."""
    x = torch.tensor([float("nan"), 0.3, -0.2, 5.0], dtype=torch.float64)
    expected, expected_grad = forward_backward(lambda x: oracle_spike(x, surrogate), x)
    actual, actual_grad = forward_backward(lambda x: st.spike(x, surrogate, backend=backend), x.to(DEVICE[backend]))
    assert torch.equal(actual, expected) and actual[0] == 0
    assert actual_grad[0].isnan() and expected_grad[0].isnan()
    torch.testing.assert_close(actual_grad, expected_grad, equal_nan=True, rtol=1e-12, atol=1e-12)
