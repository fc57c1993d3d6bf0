"""The benchmarks' check before timing (bench/agree.py): an implementation that computes something
else than our LIF is refused and never timed; one that only rounds differently is accepted."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from agree import Claim, Disagree, agreeing_neurons  # noqa: E402
from test_kernels import check_lif, measure_or_skip  # noqa: E402

import snn_triton as st  # noqa: E402

TAU, V_THRESHOLD, V_RESET = 2.0, 1.0, 0.0
CLAIM = Claim("sigmoid", 4.0)


def lif_loop(x_seq, charge, late_reset=False, strict=False):
    """Our LIF with another charge, a reset a step late (it zeroes the next step's H rather than
    this step's V), or firing on > rather than >= (snnTorch, Norse)."""
    v, fired, spikes = torch.zeros_like(x_seq[0]), torch.zeros_like(x_seq[0]), []
    for x in x_seq:
        h = charge(v, x)
        if late_reset:
            h = h * (1 - fired)
        s = (h > V_THRESHOLD).to(h) if strict else st.spike(h - V_THRESHOLD, "sigmoid")
        fired = s.detach()
        v = h if late_reset else h * (1 - s)
        spikes.append(s)
    return torch.stack(spikes)


def ours(x_seq):
    return st.lif_scan(x_seq, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET, surrogate="sigmoid", backend="torch")


def inputs(T=16, neurons=4096):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(T, neurons, generator=g) * 1.5 + 0.5).requires_grad_(), torch.randn(T, neurons, generator=g)


WRONG = {
    "reset a step late": lambda x: lif_loop(x, lambda v, x: v + (x - v) / TAU, late_reset=True),
    "tau 2.2": lambda x: lif_loop(x, lambda v, x: v + (x - v) / 2.2),
    "input not divided by tau": lambda x: lif_loop(x, lambda v, x: 0.5 * v + x),
}


@pytest.mark.parametrize("wrong", WRONG)
def test_a_peer_computing_another_lif_is_refused(wrong):
    x_seq, grad = inputs()
    with pytest.raises(Disagree, match="spikes differ"):
        check_lif(WRONG[wrong], CLAIM, x_seq, grad, "fwd")


def test_a_peer_with_another_surrogate_is_refused_by_its_gradient():
    x_seq, grad = inputs()
    assert check_lif(ours, CLAIM, x_seq, grad, "fwd") == "spikes equal"
    with pytest.raises(Disagree, match="grad x_seq"):
        check_lif(ours, Claim("sigmoid", 2.0), x_seq, grad, "fwd+bwd")
    with pytest.raises(Disagree, match="grad x_seq"):  # the reset's gradient is part of the claim
        check_lif(ours, Claim("sigmoid", 4.0, detach_reset=True), x_seq, grad, "fwd+bwd")


def test_a_peer_that_only_rounds_differently_is_accepted():
    """0.5*V + 0.5*X (snnTorch's and sinabs' order) against V + (X - V)/2, and > against >=: the
    spikes may differ only where H ties with v_threshold, here forced in neurons 0 and 1."""
    x_seq, grad = inputs()
    x_seq.data[0, 0] = 2 * V_THRESHOLD  # H = 0 + (2 - 0)/2 = v_threshold exactly: ours fires, `>` does not
    # At step 1, ours computes H = 1 - 2^-24 (silent), 0.5*V + 0.5*X rounds to 1 (fires).
    x_seq.data[:2, 1] = torch.tensor([0.5402263402938843, 1.729886770248413])
    assert check_lif(ours, CLAIM, x_seq, grad, "fwd+bwd").startswith("spikes equal; grads equal")
    reordered = lif_loop(x_seq, lambda v, x: 0.5 * v + 0.5 * x)
    found = check_lif(lambda x: reordered, CLAIM, x_seq, grad, "fwd+bwd")
    assert found.startswith("spikes equal but at 1 of 4096 neurons") and "grads equal" in found, found
    strict = lif_loop(x_seq.detach(), lambda v, x: 0.5 * v + 0.5 * x, strict=True)
    agree, found = agreeing_neurons(strict, x_seq, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET)
    assert not agree[0] and found.startswith("spikes equal but at"), found


def test_a_refused_peer_is_recorded_and_never_timed():
    x_seq, grad = inputs()
    rows, timed = [], []

    class CountTiming:
        def pedantic(self, *args, **kwargs):
            timed.append(args)

    with pytest.raises(Disagree):
        measure_or_skip(
            CountTiming(),
            rows.append,
            dict(impl="a wrong peer"),
            lambda: WRONG["reset a step late"],
            lambda lif: lambda: lif(x_seq),
            lambda lif: check_lif(lif, CLAIM, x_seq, grad, "fwd"),
        )
    assert not timed, "a refused peer was timed"
    [row] = rows
    assert row["seconds"] is None and row["note"].startswith("not timed: spikes differ"), row


def test_gradients_compared_on_too_few_agreeing_neurons_are_refused():
    """close() compares gradients where the spikes agree: with no neuron agreeing, or too few, it would
    compare nothing (or almost nothing) and pass, so it refuses instead."""
    from agree import MIN_AGREEING, close

    grad = torch.randn(16, 100)
    keep = torch.zeros(100, dtype=torch.bool)
    with pytest.raises(Disagree, match="agree at only 0% of the neurons"):
        close(grad, grad, keep, "grad x_seq")
    keep[: int(MIN_AGREEING * 100) - 1] = True
    with pytest.raises(Disagree, match="agree at only"):
        close(grad, grad, keep, "grad x_seq")
    keep[: int(MIN_AGREEING * 100)] = True
    close(grad, grad, keep, "grad x_seq")


def test_bfloat16_gradients_are_checked_against_the_definition():
    """bfloat16 rows compare the gradient too (the definition in float32, bfloat16's tolerance)."""
    x_seq, grad = inputs()
    x_half = x_seq.detach().bfloat16().requires_grad_()
    assert "grads equal" in check_lif(ours, CLAIM, x_half, grad.bfloat16(), "fwd+bwd")
    with pytest.raises(Disagree, match="grad x_seq"):
        check_lif(ours, Claim("sigmoid", 2.0), x_half, grad.bfloat16(), "fwd+bwd")


def test_spike_gradients_are_checked_against_the_notebooks_formula(monkeypatch):
    """check_spike's oracle is the notebook's h(x), not st.spike: were st.spike's SuperSpike wrong
    (here, beta 12 for 10), st.spike itself is refused."""
    from test_kernels import check_spike

    x = (torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 1.5).requires_grad_()
    grad = torch.randn(4096)
    spike = st.spike
    assert check_spike(lambda x: spike(x, "superspike", backend="torch"), "superspike", x, grad, "bwd").startswith(
        "grads equal the notebook's formula"
    )
    monkeypatch.setattr(
        st, "spike", lambda x, surrogate, beta=None, backend="auto": spike(x, surrogate, 12.0, backend=backend)
    )
    with pytest.raises(Disagree, match="grad x"):
        check_spike(lambda x: st.spike(x, "superspike", backend="torch"), "superspike", x, grad, "bwd")
