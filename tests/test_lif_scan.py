"""st.lif_scan against spikingjelly 0.0.0.0.14's LIFNode driven by the notebook's surrogates,
for the reference (CPU) and the Triton kernels (GPU, or the interpreter on a CPU)."""

import pytest
import torch
from helpers import BACKENDS, DEVICE, assert_grad_close, covering, forward_backward, gradcheck, requires_cuda
from oracles import spikingjelly_lif

import snn_triton as st

SHAPES = [(1, 1), (4, 7), (3, 2, 5, 5), (20, 2, 33), (8, 1100)]  # [T, ...]; 1100 spans two blocks
LIF_PARAMS = [
    dict(),
    dict(tau=3.0, v_threshold=0.5, v_reset=-0.2),
    dict(tau=1.5, v_threshold=1.2, v_reset=0.3),
    dict(tau=7.0, v_threshold=0.25, detach_reset=True),
    dict(v_reset=None),
    dict(tau=5.0, v_threshold=0.8, v_reset=None),
    dict(tau=3.0, v_reset=None, detach_reset=True),
]
# The seed's three against the notebook's formulas; spikingjelly's own surrogates and the other
# neurons are checked over the whole configuration grid in test_neurons.py.
SURROGATES = ["superspike", "sigmoid", "esser"]


def make_input(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2.0 + 0.6).to(dtype)


def params_id(params):
    return ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"


# Every value of each of the four, and every pair of values, instead of their product.
GRID = covering(dtype=[torch.float32, torch.float64], surrogate=SURROGATES, params=LIF_PARAMS, shape=SHAPES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype, surrogate, params, shape",
    GRID,
    ids=[f"{'x'.join(map(str, s))}-{params_id(p)}-{u}-{d}" for d, u, p, s in GRID],
)
def test_lif_scan_matches_spikingjelly(backend, dtype, surrogate, params, shape):
    x = make_input(shape, dtype)
    oracle = lambda x: spikingjelly_lif(x, surrogate=surrogate, **params)  # noqa: E731
    expected, _ = forward_backward(oracle, x)
    # Gradients against float64 math: the notebook's s * (1 - s) loses float32 precision where s
    # nears 1, so its float32 gradient is no oracle there.
    expected_f64, expected_grad = forward_backward(oracle, x.double())
    assert torch.equal(expected_f64.to(dtype), expected)
    actual, actual_grad = forward_backward(
        lambda x: st.lif_scan(x, surrogate=surrogate, backend=backend, **params), x.to(DEVICE[backend])
    )
    assert actual.dtype == dtype and actual.shape == x.shape
    assert torch.equal(actual, expected), "spikes differ from spikingjelly"
    if x.numel() >= 20:
        assert expected.sum() > 0, "the test input should make some neurons fire"
    assert_grad_close(actual_grad, expected_grad.to(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("beta", [0.5, 2.0, 25.0])
def test_lif_scan_beta_matches_spikingjelly(backend, surrogate, beta):
    x = make_input((6, 3, 40), torch.float64, seed=1)
    kw = dict(surrogate=surrogate, beta=beta, tau=2.5)
    expected, expected_grad = forward_backward(lambda x: spikingjelly_lif(x, **kw), x)
    actual, actual_grad = forward_backward(lambda x: st.lif_scan(x, backend=backend, **kw), x.to(DEVICE[backend]))
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "params",
    [
        dict(tau=2.0, v_threshold=1.0, v_reset=0.0),  # H[0] = (2 - 0) / 2 = 1.0 = v_threshold
        dict(tau=4.0, v_threshold=0.5, v_reset=-0.5),  # H[0] = -0.5 + (4 - 0) / 4 = 0.5
        dict(tau=2.0, v_threshold=1.0, v_reset=None),
    ],
    ids=["hard", "hard-vreset", "soft"],
)
def test_input_exactly_on_threshold_spikes(backend, dtype, params):
    # Every value here is exact in every dtype, so H lands exactly on the threshold.
    x = torch.tensor([[4.0 if params["tau"] == 4.0 else 2.0], [0.0]], dtype=dtype)
    out = st.lif_scan(x.to(DEVICE[backend]), backend=backend, **params).cpu()
    expected = spikingjelly_lif(x.double(), **params).to(dtype)
    assert out[0, 0] == 1, "H == v_threshold must fire (S = heaviside(H - v_threshold), >=)"
    assert torch.equal(out, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["transposed", "strided", "expanded_over_time", "expanded_over_neurons"])
def test_non_contiguous_input_gives_the_same_result(backend, layout):
    base = make_input((6, 5, 9), torch.float32, seed=2)
    x = {
        "transposed": lambda: make_input((6, 9, 5), torch.float32, seed=2).transpose(1, 2),
        "strided": lambda: make_input((6, 10, 9), torch.float32, seed=2)[:, ::2],
        "expanded_over_time": lambda: base[:1].expand(6, 5, 9),
        "expanded_over_neurons": lambda: base[:, :1].expand(6, 5, 9),
    }[layout]().to(DEVICE[backend])
    assert not x.is_contiguous()
    kw = dict(surrogate="sigmoid", tau=3.0)
    actual, actual_grad = forward_backward(lambda x: st.lif_scan(x, backend=backend, **kw), x)
    expected, expected_grad = forward_backward(lambda x: spikingjelly_lif(x, **kw), x.cpu().contiguous())
    assert torch.equal(actual, expected)
    assert_grad_close(actual_grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_input_shared_over_time(backend):
    """An image fed at every step: x [N] expanded to [T, N] is read in place, grads sum over T."""
    base = make_input((50,), torch.float64, seed=3).to(DEVICE[backend]).requires_grad_()
    st.lif_scan(base.expand(8, 50), backend=backend).sum().backward()
    repeated = base.detach().cpu().repeat(8, 1).requires_grad_()
    spikingjelly_lif(repeated).sum().backward()
    assert_grad_close(base.grad.cpu(), repeated.grad.sum(0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_matches_float32_on_the_same_values(backend, dtype):
    """Half inputs are computed in float32: spikes equal float32's on the rounded input."""
    x = make_input((8, 3, 70), dtype, seed=4).to(DEVICE[backend])
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(dtype).double()
    kw = dict(surrogate="superspike", tau=2.0, backend=backend)
    half, half_grad = forward_backward(lambda x: st.lif_scan(x, **kw), x, grad_out)
    full, full_grad = forward_backward(lambda x: st.lif_scan(x, **kw), x.float(), grad_out)
    assert half.dtype == dtype and half_grad.dtype == dtype
    assert torch.equal(half.float(), full)
    assert_grad_close(half_grad, full_grad.to(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "params",
    [dict(), dict(tau=3.0, v_reset=-0.2), dict(v_reset=None), dict(tau=4.0, v_reset=None)],
    ids=["hard", "hard-vreset", "soft", "soft-tau4"],
)
def test_gradcheck_where_spikes_are_locally_constant(backend, params):
    """Away from the threshold with Esser's surrogate at a large beta, h = 0 and S is locally
    constant, so the BPTT gradient must equal finite differences of the exact equations."""
    beta = 50.0  # h(x) = 0 for |x| >= 1/beta = 0.02
    lif = {"tau": 2.0, "v_threshold": 1.0, "v_reset": 0.0, **params}
    suitable = False
    for seed in range(100):  # an input whose H stays > 1/beta + eps from the threshold, and fires
        x = torch.rand((4, 2, 5), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4.0 - 0.5
        h = _membrane(x, **lif)
        if ((h - lif["v_threshold"]).abs() > 0.021).all() and (h >= lif["v_threshold"]).any():
            suitable = True
            break
    assert suitable, "no suitable input found"
    fn = lambda x: st.lif_scan(x, surrogate="esser", beta=beta, backend=backend, **params)  # noqa: E731
    assert gradcheck(fn, (x.to(DEVICE[backend]).requires_grad_(),), backend)


def _membrane(x_seq, tau, v_threshold, v_reset):
    """H[t] by the LIF equations (docs/design.md), in float64 (for choosing gradcheck points)."""
    v = torch.full_like(x_seq[0], v_reset or 0.0)
    hs = []
    for x in x_seq:
        h = v + (x - (v - (v_reset or 0.0))) / tau
        s = (h >= v_threshold).double()
        v = h * (1 - s) + v_reset * s if v_reset is not None else h - s * v_threshold
        hs.append(h)
    return torch.stack(hs)


@requires_cuda
def test_kernels_beyond_int32_offsets():
    """T * N > 2^31 elements: offsets must be 64-bit. Checks the last neurons against the CPU."""
    T, n = 3, (1 << 30) + 7
    x = torch.randn(n, device="cuda").mul_(2).add_(0.6).expand(T, n)
    x_seq = x.contiguous()
    del x
    x_seq.requires_grad_()
    s = st.lif_scan(x_seq, backend="triton")
    grad = torch.ones_like(s)
    (g,) = torch.autograd.grad(s, x_seq, grad)
    tail = slice(n - 3000, n)
    x_tail = x_seq.detach()[:, tail].cpu().requires_grad_()
    s_ref = spikingjelly_lif(x_tail)
    s_ref.backward(torch.ones_like(s_ref))
    assert torch.equal(s[:, tail].cpu(), s_ref)
    assert_grad_close(g[:, tail].cpu(), x_tail.grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_charge_divides_by_tau_exactly_as_spikingjelly(backend, dtype):
    """H = (X - V) / tau must be a true division, as in spikingjelly: for an input where X / tau
    and X * (1 / tau) round differently, a threshold between them decides which one was used."""
    tau = 3.0
    candidates = 1.0 + torch.arange(1, 4096, dtype=dtype) * torch.finfo(dtype).eps
    quotient, by_reciprocal = candidates / tau, candidates * (1.0 / tau)
    differ = quotient != by_reciprocal
    x_value, v_threshold = candidates[differ][0], torch.maximum(quotient, by_reciprocal)[differ][0].item()
    x = torch.stack([x_value, torch.zeros((), dtype=dtype)]).reshape(2, 1)
    expected = spikingjelly_lif(x, tau=tau, v_threshold=v_threshold)
    actual = st.lif_scan(x.to(DEVICE[backend]), tau=tau, v_threshold=v_threshold, backend=backend).cpu()
    assert expected[0, 0] == (quotient[differ][0] >= v_threshold)
    assert torch.equal(actual, expected)
