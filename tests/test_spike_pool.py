"""Max pooling of spikes kept as bits (ops.spike_max_pool2d, what st.lean puts in place of MaxPool2d fed
spikes): its backward, read from the bits alone by the reference and by the Triton kernel, against
torch's own max_pool2d and its backward in float64, bit for bit: windows of every kernel size, stride,
padding, dilation and ceil_mode, ties of zeros and of ones, odd sizes, both memory formats, [C, H, W].
Also the neuron that makes its pooling itself (ops.recomputed_neuron_scan with a pool, the fused form
st.lean makes of a neuron feeding a MaxPool2d): its kernels against its reference and against the plain
scan followed by F.max_pool2d."""

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, assert_grad_close, covering

from snn_triton import kernels, ops, reference
from snn_triton.checks import check_neuron_params

# (kernel_size, stride, padding, dilation, ceil_mode): the zoo's (2, 2, 0) and (3, 2, 1) first.
WINDOWS = {
    "k2s2": (2, 2, 0, 1, False),
    "k3s2p1": (3, 2, 1, 1, False),
    "k3s2p1-ceil": (3, 2, 1, 1, True),
    "k2s1": (2, 1, 0, 1, False),  # overlapping windows: a cell sums several windows' gradients
    "k3s2p1d2": (3, 2, 1, 2, False),
    "k2x3-s1x2-p1-d2x1-ceil": ((2, 3), (1, 2), (1, 1), (2, 1), True),
    "k3s3-ceil": (3, 3, 0, 1, True),  # the last windows run past the input
    "k1s2": (1, 2, 0, 1, False),
    "k4s3p2": (4, 3, 2, 1, False),
}
# the density of spikes: 0 and 1 make every window a tie (of zeros, of ones)
CASES = covering(
    window=list(WINDOWS),
    size=[(7, 9), (8, 8), (6, 5)],
    layout=["nchw", "channels_last", "chw"],
    density=[0.0, 0.3, 1.0],
)


def spikes(size, layout, density, seed=0, dtype=torch.float64):
    shape = (3, *size) if layout == "chw" else (2, 3, *size)
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < density).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def gradient(seed, shape, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def pool_and_grad(pool, x, g_seed=1):
    """(pool(x), dL/dx) for L = <pool(x), g>, g random, one value of it +inf (routed to one cell only)."""
    leaf = x.detach().clone().requires_grad_()
    out = pool(leaf)
    g = gradient(g_seed, out.shape, out.dtype).to(out.device)
    g.view(-1)[0] = float("inf")
    (grad,) = torch.autograd.grad(out, leaf, g)
    return out, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, (c[0], "x".join(map(str, c[1])), *c[2:]))))
def test_gradient_from_bits_is_max_pool2ds(backend, case):
    """The pooled spikes and the gradient, bit for bit torch's max_pool2d's (float64), in x's layout."""
    window, size, layout, density = case
    args = WINDOWS[window]
    x = spikes(size, layout, density, seed=CASES.index(case))
    out, grad = pool_and_grad(lambda t: ops.spike_max_pool2d(t, *args, backend=backend), x.to(DEVICE[backend]))
    expected_out, expected = pool_and_grad(lambda t: F.max_pool2d(t, *args), x)
    assert torch.equal(out.cpu(), expected_out)
    assert torch.equal(grad.cpu(), expected), f"{int((grad.cpu() != expected).sum())} of {grad.numel()} differ"
    if layout == "channels_last":
        assert grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("window", ["k2s2", "k3s2p1", "k2s1"])
def test_gradient_in_other_dtypes(backend, dtype, window):
    """float32 and the half types: the float64 gradient rounded (sums of several in the compute dtype)."""
    args = WINDOWS[window]
    x = spikes((7, 8), "channels_last", 0.4, seed=3, dtype=dtype)
    out, grad = pool_and_grad(lambda t: ops.spike_max_pool2d(t, *args, backend=backend), x.to(DEVICE[backend]))
    expected_out, expected = pool_and_grad(lambda t: F.max_pool2d(t, *args), x.double())
    assert out.dtype == grad.dtype == dtype
    assert torch.equal(out.cpu().double(), expected_out)
    finite = expected.isfinite()
    assert torch.equal(grad.cpu().isfinite(), finite)
    assert_grad_close(grad.cpu()[finite], expected[finite].to(dtype))


@pytest.mark.parametrize("implementation", ["reference", "kernel"])
def test_reference_and_kernel_route_the_same_from_the_same_bits(implementation):
    """Called on their own: the reference on the unpacked spikes, the kernel on the bits packed in a
    memory order that is neither NCHW nor channels-last ([C, N, H, W] in memory)."""
    x = spikes((9, 7), "nchw", 0.5, seed=5).permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    args = WINDOWS["k3s2p1"]
    _, expected = pool_and_grad(lambda t: F.max_pool2d(t, *args), x)
    g = gradient(1, F.max_pool2d(x, *args[:4]).shape)
    g.view(-1)[0] = float("inf")
    sizes = [(v, v) if isinstance(v, int) else v for v in args[:4]]
    if implementation == "reference":
        grad = reference.spike_max_pool2d_backward(g, x.to(torch.int8), *sizes)
    else:
        order = ops.dense_order(x)
        assert order == [1, 0, 2, 3]
        bits, _ = kernels.pack_bits(x.permute(order).contiguous().to(DEVICE["triton"]))
        grad = kernels.spike_max_pool2d_backward(g.to(bits.device), bits, list(x.shape), order, *sizes).cpu()
    assert torch.equal(grad, expected)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "chw"])
def test_kernel_forward_pools_and_packs_in_one_pass(layout):
    """The kernels' forward: max_pool2d's output (values and strides) and the bits save_spikes keeps."""
    x = spikes((7, 6), layout, 0.5, seed=7, dtype=torch.float32).to(DEVICE["triton"])
    order = ops.dense_order(x)
    out, bits, binary = kernels.spike_max_pool2d_forward(x, order, (3, 3), (2, 2), (1, 1), (1, 1), True)
    expected = F.max_pool2d(x.cpu(), 3, 2, 1, ceil_mode=True)
    assert torch.equal(out.cpu(), expected) and out.stride() == expected.stride()
    assert torch.equal(bits, ops.save_spikes(x, "torch")[0].to(bits.device)) and bool(binary)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_that_is_not_spikes_fails(backend):
    """Bits hold only 0 and 1: anything else fails (on a GPU, device-side), in either forward."""
    x = torch.full((1, 2, 4, 4), 0.5, device=DEVICE[backend], requires_grad=True)
    with pytest.raises(RuntimeError, match="must be spikes, every value 0 or 1"):
        ops.spike_max_pool2d(x, 2, None, 0, 1, False, backend=backend)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(kernel_size=0), ValueError, "kernel_size must be at least 1"),
        (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a pair"),
        (dict(kernel_size=2.0), TypeError, "kernel_size must be an int or a pair"),
        (dict(stride=-1), ValueError, "stride must be at least 1"),
        (dict(padding=-1), ValueError, "padding must be at least 0"),
        (dict(padding=2), ValueError, "padding must be at most half of kernel_size"),
        (dict(dilation=0), ValueError, "dilation must be at least 1"),
        (dict(kernel_size=9), ValueError, "x's height 5 .* is less than one window"),
        (dict(x=torch.zeros(5, 5)), ValueError, r"x must be \[N, C, H, W\] or \[C, H, W\]"),
        (dict(x=torch.zeros(1, 1, 5, 5, dtype=torch.int64)), TypeError, "x must have a floating-point dtype"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(x=torch.zeros(1, 2, 5, 6, requires_grad=True), kernel_size=3, stride=2, padding=1, dilation=1)
    args |= kwargs
    with pytest.raises(error, match=match):
        ops.spike_max_pool2d(args.pop("x"), **args, ceil_mode=False)


def test_compiled_lean_pool_has_no_graph_break_and_the_same_gradient():
    """A MaxPool2d fed spikes, rewritten by st.lean: dynamo traces its forward in one graph, and
    torch.compile (aot_eager: the backward op traced too) gives max_pool2d's gradient (on torch < 2.13,
    where the compiled lean layers compute as the layers they replace, max_pool2d's own)."""
    import snn_triton as st
    from snn_triton.lean import LeanMaxPool2d

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), st.IF(), torch.nn.MaxPool2d(3, 2, 1), torch.nn.Flatten())
    plain = torch.nn.Sequential(*[m for m in model])
    x = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    expected = torch.autograd.grad(plain(x).square().sum(), plain[0].weight)[0]
    st.lean(model)
    assert isinstance(model[2], LeanMaxPool2d)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    (grad,) = torch.autograd.grad(compiled(x).square().sum(), model[0].weight)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)


# ---- the neuron that makes its pooling itself -------------------------------------------------------

FUSED_CASES = covering(
    window=list(WINDOWS),
    layout=["nchw", "channels_last"],
    dtype=[torch.float32, torch.float64],
    outputs=["pooled", "both"],
)
LIF = check_neuron_params("lif", tau=2.0, v_threshold=0.4, v_reset=0.0, surrogate="atan", beta=None, detach_reset=False)


def steps_of_maps(size, layout, dtype, seed):
    """A neuron's input [T, N, C, H, W], each step NCHW or channels-last; ties of zeros and of ones."""
    x = torch.rand((2 * 2, 2, *size), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.reshape(2, 2, 2, *size)


def fused_and_grad(run, x_seq, outputs, seed=2):
    """(spikes, pooled, dL/dx_seq) for L = <pooled, g> (+ <spikes, g'> with outputs "both"), g random with
    one +inf (routed to one cell only)."""
    leaf = x_seq.detach().clone().requires_grad_()
    spikes, pooled = run(leaf)
    g = gradient(seed, pooled.shape, pooled.dtype)
    g.view(-1)[0] = float("inf")
    if outputs == "both":
        grads = torch.autograd.grad((spikes, pooled), leaf, (gradient(seed + 1, spikes.shape, spikes.dtype), g))
    else:
        grads = torch.autograd.grad(pooled, leaf, g)
    return spikes, pooled, grads[0]


def fused(pool, backend):
    def run(x_seq):
        return ops.recomputed_neuron_scan(x_seq, x_seq.detach(), lambda s: s, LIF, backend=backend, pool=pool)

    return run


def plain(pool):
    """The scan, then F.max_pool2d of its spikes: what the fused form replaces."""

    def run(x_seq):
        spikes = ops.neuron_scan(x_seq, LIF, backend="torch")
        maps = spikes.reshape(-1, *spikes.shape[-3:])
        pooled = F.max_pool2d(maps, *pool)
        return spikes, pooled.reshape(*spikes.shape[:2], *pooled.shape[-3:])

    return run


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: "-".join(map(str, c)).replace("torch.", ""))
def test_fused_pool_kernels_compute_what_the_scan_and_max_pool2d_do(case):
    """The kernels (the pooling, nothing packed; the routing from the recomputed float spikes) against
    the fused form's reference and against the plain scan and F.max_pool2d, in float32 and float64, in
    each step's memory format: spikes and pooled spikes bit for bit, dL/dx to rounding (the reference's
    backward step adds its products with addcmul, the kernels with a multiply and an add; the routing
    itself is bit for bit, test_kernel_routes_from_float_spikes_as_from_their_bits). The fused form's
    reference is the plain scan and max_pool2d bit for bit, dL/dx included."""
    window, layout, dtype, outputs = case
    kernel, stride, padding, dilation, ceil_mode = WINDOWS[window]
    pool = (*(p if isinstance(p, tuple) else (p, p) for p in (kernel, stride, padding, dilation)), ceil_mode)
    x_seq = steps_of_maps((7, 9), layout, dtype, seed=FUSED_CASES.index(case))
    spikes, pooled, grad = fused_and_grad(fused(pool, "triton"), x_seq.to(DEVICE["triton"]), outputs)
    reference = fused_and_grad(fused(pool, "torch"), x_seq, outputs)
    for actual, e in zip(reference, fused_and_grad(plain(pool), x_seq, outputs), strict=True):
        assert torch.equal(actual, e), f"{int((actual != e).sum())} of {e.numel()} differ"
    for actual, e in zip((spikes, pooled), reference[:2], strict=True):
        assert torch.equal(actual.cpu(), e), f"{int((actual.cpu() != e).sum())} of {e.numel()} differ"
    finite = reference[2].isfinite()  # the gradient's inf, routed, and what it makes where it meets a 0
    assert torch.equal(grad.cpu().isfinite(), finite)
    torch.testing.assert_close(grad.cpu()[~finite], reference[2][~finite], rtol=0, atol=0, equal_nan=True)
    assert_grad_close(grad.cpu()[finite], reference[2][finite])
    assert 0 < spikes.mean() < 1, "the test input should make ties of ones and of zeros"
    maps = spikes.reshape(-1, *spikes.shape[-3:])  # the pooling laid out as max_pool2d lays it out: no copy
    assert pooled.reshape(-1, *pooled.shape[-3:]).stride() == F.max_pool2d(maps, *pool).stride()


def test_kernel_routes_from_float_spikes_as_from_their_bits():
    """The backward kernel given the float spikes of a strided view (neither NCHW nor channels-last, read
    through its strides) routes as from their bits: max_pool2d's gradient, bit for bit."""
    x = spikes((9, 7), "nchw", 0.5, seed=5).permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    args = WINDOWS["k3s2p1"]
    _, expected = pool_and_grad(lambda t: F.max_pool2d(t, *args), x)
    g = gradient(1, F.max_pool2d(x, *args[:4]).shape)
    g.view(-1)[0] = float("inf")
    sizes = [(v, v) for v in args[:4]]
    device = DEVICE["triton"]
    grad = kernels.spike_max_pool2d_backward(g.to(device), x.to(device), list(x.shape), [0, 1, 2, 3], *sizes)
    assert torch.equal(grad.cpu(), expected)


def test_kernel_forward_without_packing_pools_alone():
    """pack=False: the pooled spikes as with packing, no bits written."""
    x = spikes((7, 6), "channels_last", 0.5, seed=7, dtype=torch.float32).to(DEVICE["triton"])
    order = ops.dense_order(x)
    args = (order, (3, 3), (2, 2), (1, 1), (1, 1), True)
    out, bits, binary = kernels.spike_max_pool2d_forward(x, *args, False)
    assert torch.equal(out.cpu(), F.max_pool2d(x.cpu(), 3, 2, 1, ceil_mode=True))
    assert out.stride() == kernels.spike_max_pool2d_forward(x, *args)[0].stride()
    assert bits.numel() == 0 and bool(binary)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("window", ["k3s2p1", "k2s1"])
def test_fused_pool_routing_in_half_types(dtype, window):
    """The routing kernel in the half types, where windows overlap: each cell's sum in float32, rounded
    once, is the float64 routing rounded (CPU max_pool2d's backward in a half type rounds each sum)."""
    kernel, stride, padding, dilation, ceil_mode = WINDOWS[window]
    pool = (*((v, v) for v in (kernel, stride, padding, dilation)), ceil_mode)
    s = (steps_of_maps((7, 9), "channels_last", torch.float64, seed=4) < 0.4).to(dtype)
    g = gradient(5, reference.max_pool_spikes(s.double(), pool).shape)
    routed = ops.route_to_max(g.to(dtype).to(DEVICE["triton"]), s.to(DEVICE["triton"]), pool, True)
    expected = reference.route_to_max(g.to(dtype).double(), s.double(), pool)
    assert routed.dtype == dtype
    assert_grad_close(routed.cpu(), expected.to(dtype))
