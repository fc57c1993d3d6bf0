"""Property tests: the Triton kernels agree with the reference over random shapes and parameters."""

import math

import torch
from helpers import DEVICE, assert_grad_close, forward_backward
from hypothesis import given, settings
from hypothesis import strategies as hs

import snn_triton as st

lif_params = hs.fixed_dictionaries(
    {
        "tau": hs.floats(1.05, 12.0),
        "v_threshold": hs.floats(-0.5, 2.0),
        "v_reset": hs.none() | hs.floats(-1.0, 0.9),
        "surrogate": hs.sampled_from(list(st.SURROGATES)),
        "beta": hs.none() | hs.floats(0.1, 30.0),
        "detach_reset": hs.booleans(),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    T=hs.integers(1, 16),
    # up to 4096 neurons: several programs of every block size (256 to 1024), in the interpreter's seconds
    neurons=hs.lists(hs.integers(1, 40), min_size=0, max_size=3).filter(lambda n: math.prod(n) <= 4096),
    dtype=hs.sampled_from([torch.float32, torch.float64]),
    params=lif_params,
    seed=hs.integers(0, 2**16),
)
def test_lif_kernels_agree_with_reference(T, neurons, dtype, params, seed):
    x = torch.randn([T, *neurons], generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 + 0.5
    expected, expected_grad = forward_backward(lambda x: st.lif_scan(x, backend="torch", **params), x, seed=seed)
    actual, actual_grad = forward_backward(
        lambda x: st.lif_scan(x, backend="triton", **params), x.to(DEVICE["triton"]), seed=seed
    )
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


@settings(max_examples=40, deadline=None)
@given(
    shape=hs.lists(hs.integers(1, 50), min_size=0, max_size=3),
    surrogate=hs.sampled_from(list(st.SURROGATES)),
    beta=hs.none() | hs.floats(0.1, 30.0),
    seed=hs.integers(0, 2**16),
)
def test_spike_kernels_agree_with_reference(shape, surrogate, beta, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    expected, expected_grad = forward_backward(lambda x: st.spike(x, surrogate, beta, backend="torch"), x, seed=seed)
    actual, actual_grad = forward_backward(
        lambda x: st.spike(x, surrogate, beta, backend="triton"), x.to(DEVICE["triton"]), seed=seed
    )
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)
