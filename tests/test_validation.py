"""Bad input fails in Python with a ValueError/TypeError that names the argument."""
import pytest
import torch

import snn_triton as st

X_SEQ = torch.zeros(4, 3)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(surrogate="relu"), ValueError, "surrogate"),
    (dict(surrogate=None), ValueError, "surrogate"),
    (dict(beta=0.0), ValueError, "beta"),
    (dict(beta=-1.0), ValueError, "beta"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(beta="4"), TypeError, "beta"),
    (dict(tau=0.0), ValueError, "tau"),
    (dict(tau=-2.0), ValueError, "tau"),
    (dict(tau=float("inf")), ValueError, "tau"),
    (dict(tau=None), TypeError, "tau"),
    (dict(v_threshold=float("nan")), ValueError, "v_threshold"),
    (dict(v_threshold="1"), TypeError, "v_threshold"),
    (dict(v_reset=float("inf")), ValueError, "v_reset"),
    (dict(detach_reset=1), TypeError, "detach_reset"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(backend=None), ValueError, "backend"),
])
def test_bad_lif_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        st.lif_scan(X_SEQ, **kwargs)
    with pytest.raises(error, match=name):
        st.LIF(**kwargs)


@pytest.mark.parametrize("x, error, match", [
    (torch.tensor(1.0), ValueError, "x_seq.*at least 1 dims"),
    (torch.zeros(0, 3), ValueError, "x_seq.*T >= 1"),
    (torch.zeros(4, 3, dtype=torch.int64), TypeError, "x_seq.*floating-point"),
    (torch.zeros(4, 3, dtype=torch.bool), TypeError, "x_seq.*floating-point"),
    (1.5, TypeError, "x_seq.*torch.Tensor"),
    ([[1.0]], TypeError, "x_seq.*torch.Tensor"),
])
def test_bad_lif_input(x, error, match):
    with pytest.raises(error, match=match):
        st.lif_scan(x)
    with pytest.raises(error, match=match):
        st.LIF()(x)


@pytest.mark.parametrize("args, kwargs, error, name", [
    ((torch.zeros(3, dtype=torch.int32),), {}, TypeError, "x"),
    ((2.0,), {}, TypeError, "x"),
    ((torch.zeros(3), "heaviside"), {}, ValueError, "surrogate"),
    ((torch.zeros(3), "sigmoid", 0), {}, ValueError, "beta"),
    ((torch.zeros(3),), dict(backend="jax"), ValueError, "backend"),
])
def test_bad_spike_arguments(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        st.spike(*args, **kwargs)


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    from snn_triton import ops
    monkeypatch.setattr(ops.kernels, "INTERPRETED", False)
    with pytest.raises(ValueError, match="backend='triton'.*TRITON_INTERPRET=1"):
        st.lif_scan(X_SEQ, backend="triton")
    with pytest.raises(ValueError, match="backend='triton'.*TRITON_INTERPRET=1"):
        st.spike(X_SEQ, backend="triton")


def test_empty_neuron_dims_are_fine():
    for backend in ("torch", "triton"):
        assert st.lif_scan(torch.zeros(3, 0), backend=backend).shape == (3, 0)
        assert st.spike(torch.zeros(0), backend=backend).shape == (0,)
