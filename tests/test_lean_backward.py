"""The forms that keep less for backward, against what they replace: the static-input scan against
spikingjelly's LIFNode / IFNode fed the same input at every step, the pooled scans against
spikingjelly followed by torch's own max_pool2d (its routing of the gradient, ties of zeros
included, both memory formats, odd sizes), SpikeConv2d / SpikeLinear against nn.Conv2d / nn.Linear;
and what BasicCSNN keeps for a training step against the seed notebook's network."""

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKENDS, DEVICE, assert_grad_close, covering, gradcheck
from oracles import spikingjelly_neuron

import snn_triton as st
from snn_triton import cpu_blocks

NEURONS = [("if", True), ("lif", True), ("lif", False)]
RESETS = {"hard": 0.0, "hard-nonzero": -0.2, "soft": None}
SURROGATES = ["superspike", "sigmoid", "atan"]
# float32 runs other block sizes in the kernels than float64; bfloat16 is computed in float32.
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
# Every value of each setting, and every pair of values, instead of their product.
STATIC_CASES = covering(
    neuron=NEURONS, reset=RESETS, detach=[False, True], surrogate=SURROGATES, T=[1, 5, 20], dtype=DTYPES
)  # T=20: past the unrolled length of a compiled scan
POOLED_CASES = covering(
    neuron=NEURONS,
    reset=RESETS,
    detach=[False, True],
    surrogate=SURROGATES,
    layout=["nchw", "channels_last"],
    static=[False, True],
    size=[(6, 8), (7, 5), (6, 9)],
    dtype=DTYPES,
)  # odd rows and columns are in no window


def case_id(case):
    (kind, decay_input), reset, detach, surrogate, *rest = case
    more = "-".join("x".join(map(str, r)) if isinstance(r, tuple) else str(r) for r in rest)
    return f"{kind}{'' if decay_input else '-nodecay'}-{reset}-{'detach' if detach else 'attached'}-{surrogate}-{more}"


def ours(kind, decay_input, backend, **kwargs):
    if kind == "if":
        return lambda x, **more: st.if_scan(x, backend=backend, **kwargs, **more)
    return lambda x, **more: st.lif_scan(x, tau=3.0, decay_input=decay_input, backend=backend, **kwargs, **more)


def spikingjelly(kind, decay_input, **kwargs):
    node = spikingjelly_neuron(kind, tau=3.0, decay_input=decay_input, **kwargs)
    return lambda x_seq: node(x_seq)


def pooled(spike_seq):
    """torch's max_pool2d of every step: the oracle of the fused pooling, routing included."""
    return F.max_pool2d(spike_seq.flatten(0, 1), 2).unflatten(0, spike_seq.shape[:2])


def compare(actual_fn, expected_fn, x, seed=0):
    """Outputs equal to the oracle's in float64 on the same values, d<out, g>/dx close to its float64
    gradient (assert_grad_close's tolerance for x's dtype), for a random g (rounded to x's dtype)."""
    a, e = x.detach().clone().requires_grad_(), x.detach().cpu().double().requires_grad_()
    actual, expected = actual_fn(a), expected_fn(e)
    assert actual.shape == expected.shape and actual.dtype == x.dtype
    assert torch.equal(actual.cpu().double(), expected), f"{int((actual.cpu() != expected).sum())} spikes differ"
    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(x.dtype)
    (grad,) = torch.autograd.grad(actual, a, g.to(actual.device))
    (expected_grad,) = torch.autograd.grad(expected, e, g.double())
    assert grad.dtype == x.dtype
    assert_grad_close(grad.cpu(), expected_grad.to(x.dtype))
    return actual, grad


def make(shape, seed=0, channels_last=False, dtype=torch.float64):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.0 + 0.5
    if channels_last:  # each step [N, C, H, W] laid out as [N, H, W, C]
        x = x.movedim(-3, -1).contiguous().movedim(-1, -3)
    return x.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", STATIC_CASES, ids=case_id)
def test_static_input_matches_spikingjelly_fed_it_every_step(backend, case):
    """lif_scan(x, steps=T): the spikes of x fed at every step; dL/dx the sum over time of BPTT's."""
    (kind, decay_input), reset, detach, surrogate, T, dtype = case
    i = STATIC_CASES.index(case)
    kw = dict(v_reset=RESETS[reset], detach_reset=detach, surrogate=surrogate)
    x = make((3, 37), seed=i, dtype=dtype).to(DEVICE[backend])
    compare(
        lambda x: ours(kind, decay_input, backend, **kw)(x, steps=T),
        lambda x: spikingjelly(kind, decay_input, **kw)(x.expand(T, *x.shape)),
        x,
        seed=i,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", POOLED_CASES, ids=case_id)
def test_pooled_scan_matches_spikingjelly_then_max_pool2d(backend, case):
    """max_pool=True: the pooled spikes and the gradient max_pool2d would route, in the input's memory
    format, for even and odd sizes (an odd row or column is in no window: no gradient)."""
    (kind, decay_input), reset, detach, surrogate, layout, static, size, dtype = case
    i = POOLED_CASES.index(case)
    kw = dict(v_reset=RESETS[reset], detach_reset=detach, surrogate=surrogate)
    T = 4
    channels_last = layout == "channels_last"
    run, oracle = ours(kind, decay_input, backend, **kw), spikingjelly(kind, decay_input, **kw)
    if static:
        x = make((2, 3, *size), seed=i, channels_last=channels_last, dtype=dtype).to(DEVICE[backend])
        out, grad = compare(
            lambda x: run(x, steps=T, max_pool=True), lambda x: pooled(oracle(x.expand(T, *x.shape))), x, seed=i
        )
    else:
        x = make((T, 2, 3, *size), seed=i, channels_last=channels_last, dtype=dtype).to(DEVICE[backend])
        out, grad = compare(lambda x: run(x, max_pool=True), lambda x: pooled(oracle(x)), x, seed=i)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    grad_step = grad if static else grad[0]
    assert out[0].is_contiguous(memory_format=memory_format) and grad_step.is_contiguous(memory_format=memory_format), (
        "outputs and gradients keep the input's memory format"
    )
    if size[0] % 2:
        assert (grad[..., -1, :] == 0).all(), "the row no window takes gets no gradient"
    if size[1] % 2:
        assert (grad[..., :, -1] == 0).all(), "the column no window takes gets no gradient"
    assert (grad[..., : size[0] // 2 * 2, : size[1] // 2 * 2] != 0).any(), "the windows' cells get gradient"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("static", [False, True], ids=["sequence", "static"])
def test_pooled_gradient_goes_to_the_first_maximum_as_max_pool2d_sends_it(backend, static):
    """Windows with no spike (a tie of four zeros), one, and several: the gradient goes where
    max_pool2d's own indices send it, the first maximum in (0,0), (0,1), (1,0), (1,1) order."""
    T = 3
    # x >= 2 fires at once, x <= -2 never; four windows per channel cover none, one, two, all firing
    window = torch.tensor([[-3.0, -3.0, 3.0, -3.0, 3.0, 3.0, 3.0, 3.0], [-3.0, -3.0, -3.0, -3.0, -3.0, 3.0, 3.0, 3.0]])
    x = window.expand(2, 2, 2, 8).to(torch.float64)  # [N, C, H, W]
    if not static:
        x = x.expand(T, *x.shape)
    x = x.contiguous().to(DEVICE[backend])
    kw = dict(tau=2.0, v_threshold=1.0, surrogate="esser", beta=0.1)  # h > 0 everywhere: every route counts
    run = (
        (lambda x: st.lif_scan(x, steps=T, max_pool=True, backend=backend, **kw))
        if static
        else (lambda x: st.lif_scan(x, max_pool=True, backend=backend, **kw))
    )
    expand = (lambda x: x.expand(T, *x.shape)) if static else (lambda x: x)
    oracle = spikingjelly_neuron("lif", tau=2.0, v_threshold=1.0, surrogate="esser", beta=0.1)
    compare(run, lambda x: pooled(oracle(expand(x))), x)


@pytest.mark.parametrize("size", [(6, 8), (7, 9)], ids=["even", "odd"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_elementwise_routing_is_max_pool2ds_routing(size, channels_last):
    """route_to_first_spike (the compiled form of the pooled scans' routing) against the gradient of
    torch's max_pool2d itself, bit for bit: windows of no, one, several spikes, non-finite gradients
    (they go where the index says and nowhere else), odd sizes, both memory formats, leading dims."""
    from snn_triton import reference

    rng = torch.Generator().manual_seed(0)
    spike = (torch.rand(3, 2, 4, *size, generator=rng) < 0.3).double()  # [T, N, C, H, W]
    if channels_last:
        spike = spike.movedim(-3, -1).contiguous().movedim(-1, -3)
    grad_pooled = torch.randn(3, 2, 4, size[0] // 2, size[1] // 2, generator=rng, dtype=torch.float64)
    grad_pooled[0, 0, 0, 0, :2] = torch.tensor([float("inf"), float("nan")])
    leaf = spike.flatten(0, 1).clone().requires_grad_()
    (expected,) = torch.autograd.grad(F.max_pool2d(leaf, 2), leaf, grad_pooled.flatten(0, 1))
    routed = reference.route_to_first_spike(grad_pooled, spike)
    assert torch.equal(routed.flatten(0, 1).isnan(), expected.isnan())
    assert torch.equal(routed.flatten(0, 1).nan_to_num(), expected.nan_to_num())
    assert routed.stride() == spike.stride(), "in the spikes' memory format"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lean_forms_in_float32_and_bfloat16(backend, dtype):
    """Spikes equal the plain scan's on the same values (half types computed in float32)."""
    x = make((4, 2, 3, 6, 6), seed=3, channels_last=True, dtype=dtype).to(DEVICE[backend])
    plain = st.lif_scan(x, backend=backend)
    assert torch.equal(st.lif_scan(x, max_pool=True, backend=backend), pooled(plain))
    assert torch.equal(
        st.lif_scan(x[0], steps=4, max_pool=True, backend=backend),
        pooled(st.lif_scan(x[0].expand(4, *x[0].shape), backend=backend)),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_of_the_static_input_where_spikes_are_locally_constant(backend):
    """Forward-mode BPTT of the static scan against finite differences (Esser's surrogate at a large
    beta, so h = 0 away from the threshold, where S is locally constant)."""
    suitable = False
    for seed in range(200):
        x = make((2, 5), seed=seed) * 0.8
        h = spikingjelly_membrane(x, 4)
        if ((h - 1.0).abs() > 0.03).all() and (h >= 1.0).any():
            suitable = True
            break
    assert suitable, "no suitable input found"
    fn = lambda x: st.lif_scan(x, steps=4, tau=3.0, v_reset=-0.2, surrogate="esser", beta=50.0, backend=backend)  # noqa: E731
    assert gradcheck(fn, (x.to(DEVICE[backend]).requires_grad_(),), backend)


def spikingjelly_membrane(x, T):
    node = spikingjelly_neuron("lif", tau=3.0, v_reset=-0.2, step_mode="s").double()
    hs = []
    with torch.no_grad():
        for _ in range(T):
            node.v_float_to_tensor(x)
            node.neuronal_charge(x)
            hs.append(node.v.clone())
            node.neuronal_reset(node.neuronal_fire())
    return torch.stack(hs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(steps=2.0), TypeError, "steps must be an int"),
        (dict(steps=2, v_init=torch.zeros(3)), ValueError, "v_init and return_v cannot be combined"),
        (dict(max_pool=True), ValueError, r"x_seq must be \[T, N, C, H, W\] with max_pool"),
        (dict(max_pool=1), TypeError, "max_pool must be a bool"),
    ],
)
def test_bad_lean_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        st.lif_scan(torch.zeros(4, 3), **kwargs)


def test_bad_lean_modules():
    with pytest.raises(ValueError, match="take neither stateful"):
        st.LIF(max_pool=True, stateful=True)
    with pytest.raises(ValueError, match="H, W >= 2"):
        st.lif_scan(torch.zeros(2, 1, 1, 1, 4), max_pool=True)


def compare_layers(ours_layer, plain, x, device):
    """Same output; same gradients of the input and of every parameter."""
    ours_layer.to(device)
    a, b = x.to(device).requires_grad_(), x.clone().requires_grad_()
    out, expected = ours_layer(a), plain(b)
    assert torch.equal(out.cpu(), expected)
    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(0), dtype=expected.dtype)
    grads = torch.autograd.grad(out, [a, *ours_layer.parameters()], g.to(device))
    expected_grads = torch.autograd.grad(expected, [b, *plain.parameters()], g)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_grad_close(grad.cpu(), expected_grad)
    assert grads[0].stride() == x.stride(), "the input's gradient keeps its memory format"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_spike_conv2d_is_conv2d(backend, channels_last):
    torch.manual_seed(0)
    conv = st.SpikeConv2d(4, 6, 3, padding=1, stride=2, backend=backend).double()
    plain = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2).double()
    plain.load_state_dict(conv.state_dict())
    x = (make((5, 4, 7, 9), seed=1, channels_last=channels_last) > 0.5).double()
    compare_layers(conv, plain, x, DEVICE[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_spike_linear_is_linear(backend):
    torch.manual_seed(0)
    linear = st.SpikeLinear(12, 5, backend=backend).double()
    plain = torch.nn.Linear(12, 5).double()
    plain.load_state_dict(linear.state_dict())
    x = (make((3, 4, 12), seed=2) > 0.5).double()
    compare_layers(linear, plain, x, DEVICE[backend])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers", ["conv", "linear"])
def test_spike_layers_under_autocast_are_the_plain_layers_under_autocast(backend, layers):
    """bf16 autocast: the same bf16 output, and float32 gradients equal to the plain layer's
    (backward runs outside autocast, so the layer must keep the dtypes its forward used)."""
    torch.manual_seed(0)
    if layers == "conv":
        ours, plain = st.SpikeConv2d(4, 6, 3, padding=1, backend=backend), torch.nn.Conv2d(4, 6, 3, padding=1)
        x = (make((2, 4, 5, 6), seed=3) > 0.5).float()
    else:
        ours, plain = st.SpikeLinear(12, 5, backend=backend), torch.nn.Linear(12, 5)
        x = (make((3, 12), seed=4) > 0.5).float()
    plain.load_state_dict(ours.state_dict())
    device = DEVICE[backend]
    ours.to(device)
    results = []
    for layer, inp in ((ours, x.to(device)), (plain, x)):
        inp = inp.clone().requires_grad_()
        with torch.autocast(inp.device.type, dtype=torch.bfloat16):
            out = layer(inp)
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), [inp, *layer.parameters()])
        assert [g.dtype for g in grads] == [torch.float32] * len(grads)
        results.append([out, *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_spike_layers_refuse_input_that_is_not_spikes(backend):
    """Bits hold only 0 and 1: anything else fails (an assertion, on a GPU device-side)."""
    layer = st.SpikeLinear(4, 2, backend=backend).to(DEVICE[backend])
    with pytest.raises(RuntimeError, match="must be spikes, every value 0 or 1"):
        layer(torch.full((3, 4), 0.5, device=DEVICE[backend]))
    with torch.no_grad():  # nothing kept for backward: nothing to refuse
        layer(torch.full((3, 4), 0.5, device=DEVICE[backend]))


def saved_bytes(forward, parameters, x):
    """The storage autograd keeps for backward in one call of forward (parameters excluded)."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(x)
    return sum(storages.values())


def test_basic_csnn_keeps_a_tenth_of_the_notebooks_memory_for_backward():
    """T=8, float32, eager: at most 0.73 MB per sample (the notebook's network keeps 7.5 MB)."""
    from seed_notebook import SeedNet

    x = torch.randn(2, 3, 32, 32)
    notebook, ours_net = SeedNet(), st.BasicCSNN()
    notebook_bytes = saved_bytes(notebook, list(notebook.parameters()), x) / 2
    our_bytes = saved_bytes(ours_net, list(ours_net.parameters()), x) / 2
    assert notebook_bytes > 7.0e6
    assert our_bytes <= 0.73e6 and our_bytes * 10 <= notebook_bytes, (our_bytes, notebook_bytes)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_eager_cpu_scans_in_cache_blocks_compute_what_the_whole_layer_does(monkeypatch, layout):
    """On a CPU, eager scans walk their rows (samples) in blocks that fit in cache
    (cpu_blocks.CACHE_BLOCK neurons): every scan form, forward and backward, gives the same bits and
    the same memory layout in blocks (the last one short) as on the whole layer; PLIF's leak
    gradient, summed block by block, to rounding."""

    x = make((4, 7, 3, 6, 6), channels_last=layout == "channels_last", dtype=torch.float32)
    v_init = torch.randn(7, 3, 6, 6) * 0.5
    g = torch.Generator().manual_seed(3)

    def run():
        w = torch.tensor(0.3, requires_grad=True)
        xs, v0 = x.clone().requires_grad_(), v_init.clone().requires_grad_()
        outs = [
            st.lif_scan(xs, surrogate="sigmoid", backend="torch"),
            st.LIF(steps=4, max_pool=True, backend="torch")(xs[0]),
            st.LIF(steps=4, backend="torch")(xs[1]),
            st.LIF(max_pool=True, surrogate="atan", backend="torch")(xs),
            *st.plif_scan(xs * 1.1, w, v_init=v0, return_v=True, backend="torch"),
        ]
        loss = sum((o * torch.randn(o.shape, generator=g.manual_seed(i))).sum() for i, o in enumerate(outs))
        return outs, torch.autograd.grad(loss, [xs, v0, w])

    monkeypatch.setattr(cpu_blocks, "CACHE_BLOCK", 1 << 30)
    whole, whole_grads = run()
    monkeypatch.setattr(cpu_blocks, "CACHE_BLOCK", 2 * 3 * 6 * 6)  # blocks of 2 rows: 2, 2, 2, 1
    blocked, blocked_grads = run()
    for b, w in zip(blocked, whole):
        assert torch.equal(b, w) and b.stride() == w.stride()
    for b, w in zip(blocked_grads[:2], whole_grads[:2]):
        assert torch.equal(b, w) and b.stride() == w.stride()
    torch.testing.assert_close(blocked_grads[2], whole_grads[2], rtol=1e-6, atol=1e-6)
    assert whole[0].sum() > 0 and whole_grads[2] != 0
