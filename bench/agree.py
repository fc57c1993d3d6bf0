"""Before an implementation is timed, check that it computes what we compute, on the input it is
timed on; an implementation that does not is refused (raises ``Disagree``), never timed.

Spikes are compared with the definition: the LIF of docs/design.md stepped in float32 (the eager loop of
peers.py on the input upcast to float32, as our ops compute half types). They must be equal, except
that a peer writing the same equations in another order (``0.5*V + 0.5*X`` against
``V + (X - V)/2``), firing on ``>`` where we fire on ``>=``, or keeping its state in bfloat16, may
flip a spike where H is within rounding of v_threshold, after which that neuron's futures differ,
legitimately. So a neuron may differ only if, at its first differing step, ``|H - v_threshold|``
is within ``TIE`` of the input's dtype. A reset a step late, another tau or threshold, a wrong
input scale: all differ first where H is far from the threshold, and are refused.

Gradients (float32 inputs): the peer's gradient equals that of the definition run as its ``Claim``
says (the eager loop under autograd, with the claimed surrogate h times ``grad_scale`` and the
reset detached or not), on the neurons whose spikes agree (at least ``MIN_AGREEING`` of them), to
``GRAD_RTOL`` of the largest entry.
The definition, not our ops, is the oracle, so our own rows are checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lif_loop import eager_loop_lif  # the baseline's loop; membrane() records what it fires on

# |H - v_threshold| under which rounding may flip a spike: float32 differs by a few ulps of the
# input's magnitude (inputs reach ~8 here: ulp 1e-6); bfloat16 state rounds H by up to ~0.04.
TIE = {torch.float32: 1e-5, torch.bfloat16: 0.125, torch.float16: 0.02}
GRAD_RTOL = {torch.float32: 1e-4, torch.bfloat16: 0.05, torch.float16: 0.01}
# The share of neurons whose spikes must agree for their gradients to be compared at all: a peer
# whose spikes tie at the threshold almost everywhere has had nearly nothing checked.
MIN_AGREEING = 0.9


class Disagree(AssertionError):
    """The implementation computes something else than ours on this input: it is not timed."""


@dataclass(frozen=True)
class Claim:
    """What an implementation claims to compute in our terms: our spikes, and the gradient of our
    LIF with h = grad_scale * (our `surrogate` at `beta`) and the reset detached or not."""

    surrogate: str
    beta: float
    detach_reset: bool = False
    grad_scale: float = 1.0

    def describe(self) -> str:
        scale = f"{self.grad_scale:g} × " if self.grad_scale != 1 else ""
        return f"grads equal the definition's with h = {scale}{self.surrogate}(beta {self.beta:g})" + (
            ", reset detached" if self.detach_reset else ""
        )

    def lif(self, tau: float, v_threshold: float, v_reset: float):
        """The definition as this claim says: x_seq [T, ...] -> spikes, differentiable (float32)."""
        from oracles import NotebookSurrogate

        spike = NotebookSurrogate(self.surrogate, self.beta)

        def fire(u):
            s = spike(u)
            return s.detach() + self.grad_scale * (s - s.detach())  # the value of s, grad_scale times its gradient

        return lambda x_seq: eager_loop_lif(
            x_seq.float(), fire, tau=tau, v_threshold=v_threshold, v_reset=v_reset, detach_reset=self.detach_reset
        )


def membrane(x_seq: torch.Tensor, tau: float, v_threshold: float, v_reset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, H - v_threshold) of the definition, both [T, ...] float32, stepped as peers.py's eager loop."""

    seen = []

    def fire(u):
        seen.append(u)
        return (u >= 0).to(u)

    with torch.no_grad():
        spikes = eager_loop_lif(x_seq.detach().float(), fire, tau=tau, v_threshold=v_threshold, v_reset=v_reset)
    return spikes, torch.stack(seen)


def agreeing_neurons(
    spikes: torch.Tensor, x_seq: torch.Tensor, *, tau: float, v_threshold: float, v_reset: float
) -> tuple[torch.Tensor, str]:
    """(mask [...] of the neurons whose spikes equal the definition's, what was found); raises
    Disagree unless every other neuron first differs at a rounding tie."""
    ours, u = membrane(x_seq, tau, v_threshold, v_reset)
    spikes = spikes.detach().to(ours)
    if spikes.shape != ours.shape:
        raise Disagree(f"spikes of shape {tuple(spikes.shape)}, ours {tuple(ours.shape)}")
    differs = spikes != ours
    agree = ~differs.any(0)
    if bool(agree.all()):
        return agree, "spikes equal"
    first = differs.float().argmax(0, keepdim=True)  # each neuron's first differing step
    u_first = u.gather(0, first)[0][~agree].abs()
    tie = TIE[x_seq.dtype] * max(1.0, abs(v_threshold))
    n, total = int((~agree).sum()), agree.numel()
    if bool((u_first > tie).any()):
        worst = float(u_first.max())
        raise Disagree(
            f"spikes differ at {n} of {total} neurons, first where |H - v_threshold| = {worst:.3g} "
            f"(a rounding tie is within {tie:g})"
        )
    return agree, (
        f"spikes equal but at {n} of {total} neurons, each first differing at a rounding tie "
        f"(|H - v_threshold| <= {float(u_first.max()):.2g}, a tie being within {tie:g})"
    )


def close(
    theirs: torch.Tensor, ours: torch.Tensor, keep: torch.Tensor | None, what: str, dtype: torch.dtype = torch.float32
) -> None:
    """theirs == ours where `keep` (all if None), to GRAD_RTOL[dtype] of ours's largest entry there, else
    Disagree; Disagree too if `keep` holds less than MIN_AGREEING of the entries."""
    theirs, ours = theirs.detach().double(), ours.detach().double()
    if keep is not None:
        keep = keep.expand_as(ours)
        agreeing = int(keep.sum())
        if agreeing < MIN_AGREEING * keep.numel() or not agreeing:
            share = agreeing / max(keep.numel(), 1)
            raise Disagree(
                f"{what}: the spikes agree at only {share:.0%} of the neurons (at least "
                f"{MIN_AGREEING:.0%} must, for their gradients to be compared)"
            )
        theirs, ours = theirs[keep], ours[keep]
    scale = float(ours.abs().max()) if ours.numel() else 0.0
    error = float((theirs - ours).abs().max()) if ours.numel() else 0.0
    rtol = GRAD_RTOL[dtype]
    if error > rtol * scale or not torch.isfinite(theirs).all():
        raise Disagree(
            f"{what}: differs from ours by {error:.3g} (largest entry {scale:.3g}, tolerance {rtol:g} of it)"
        )
