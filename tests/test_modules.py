"""st.LIF as a layer: multi-step [T, N, ...], stateless across calls, arguments checked once."""

import pytest
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


def test_settings_set_as_attributes_change_what_later_calls_compute():
    """A schedule's threshold or tau set on the layer computes what a layer built with them computes;
    a bad value is refused as the constructor refuses it, and the layer keeps its settings."""
    x = torch.randn(6, 2, 5, dtype=torch.float64) * 2 + 0.5
    lif = st.LIF(tau=3.0, v_threshold=0.8, surrogate="sigmoid")
    lif.v_threshold, lif.tau, lif.beta, lif.detach_reset = 0.5, 1.5, 2.0, True
    built = st.LIF(tau=1.5, v_threshold=0.5, surrogate="sigmoid", beta=2.0, detach_reset=True)
    assert lif.params == built.params and torch.equal(lif(x), built(x))
    assert torch.equal(lif(x), spikingjelly_lif(x, tau=1.5, v_threshold=0.5, surrogate="sigmoid", beta=2.0))
    with pytest.raises(ValueError, match="tau"):
        lif.tau = -1.0
    assert lif.tau == 1.5


def test_potential_set_by_hand_is_where_a_stateful_layer_starts():
    """v set to a number, or to a tensor that broadcasts to a step (in another dtype too: a model moved
    to float64 with its state kept), is the potential the next call starts from, as spikingjelly's
    neurons take it; one that does not broadcast, or is not a number, is refused by name."""
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    lif = st.LIF(stateful=True)
    for v in (0.7, torch.tensor(0.7, dtype=torch.float64), torch.full((5,), 0.7), torch.full((3, 5), 0.7)):
        lif.v = v
        out = lif(x)
        assert torch.equal(out, st.lif_scan(x, v_init=torch.full((3, 5), 0.7, dtype=torch.float64)))
    lif.v = "0.7"
    with pytest.raises(TypeError, match="membrane potential v"):
        lif(x)
    lif.v = torch.zeros(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="membrane potential v"):
        lif(x)


def test_step_mode_and_state_set_later_are_checked():
    """step_mode and stateful set after construction (spikingjelly's set_step_mode sets step_mode) are
    checked as the constructor checks them, fused forms included."""
    lif = st.LIF()
    lif.step_mode, lif.stateful = "s", True
    x = torch.randn(2, 5, dtype=torch.float64)
    assert torch.equal(lif(x), st.lif_scan(x.unsqueeze(0))[0]) and isinstance(lif.v, torch.Tensor)
    for layer, name, value, error in (
        (st.LIF(), "step_mode", "bogus", ValueError),
        (st.LIF(), "stateful", "yes", TypeError),
        (st.LIF(max_pool=True), "step_mode", "s", ValueError),
        (st.LIF(steps=3), "stateful", True, ValueError),
    ):
        with pytest.raises(error, match=f"{name}|steps and max_pool"):
            setattr(layer, name, value)
