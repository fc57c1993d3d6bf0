"""st.LIF as a layer: multi-step [T, N, ...], stateless across calls, arguments checked once."""

import torch
from oracles import spikingjelly_lif

import snn_triton as st


def test_lif_module_matches_spikingjelly_and_keeps_no_state():
    x = torch.randn(8, 2, 3, 4, 4, dtype=torch.float64) * 2 + 0.5
    lif = st.LIF(tau=3.0, v_threshold=0.8, v_reset=None, surrogate="sigmoid", beta=2.0)
    first, second = lif(x), lif(x)
    assert torch.equal(first, second), "each call starts from V = v_reset"
    assert torch.equal(
        first, spikingjelly_lif(x, tau=3.0, v_threshold=0.8, v_reset=None, surrogate="sigmoid", beta=2.0)
    )


def test_lif_module_repr_and_params():
    lif = st.LIF(surrogate="esser")
    assert lif.params.beta == 1.0 and lif.params.tau == 2.0 and lif.params.v_reset == 0.0
    assert "surrogate='esser'" in repr(lif)
    assert list(lif.parameters()) == []
