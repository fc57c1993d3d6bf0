"""The LIF as anyone would write it in PyTorch, the definition every benchmark checks against and the
baseline every LIF ratio is taken against; peers.py (which times it) and agree.py (which checks with
it) both import it from here."""

from __future__ import annotations

import torch
from oracles import NotebookSurrogate
from workloads import LIF_SURROGATE

TAU, V_THRESHOLD, V_RESET = 2.0, 1.0, 0.0


def eager_loop_lif(
    x_seq, spike=NotebookSurrogate(LIF_SURROGATE), tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET, detach_reset=False
):
    """The LIF as anyone would write it in PyTorch: a loop over t, autograd for backward. The spike
    (built once, not in each timed call) is given H - v_threshold."""
    v = torch.full_like(x_seq[0], v_reset)
    spikes = []
    for x in x_seq:
        h = v + (x - (v - v_reset)) / tau
        s = spike(h - v_threshold)
        r = s.detach() if detach_reset else s
        v = h * (1 - r) + v_reset * r
        spikes.append(s)
    return torch.stack(spikes)
