"""torch.compile(fullgraph=True) traces the ops with no graph break and computes what eager does."""
import torch

import snn_triton as st


def small_snn(x, w):
    """Two LIF layers (hard then soft reset) and a spike, as a model would chain them."""
    s1 = st.lif_scan(x @ w, tau=3.0, surrogate="sigmoid")
    s2 = st.LIF(v_reset=None, detach_reset=True, surrogate="esser")(s1 * 2.0)
    return (s2 + st.spike(x - 0.5, "superspike")).mean(0)


def test_compiled_ops_match_eager_with_no_graph_breaks():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 16, generator=g)
    w = torch.randn(16, 16, generator=g).requires_grad_()
    assert torch._dynamo.explain(small_snn)(x, w).graph_break_count == 0

    compiled = torch.compile(small_snn, fullgraph=True)
    out = compiled(x, w)
    (grad,) = torch.autograd.grad(out.square().sum(), w)
    eager = small_snn(x, w)
    (eager_grad,) = torch.autograd.grad(eager.square().sum(), w)
    assert eager.sum() > 0
    assert torch.equal(out, eager)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-5)


def test_compiled_graphs_carry_the_source_revision():
    """torch.compile's on-disk cache keys on the traced graph, which does not show the code an op's
    body runs; the ops' revision argument (a hash of the sources) is what makes an edited
    snn_triton miss the cache instead of reusing code compiled from the old sources."""
    from snn_triton import ops

    torch._dynamo.reset()
    graph = torch._dynamo.explain(small_snn)(torch.randn(2, 3, 16), torch.randn(16, 16)).graphs[0]
    op_args = [node.args for node in graph.graph.nodes if "snn_triton" in str(node.target)]
    assert len(op_args) == 3 and all(args[-1] == ops.REVISION for args in op_args)
