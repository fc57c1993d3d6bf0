"""torch.compile(fullgraph=True) traces the ops with no graph break and computes what eager does,
stateful layers (their potential kept from one call to the next) and PLIF's learned leak included."""

import pytest
import torch

import snn_triton as st
from snn_triton import compiler


def make_layers():
    """A stateful PLIF and a single-step stateful IF, as a model would keep them."""
    return (
        st.PLIF(init_tau=3.0, surrogate="atan", decay_input=False, stateful=True),
        st.IF(v_reset=None, surrogate="spikingjelly_sigmoid", step_mode="s", stateful=True),
    )


def small_snn(x, w, plif, single_step_if):
    """LIF layers (hard then soft reset), a spike, and the two stateful layers, as a model would chain them."""
    s1 = st.lif_scan(x @ w, tau=3.0, surrogate="sigmoid")
    s2 = st.LIF(v_reset=None, detach_reset=True, surrogate="esser")(s1 * 2.0)
    s3 = plif(s1 + s2 - 0.5 * x)
    s4 = single_step_if(s3.mean(0) + x[0])
    return (s2 + s3 + st.spike(x - 0.5, "superspike")).mean(0) + s4


def two_calls(fn, x, w, plif, single_step_if):
    """Two calls with the state carried over, then the loss's gradients (w, PLIF's w) and a reset."""
    outs = [fn(x, w, plif, single_step_if), fn(x.flip(0), w, plif, single_step_if)]
    loss = sum(o.square().sum() for o in outs) + plif.v.sum()
    grads = torch.autograd.grad(loss, [w, plif.w])
    plif.reset()
    single_step_if.reset()
    return outs, grads


def test_compiled_ops_match_eager_with_no_graph_breaks():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 16, generator=g)
    w = torch.randn(16, 16, generator=g).requires_grad_()
    plif, single_step_if = make_layers()
    assert torch._dynamo.explain(small_snn)(x, w, plif, single_step_if).graph_break_count == 0
    plif.reset()
    single_step_if.reset()

    compiled, compiled_grads = two_calls(torch.compile(small_snn, fullgraph=True), x, w, plif, single_step_if)
    eager, eager_grads = two_calls(small_snn, x, w, plif, single_step_if)
    assert eager[0].sum() > 0 and not torch.equal(eager[0], eager[1])
    for c, e in zip(compiled, eager):
        assert torch.equal(c, e)
    for c, e in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


def test_compiled_graphs_carry_the_source_revision():
    """torch.compile's on-disk cache keys on the traced graph, which does not show the code an op's
    body runs; the ops' revision argument (a hash of the sources) is what makes an edited
    snn_triton miss the cache instead of reusing code compiled from the old sources."""
    from snn_triton import ops

    torch._dynamo.reset()
    graph = torch._dynamo.explain(small_snn)(torch.randn(2, 3, 16), torch.randn(16, 16), *make_layers()).graphs[0]
    op_args = [node.args for node in graph.graph.nodes if "snn_triton" in str(node.target)]
    assert len(op_args) == 5 and all(args[-1] == ops.REVISION for args in op_args)


def test_long_scans_compile_to_a_loop_with_the_same_results(monkeypatch):
    """Past compiler.UNROLLED_STEPS, a compiled scan is PyTorch's scan (a loop over one compiled step,
    so compile time does not grow with T), forward and backward, and computes what eager does."""
    from torch._higher_order_ops.scan import scan

    directions = []

    def counting_scan(step, init, xs, **kwargs):  # backward, the loop runs over the step indices, T-1 .. 0
        directions.append("backward" if xs.dtype == torch.int64 else "forward")
        return scan(step, init, xs, **kwargs)

    monkeypatch.setattr(compiler, "scan", counting_scan)
    torch._dynamo.reset()
    T = compiler.UNROLLED_STEPS + 4
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, 3, 40, generator=g) * 1.5 + 0.5
    w = torch.randn(40, 40, generator=g).requires_grad_()
    plif, single_step_if = make_layers()
    compiled, compiled_grads = two_calls(torch.compile(small_snn), x, w, plif, single_step_if)
    # the three multi-step scans of small_snn, each a loop both ways (the single-step IF is one step)
    assert directions.count("forward") >= 3 and directions.count("backward") >= 3, directions
    eager, eager_grads = two_calls(small_snn, x, w, plif, single_step_if)
    assert eager[0].sum() > 0
    for c, e in zip(compiled, eager):
        assert torch.equal(c, e)
    for c, e in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [4, compiler.UNROLLED_STEPS + 2], ids=["unrolled", "loop"])
def test_compiled_conv_then_lif_matches_eager_whatever_layout_inductor_picks(T):
    """A conv's output feeding the static-input scan (with and without the fused pooling) and the
    sequence scan. Inductor may lay the conv's output out channels-last where the trace saw NCHW;
    the scans' stored states must not assume the traced strides (they did: conv1's weight gradient
    was 40% off, compiled, while every aot_eager backend agreed with eager). As a loop, the static
    input is read by every step as it is, not scanned as an expanded sequence."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    static = st.LIF(surrogate="sigmoid", steps=T, max_pool=True)
    static_plain = st.LIF(surrogate="sigmoid", steps=T)
    sequence = st.LIF(surrogate="sigmoid", max_pool=True)
    x = torch.rand(4, 1, 8, 8) * 3
    weights = [torch.randn(T, 4, 8, *hw) for hw in ((4, 4), (8, 8), (4, 4))]

    def loss(x):
        c = conv(x)
        return (
            (static(c) * weights[0]).sum()
            + (static_plain(c) * weights[1]).sum()
            + (sequence(c.expand(T, *c.shape) * 1.5) * weights[2]).sum()
        )

    eager = torch.autograd.grad(loss(x), list(conv.parameters()))
    compiled = torch.autograd.grad(torch.compile(loss)(x), list(conv.parameters()))
    assert eager[0].abs().max() > 0
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


def lif_then_plif(x, w, plif_w):
    """Two scans in one graph; compiled past UNROLLED_STEPS, their backward loops both start from zeros."""
    s1 = st.lif_scan(x @ w, tau=3.0, surrogate="sigmoid")
    s2 = st.plif_scan(s1 - 0.5 * x, plif_w, decay_input=False, surrogate="atan")
    return (s1.square() + s2).sum()


def test_loop_carry_miscompile_is_worked_around_exactly_where_inductor_has_it(monkeypatch):
    """The upstream miscompile, reproduced: two compiled loops whose initial carries are equal. With
    inductor's own handling of carried inputs, the gradients are wrong on exactly the PyTorch versions
    that compiler.CARRY_COPY_NEEDED names; with the workaround they are right there. A PyTorch that
    fixes (or newly shows) the bug fails here until CARRY_COPY_NEEDED says so."""
    from torch._inductor import config as inductor_config
    from torch._inductor.ir import WhileLoop

    g = torch.Generator().manual_seed(1)
    T = compiler.UNROLLED_STEPS + 4
    x = torch.randn(T, 3, 40, generator=g) * 1.5 + 0.5
    w = torch.randn(40, 40, generator=g).requires_grad_()
    plif_w = torch.tensor(0.3, requires_grad=True)
    eager = torch.autograd.grad(lif_then_plif(x, w, plif_w), [w, plif_w])
    assert eager[0].abs().max() > 0

    def compiled_grads():
        torch._dynamo.reset()
        with inductor_config.patch(fx_graph_cache=False):  # each variant lowered anew, not read from the cache
            return torch.autograd.grad(torch.compile(lif_then_plif)(x, w, plif_w), [w, plif_w])

    def agree(grads):
        return all(torch.allclose(c, e, rtol=1e-5, atol=1e-5) for c, e in zip(grads, eager))

    assert compiler.loops_supported()  # installs the workaround where it is needed
    upstream = compiler.UPSTREAM_CLONE_ALIASED_INPUTS or WhileLoop.__dict__["_clone_aliased_inputs"]
    with monkeypatch.context() as patch:
        patch.setattr(
            WhileLoop,
            "_clone_aliased_inputs",
            upstream if isinstance(upstream, staticmethod) else staticmethod(upstream),
        )
        miscompiled = not agree(compiled_grads())
    assert miscompiled == compiler.CARRY_COPY_NEEDED, (
        f"PyTorch {torch.__version__}: the loops' carry miscompile {'shows' if miscompiled else 'is gone'}, "
        f"but compiler.CARRY_COPY_NEEDED is {compiler.CARRY_COPY_NEEDED}"
    )
    assert agree(compiled_grads())  # as shipped: the workaround where it is needed


def counted_loops(monkeypatch) -> list[str]:
    """Makes compiler.scan record each loop it runs ("forward" or, over step indices, "backward")."""
    from torch._higher_order_ops.scan import scan

    directions = []

    def counting_scan(step, init, xs, **kwargs):
        directions.append("backward" if xs.dtype == torch.int64 else "forward")
        return scan(step, init, xs, **kwargs)

    monkeypatch.setattr(compiler, "scan", counting_scan)
    return directions


def test_compiled_loops_of_multi_step_if_and_plif_decay_input_match_spikingjelly(monkeypatch):
    """The compiled loop's branches (T > UNROLLED_STEPS) no other test reaches, in float64 against
    spikingjelly: multi-step IF, whose dL/dX is dL/dH (copied: the loop's step may return no tensor
    twice), and PLIF with decay_input=True, whose X[t] waits in the loop's carry for dL/dw."""
    from helpers import assert_grad_close
    from oracles import spikingjelly_neuron

    directions = counted_loops(monkeypatch)
    torch._dynamo.reset()
    T = compiler.UNROLLED_STEPS + 2
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, 2, 8, generator=g, dtype=torch.float64) * 1.5 + 0.5
    grad_out = torch.randn(T, 2, 8, generator=g, dtype=torch.float64)
    if_node = spikingjelly_neuron("if", surrogate="sigmoid").double()
    plif_node = spikingjelly_neuron("plif", tau=3.0, decay_input=True, v_reset=None, surrogate="atan").double()

    def ours(x, w):
        s = st.if_scan(x, surrogate="sigmoid")
        return st.plif_scan(s * 0.8 + 0.5 * x, w, decay_input=True, v_reset=None, surrogate="atan")

    def gradients(fn, w):
        leaf = x.clone().requires_grad_()
        out = fn(leaf, w)
        return (out.detach(), *torch.autograd.grad(out, [leaf, w], grad_out))

    w = plif_node.w.detach().clone().requires_grad_()
    actual = gradients(torch.compile(ours, fullgraph=True), w)
    assert directions.count("forward") >= 2 and directions.count("backward") >= 2, directions  # each scan a loop
    expected = gradients(lambda x, w: plif_node(if_node(x) * 0.8 + 0.5 * x), plif_node.w)
    assert torch.equal(actual[0], expected[0]) and expected[0].sum() > 0
    for a, e in zip(actual[1:], expected[1:]):
        assert_grad_close(a, e)


def test_compiled_basic_csnn_past_the_unrolled_length_matches_the_notebook(monkeypatch):
    """BasicCSNN compiled at T > UNROLLED_STEPS (its scans loops) against the seed notebook's network
    in float64, tiny: logits and every weight's gradient to 1e-9."""
    from test_model import SEED_KEYS, logits_and_grads, notebook_and_ours

    directions = counted_loops(monkeypatch)
    torch._dynamo.reset()
    shape = dict(T=compiler.UNROLLED_STEPS + 1, in_channels=1, num_classes=3, image_size=8)
    notebook, ours = notebook_and_ours("torch", surrogate="sigmoid", **shape)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64) * 3.0
    y = torch.tensor([0, 2])
    expected_logits, expected_grads = logits_and_grads(notebook, x, y)
    ours.compile()
    logits, grads = logits_and_grads(ours, x, y)
    assert "forward" in directions and "backward" in directions, directions
    torch.testing.assert_close(logits, expected_logits, rtol=1e-9, atol=1e-9)
    for key in SEED_KEYS:
        assert expected_grads[key].abs().sum() > 0, f"{key}: the test should reach every layer"
        torch.testing.assert_close(grads[key], expected_grads[key], rtol=1e-9, atol=1e-9, msg=key)
