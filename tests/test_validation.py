"""Bad input fails in Python with a ValueError/TypeError that names the argument."""

import pytest
import torch

import snn_triton as st

X_SEQ = torch.zeros(4, 3)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
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
    ],
)
def test_bad_lif_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        st.lif_scan(X_SEQ, **kwargs)
    with pytest.raises(error, match=name):
        st.LIF(**kwargs)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.tensor(1.0), ValueError, "x_seq.*at least 1 dims"),
        (torch.zeros(0, 3), ValueError, "x_seq.*T >= 1"),
        (torch.zeros(4, 3, dtype=torch.int64), TypeError, "x_seq.*floating-point"),
        (torch.zeros(4, 3, dtype=torch.bool), TypeError, "x_seq.*floating-point"),
        (1.5, TypeError, "x_seq.*torch.Tensor"),
        ([[1.0]], TypeError, "x_seq.*torch.Tensor"),
    ],
)
def test_bad_lif_input(x, error, match):
    with pytest.raises(error, match=match):
        st.lif_scan(x)
    with pytest.raises(error, match=match):
        st.LIF()(x)


@pytest.mark.parametrize(
    "args, kwargs, error, name",
    [
        ((torch.zeros(3, dtype=torch.int32),), {}, TypeError, "x"),
        ((2.0,), {}, TypeError, "x"),
        ((torch.zeros(3), "heaviside"), {}, ValueError, "surrogate"),
        ((torch.zeros(3), "sigmoid", 0), {}, ValueError, "beta"),
        ((torch.zeros(3),), dict(backend="jax"), ValueError, "backend"),
    ],
)
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


@pytest.mark.parametrize(
    "v_init, error, match",
    [
        (torch.zeros(4, 3), ValueError, r"v_init must have one step's shape \(3,\)"),
        (torch.zeros(1, 3), ValueError, r"v_init must have one step's shape"),
        (torch.zeros(3, dtype=torch.float64), ValueError, "v_init must have dtype torch.float32"),
        (torch.zeros(3, dtype=torch.int64), ValueError, "v_init must have dtype"),
        (torch.zeros(3, device="meta"), ValueError, "v_init is on meta"),
        ([0.0, 0.0, 0.0], TypeError, "v_init must be a torch.Tensor"),
    ],
)
def test_bad_initial_potential(v_init, error, match):
    for scan in (st.lif_scan, st.if_scan):
        with pytest.raises(error, match=match):
            scan(X_SEQ, v_init=v_init)
    with pytest.raises(error, match=match):
        st.plif_scan(X_SEQ, torch.tensor(0.0), v_init=v_init)


def test_half_input_takes_a_float32_initial_potential():
    x = X_SEQ.to(torch.bfloat16)
    for dtype in (torch.bfloat16, torch.float32):
        spikes, v = st.lif_scan(x, v_init=torch.zeros(3, dtype=dtype), return_v=True)
        assert spikes.dtype == torch.bfloat16 and v.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(init_tau=1.0), ValueError, "init_tau must be > 1"),
        (dict(init_tau=0.5), ValueError, "init_tau must be > 1"),
        (dict(init_tau="2"), TypeError, "init_tau"),
        (dict(decay_input=1), TypeError, "decay_input"),
        (dict(step_mode="multi"), ValueError, "step_mode"),
        (dict(stateful="yes"), TypeError, "stateful"),
        (dict(surrogate="relu"), ValueError, "surrogate"),
    ],
)
def test_bad_plif_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        st.PLIF(**kwargs)


@pytest.mark.parametrize(
    "w, error, match",
    [
        (torch.zeros(2), ValueError, "w must have one element"),
        (torch.zeros((), dtype=torch.int64), TypeError, "w must have a floating-point dtype"),
        (0.5, TypeError, "w must be a torch.Tensor"),
        (torch.zeros((), device="meta"), ValueError, "w is on meta"),
    ],
)
def test_bad_plif_weight(w, error, match):
    with pytest.raises(error, match=match):
        st.plif_scan(X_SEQ, w)


def test_bad_return_v_and_single_step_input():
    with pytest.raises(TypeError, match="return_v"):
        st.lif_scan(X_SEQ, return_v=1)
    with pytest.raises(ValueError, match=r"x must have at least 1 dims \(\[N, ...\] in step_mode 's'\)"):
        st.IF(step_mode="s")(torch.tensor(1.0))
    for stateful in (True, False):  # multi-step: refused before the kept potential is made from its shape
        with pytest.raises(TypeError, match="^x_seq must be a torch.Tensor, got list"):
            st.LIF(step_mode="m", stateful=stateful)([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"v kept from the last call has shape \(5, 3\).*call reset\(\)"):
        layer = st.LIF(stateful=True)
        layer(torch.zeros(2, 5, 3))
        layer(torch.zeros(2, 4, 3))  # another batch size without reset(): the kept V does not fit
