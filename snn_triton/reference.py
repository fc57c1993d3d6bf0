"""Pure-PyTorch definition of the spike and the neuron scans, forward and hand-written backward.

This is the CPU path and the oracle of the Triton kernels, so it spells out the equations step by
step (fla style: the naive scan is the definition). Half types are computed in float32 and
float64 stays float64, as in the kernels. Each charge is written exactly as spikingjelly
0.0.0.0.14 writes it, so forward spikes agree bit for bit.

Over t = 0..T-1 from V[-1] = v_init (default v_reset; 0 for soft reset):

    H[t] = charge(V[t-1], X[t])                   one of the CHARGE_FORM equations below
    S[t] = heaviside(H[t] - v_threshold)
    V[t] = H[t] * (1 - S[t]) + v_reset * S[t]    (hard reset, v_reset a float)
    V[t] = H[t] - S[t] * v_threshold             (soft reset, v_reset None; the charge uses 0)

Backward is BPTT of these equations with dS/dH = h(H - v_threshold); forward saves only H (and
V[T-1] when it is asked for). PLIF's leak k = sigmoid(w) gets its gradient too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from .compiler import as_loop, being_compiled, force_store, loop
from .cpu_blocks import in_cache_blocks
from .surrogate import heaviside, surrogate_grad

# The charge forms: the four equations H = charge(V, X) spikingjelly computes, in its arithmetic.
# Each applies one leak operand, `leak`: LIF's tau (a float, divided by) or PLIF's k = sigmoid(w)
# (a 0-dim tensor, multiplied by), except SCALED, whose leak is the factor V is multiplied by
# (1 - 1/tau or 1 - k, rounded as spikingjelly rounds it).
IF = 0  #              H = V + X                                   IFNode
DECAY_INPUT = 1  #     H = V + (X - (V - v_reset)) / tau   (* k)   LIF/PLIF, decay_input=True
DECAY_POTENTIAL = 2  # H = V - (V - v_reset) / tau + X     (* k)   LIF/PLIF, decay_input=False, v_reset != 0
SCALED = 3  #          H = V * leak + X                            LIF/PLIF, decay_input=False, v_reset 0 or None
CHARGE_FORMS = {"if": IF, "decay_input": DECAY_INPUT, "decay_potential": DECAY_POTENTIAL, "scaled": SCALED}

Leak = Union[float, torch.Tensor]


class Neuron(NamedTuple):
    """A neuron's settings as the equations take them, one value (``ops`` builds it for each op from
    ``NeuronParams.op_settings()`` and PLIF's leak tensor). The step functions and the scans take it
    whole; the equations below take the few settings each one uses."""

    charge_form: int  # one of CHARGE_FORMS
    leak: Leak  # the leak operand (above)
    v_threshold: float
    v_reset: float | None  # None: soft reset
    surrogate: str  # backward's h, a registered surrogate name
    beta: float
    detach_reset: bool

    def with_leak_tensor(self, leak_tensor: torch.Tensor | None) -> "Neuron":
        """These settings with PLIF's leak tensor as the leak operand, where one is given."""
        return self if leak_tensor is None else self._replace(leak=leak_tensor)

    def computing_in(self, dtype: torch.dtype) -> "Neuron":
        """These settings with PLIF's leak tensor in the compute dtype `dtype` (a float leak as it is)."""
        return self._replace(leak=self.leak.to(dtype)) if isinstance(self.leak, torch.Tensor) else self


def charge_form_of(leaky: bool, decay_input: bool, v_reset: float | None) -> int:
    """The charge form spikingjelly (training mode) computes for a neuron of these parameters."""
    if not leaky:
        return IF
    if decay_input:
        return DECAY_INPUT
    return SCALED if v_reset is None or v_reset == 0.0 else DECAY_POTENTIAL


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays, everything else goes through float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spike_forward(x: torch.Tensor) -> torch.Tensor:
    return heaviside(x)


def spike_backward(grad_s: torch.Tensor, x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    cdt = compute_dtype(x.dtype)
    return (grad_s.to(cdt) * surrogate_grad(x.to(cdt), surrogate, beta)).to(grad_s.dtype)


def by_leak(a: torch.Tensor, leak: Leak) -> torch.Tensor:
    """a / tau (LIF) or a * k (PLIF)."""
    return a / leak if isinstance(leak, float) else a * leak


def plif_leak(k: torch.Tensor, charge_form: int) -> torch.Tensor:
    """PLIF's leak operand from k = sigmoid(w): k, or for SCALED the factor 1 - k."""
    return 1.0 - k if charge_form == SCALED else k


def leak_operand(v: torch.Tensor, x: torch.Tensor, charge_form: int, v_reset: float | None) -> torch.Tensor:
    """What the leak divides or multiplies in H (not IF), given V[t-1] and X[t]: X - (V - v_reset)
    (DECAY_INPUT), V - v_reset (DECAY_POTENTIAL), V (SCALED); spikingjelly drops the subtraction
    of v_reset when it is 0."""
    offset = v if v_reset is None or v_reset == 0.0 else v - v_reset
    if charge_form == DECAY_INPUT:
        return x - offset
    return v if charge_form == SCALED else offset


def charge_and_operand(
    v: torch.Tensor, x: torch.Tensor, charge_form: int, leak: Leak, v_reset: float | None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(H, the leak's operand) from V[t-1] and X[t]; the operand is None for IF."""
    if charge_form == IF:
        return v + x, None
    operand = leak_operand(v, x, charge_form, v_reset)
    if charge_form == DECAY_INPUT:
        return v + by_leak(operand, leak), operand
    if charge_form == DECAY_POTENTIAL:
        return v - by_leak(operand, leak) + x, operand
    return operand * leak + x, operand  # SCALED


def charge(v: torch.Tensor, x: torch.Tensor, charge_form: int, leak: Leak, v_reset: float | None) -> torch.Tensor:
    """H from V[t-1] and X[t], in spikingjelly's arithmetic."""
    return charge_and_operand(v, x, charge_form, leak, v_reset)[0]


def charge_backward(grad_h: torch.Tensor, charge_form: int, leak: Leak) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dX[t], dL/dV[t-1]) from dL/dH[t], as autograd differentiates the charge."""
    if charge_form == IF:
        return grad_h, grad_h
    if charge_form == DECAY_INPUT:
        grad_x = by_leak(grad_h, leak)
        return grad_x, grad_h - grad_x
    if charge_form == DECAY_POTENTIAL:
        return grad_h, grad_h - by_leak(grad_h, leak)
    return grad_h, grad_h * leak  # SCALED


# dH/dk is the leak's operand times this sign: PLIF's k multiplies it, and DECAY_POTENTIAL subtracts
# the product (SCALED: dH/d(1 - k)).
LEAK_SIGN = {DECAY_INPUT: 1.0, DECAY_POTENTIAL: -1.0, SCALED: 1.0}


def charge_leak_derivative(
    v: torch.Tensor, x: Optional[torch.Tensor], charge_form: int, v_reset: float | None
) -> torch.Tensor:
    """dH/dk for PLIF's multiplied leak k (SCALED: dH/d(1 - k)), given V[t-1] and X[t]."""
    operand = leak_operand(v, x, charge_form, v_reset)
    return -operand if LEAK_SIGN[charge_form] < 0 else operand


def reset(
    h: torch.Tensor, spike: torch.Tensor, v_threshold: float, v_reset: float | None, keep: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """V = H * (1 - S) + v_reset * S (hard reset), V = H - S * v_threshold (soft reset); `keep` is
    1 - S where the caller has it.

    Arithmetic, as spikingjelly writes it, rather than a select: a bool mask is several times
    slower than float arithmetic on a CPU.
    """
    if v_reset is None:
        return h - spike * v_threshold
    keep = 1.0 - spike if keep is None else keep
    if v_reset == 0.0:  # v_reset * S is 0: two ops fewer, the same V but for the sign of a zero
        return h * keep
    return h * keep + v_reset * spike


def rest_potential(v_reset: float | None) -> float:
    """V[-1] when no initial potential is given: v_reset, or 0 for the soft reset."""
    return 0.0 if v_reset is None else v_reset


def fires(h: torch.Tensor, v_threshold: float) -> torch.Tensor:
    """S = heaviside(H - v_threshold) in one op, as H >= v_threshold: a rounded difference has the sign
    of the exact one and is 0 only where H equals v_threshold, so the two agree everywhere (NaN: 0)."""
    return torch.ge(h, v_threshold, out=torch.empty_like(h))


class StepRecord(NamedTuple):
    """What a step of the scan computes that its backward step reads again (compute dtype, [...])."""

    h: torch.Tensor  # H[t]
    spike: torch.Tensor  # S[t]
    keep: Optional[torch.Tensor]  # 1 - S[t], the hard reset's dV[t]/dH[t]; None for the soft reset
    operand: Optional[torch.Tensor]  # the leak's operand, dH[t]/dk up to LEAK_SIGN; None for IF


def recorded_step(v, x, neuron: Neuron) -> tuple[torch.Tensor, StepRecord]:
    """One step: V[t-1], X[t] -> (V[t], its StepRecord), in as many ops as V[t] alone takes."""
    h, operand = charge_and_operand(v, x, neuron.charge_form, neuron.leak, neuron.v_reset)
    spike = fires(h, neuron.v_threshold)
    keep = None if neuron.v_reset is None else 1.0 - spike
    return reset(h, spike, neuron.v_threshold, neuron.v_reset, keep), StepRecord(h, spike, keep, operand)


def forward_step(v, x, neuron: Neuron):
    """One step: V[t-1], X[t] -> (V[t], S[t], H[t])."""
    v, record = recorded_step(v, x, neuron)
    return v, record.spike, record.h


def reset_derivatives(h, spike, v_threshold: float, v_reset: float | None, keep: Optional[torch.Tensor] = None):
    """(dV/dH, dV/dS) of the reset at H[t], given S[t] (and 1 - S[t] where the caller has it): V[t]
    depends on H[t] directly and, unless the reset is detached, through S[t]."""
    if v_reset is None:
        return 1.0, -v_threshold
    return 1.0 - spike if keep is None else keep, v_reset - h


def backward_step(grad_v, grad_spike, h, neuron: Neuron, spike=None, keep=None):
    """One step back: dL/dV[t], dL/dS[t], H[t] -> (dL/dH[t], dL/dX[t], dL/dV[t-1]); S[t] is recomputed
    from H[t] unless given, and 1 - S[t] from S[t] unless given."""
    u = h - neuron.v_threshold
    sg = surrogate_grad(u, neuron.surrogate, neuron.beta)
    spike = heaviside(u) if spike is None else spike
    dv_dh, dv_ds = reset_derivatives(h, spike, neuron.v_threshold, neuron.v_reset, keep)
    if not neuron.detach_reset:
        grad_spike = plus_product(grad_spike, grad_v, dv_ds)
    grad_h = plus_product(grad_spike * sg, grad_v, dv_dh)
    grad_x, grad_v = charge_backward(grad_h, neuron.charge_form, neuron.leak)
    return grad_h, grad_x, grad_v


def plus_product(a: torch.Tensor, b: torch.Tensor, c: Union[torch.Tensor, float]) -> torch.Tensor:
    """a + b * c in one op (c a tensor or a float): a step is mostly per-op overhead on a CPU. The
    result is the same to rounding (the op may fuse the multiply and add)."""
    return torch.addcmul(a, b, c) if isinstance(c, torch.Tensor) else torch.add(a, b, alpha=c)


@in_cache_blocks(first_is_sequence=True)
def lif_scan_forward(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor],
    neuron: Neuron,
    return_v: bool,
    keep_h: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_seq [T, ...], v_init [...] or None -> (spikes [T, ...] in x_seq's dtype, H [T, ...] and
    V[T-1] [...] in the compute dtype; H is empty unless keep_h, V[T-1] unless return_v)."""
    out_dtype = x_seq.dtype
    cdt = compute_dtype(out_dtype)
    x_seq = x_seq.to(cdt)
    neuron = neuron.computing_in(cdt)
    v = initial_potential(x_seq[0], v_init, neuron.v_reset)

    def step(v, x):  # -> V[t], (S[t], H[t]) or (S[t],)
        v, spike, h = forward_step(v, x, neuron)
        return v, (spike, h) if keep_h else (spike,)

    if as_loop(x_seq.shape[0]) and x_seq.stride(0) == 0:
        # One input fed at every step (an expanded view): the loop reads it as it is; scanned, the
        # expanded sequence would be materialized, all T steps of it, at every step.
        x = x_seq[0]
        v, outs = loop(lambda v, _: step(v, x), v, x_seq.new_empty(x_seq.shape[0], 0))
    elif as_loop(x_seq.shape[0]):
        v, outs = loop(step, v, x_seq)
    else:
        steps = []
        for x in x_seq:
            v, out = step(v, x)
            v = force_store(v)
            steps.append(out)
        outs = [torch.stack(seq) for seq in zip(*steps)]
    h_seq = outs[1] if keep_h else x_seq.new_empty(0)
    return outs[0].to(out_dtype), h_seq, v if return_v else x_seq.new_empty(0)


@in_cache_blocks(first_is_sequence=True)
def lif_scan_backward(
    grad_s_seq: torch.Tensor,
    h_seq: torch.Tensor,
    grad_v_last: Optional[torch.Tensor],
    x_seq: Optional[torch.Tensor],
    v_init: Optional[torch.Tensor],
    neuron: Neuron,
    grad_v_init: bool,
    grad_leak: bool,
    max_pool: bool = False,
    sum_over_time: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BPTT: the gradients of the spikes [T, ...] and of V[T-1] (or None), and the saved H [T, ...]
    -> (grad x_seq [T, ...], grad v_init [...], grad leak []); the last two are empty unless asked
    for. x_seq (DECAY_INPUT) and v_init are needed only for the leak's gradient. With max_pool, the
    gradient given is that of the 2x2 max-pooled spikes [T, N, C, H//2, W//2], routed step by step
    (route_to_max, the spikes recomputed from H): no full-size gradient of every step is formed.
    With sum_over_time, the first result is grad x_seq summed over time [...], summed in the loop
    (the gradient of an input fed at every step): no [T, ...] gradient is formed either.

    PLIF's dL/dk sums dL/dH[t] * dH[t]/dk, which needs V[t-1]: walking back, V[t-1] comes from
    H[t-1] one step later, so dL/dH[t] (and X[t]) wait in the carry for it; V0 closes the sum."""
    h_first, steps = h_seq[0], len(h_seq)
    cdt = h_first.dtype
    neuron = neuron.computing_in(cdt)
    charge_form, v_threshold, v_reset = neuron.charge_form, neuron.v_threshold, neuron.v_reset
    leak_x = grad_leak and charge_form == DECAY_INPUT  # dH/dk needs X[t] only in the decay_input form
    looped = as_loop(steps)

    def zeros():  # a new one each time: the scan's carry may not hold one tensor twice
        return h_first.new_zeros(h_first.shape)

    grad_v = zeros() if grad_v_last is None else grad_v_last.to(cdt)  # dL/dV[t], flowing back from t+1
    # (dL/dV[t],) + for PLIF (dL/dk sum, dL/dH[t+1]) + for its decay_input form X[t+1]
    carry = (grad_v,) + ((zeros(), zeros()) if grad_leak else ()) + ((zeros(),) if leak_x else ())
    inputs = (grad_s_seq, h_seq) + ((x_seq,) if leak_x else ())

    def step(carry, inputs):
        grad_spike, h = inputs[0].to(cdt), inputs[1]
        if max_pool:
            grad_spike = route_to_max(grad_spike, fires(h, v_threshold))
        grad_h, grad_x, grad_v = backward_step(carry[0], grad_spike, h, neuron)
        if looped and grad_x is grad_h:  # the scan's step may return no tensor twice (IF: dL/dX = dL/dV = dL/dH)
            grad_x = grad_x.clone()
        if not grad_leak:
            return (grad_v,), grad_x
        v = reset(h, fires(h, v_threshold), v_threshold, v_reset)  # V[t]: t+1's V[t-1]
        leak_sum = carry[1] + carry[2] * charge_leak_derivative(v, carry[3] if leak_x else None, charge_form, v_reset)
        # X[t] waits one step; copied, as the scan's step may not return its input
        return (grad_v, leak_sum, grad_h) + ((inputs[2].to(cdt, copy=True),) if leak_x else ()), grad_x

    def summing_step(carry, inputs):  # dL/dX summed over time in the carry: no [T, ...] gradient
        carry_before, grad_x = step(carry[:-1], inputs)
        return carry_before + (carry[-1] + grad_x,), ()

    run_step = summing_step if sum_over_time else step
    if sum_over_time:
        carry = carry + (zeros(),)
    if looped:
        carry, grad_x_seq = loop(run_step, carry, inputs, reverse=True)
    else:
        grad_x = [None] * steps
        for t in reversed(range(steps)):
            carry, grad_x[t] = run_step(carry, tuple(seq[t] for seq in inputs))
        grad_x_seq = None if sum_over_time else torch.stack(grad_x)
    if sum_over_time:
        carry, grad_x_seq = carry[:-1], carry[-1]
    grad_v, leak_sum = carry[0], None
    if grad_leak:  # the last term: dL/dH[0] with V[-1] = V0
        v_first = initial_potential(h_first, v_init, v_reset)
        leak_sum = carry[1] + carry[2] * charge_leak_derivative(
            v_first, carry[3] if leak_x else None, charge_form, v_reset
        )
    return (
        grad_x_seq.to(grad_s_seq.dtype),
        grad_v if grad_v_init else h_first.new_empty(0),
        leak_sum.sum() if grad_leak else h_first.new_empty(0),
    )


def initial_potential(like: torch.Tensor, v_init: Optional[torch.Tensor], v_reset: float | None) -> torch.Tensor:
    """V[-1] in `like`'s shape and dtype: v_init, or the rest potential where none is given."""
    return torch.full_like(like, rest_potential(v_reset)) if v_init is None else v_init.to(like.dtype)


def recorded_scan(x_seq: torch.Tensor, v_init: Optional[torch.Tensor], neuron: Neuron) -> list[StepRecord]:
    """Eager: lif_scan_forward's steps of x_seq [T, ...] from v_init [...] or None, each step's
    StepRecord kept (compute dtype) for recorded_scan_backward, nothing stacked."""
    x_seq = x_seq.to(compute_dtype(x_seq.dtype))
    neuron = neuron.computing_in(x_seq.dtype)
    v = initial_potential(x_seq[0], v_init, neuron.v_reset)
    records = []
    for x in x_seq:
        v, record = recorded_step(v, x, neuron)
        records.append(record)
    return records


def recorded_scan_backward(
    grad_s_seq: torch.Tensor,
    records: list[StepRecord],
    grad_v_last: Optional[torch.Tensor],
    neuron: Neuron,
    grad_v_init: bool,
    grad_leak: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eager: lif_scan_backward's results from recorded_scan's records in place of H: each backward
    step reads S[t], 1 - S[t] and dH[t]/dk as forward left them, rather than computing them again
    (PLIF's leak gradient then needs neither X nor a step's wait for V[t-1])."""
    h_first = records[0].h
    cdt = h_first.dtype
    neuron = neuron.computing_in(cdt)
    grad_v = h_first.new_zeros(h_first.shape) if grad_v_last is None else grad_v_last.to(cdt)
    grad_x, leak_sum = [None] * len(records), None
    for t in reversed(range(len(records))):
        h, spike, keep, operand = records[t]
        grad_h, grad_x[t], grad_v = backward_step(grad_v, grad_s_seq[t].to(cdt), h, neuron, spike, keep)
        if grad_leak:
            term = grad_h * operand  # not addcmul, which fuses: the sum of lif_scan_backward, bit for bit
            leak_sum = term if leak_sum is None else leak_sum + term
    return (
        torch.stack(grad_x).to(grad_s_seq.dtype),
        grad_v if grad_v_init else h_first.new_empty(0),
        leak_sum.sum() * LEAK_SIGN[neuron.charge_form] if grad_leak else h_first.new_empty(0),
    )


# ---- static input and fused 2x2 max pooling --------------------------------------------------


# A pooling as F.max_pool2d takes it: kernel_size, stride, padding, dilation (pairs) and ceil_mode.
PoolArgs = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], bool]
POOL_2X2: PoolArgs = ((2, 2), (2, 2), (0, 0), (1, 1), False)
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # a 2x2 window's cells in reading order


def corners(x: torch.Tensor, h2: int, w2: int) -> list[torch.Tensor]:
    """The four cells of every 2x2 window of x [..., H, W], each [..., h2, w2] (strided views)."""
    return [x[..., r : 2 * h2 : 2, c : 2 * w2 : 2] for r, c in CORNERS]


def max_pool_spikes(spike_seq: torch.Tensor, pool: PoolArgs = POOL_2X2) -> torch.Tensor:
    """[..., C, H, W] -> max pooling of each map (`pool` as F.max_pool2d takes it; 2x2 by default).
    Eager, the 2x2 pooling is the maximum of the windows' four strided cells: the same values (a
    maximum is exact) in a tenth of max_pool2d's CPU time."""
    if pool == POOL_2X2 and not being_compiled():
        a, b, c, d = corners(spike_seq, spike_seq.shape[-2] // 2, spike_seq.shape[-1] // 2)
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
    maps = spike_seq.reshape(-1, *spike_seq.shape[-3:])
    pooled = F.max_pool2d(fast_pool_layout(maps), *pool)
    if maps.is_contiguous():  # in the layout max_pool2d gives for maps: the layers after it see no change
        pooled = pooled.contiguous()
    return pooled.reshape(*spike_seq.shape[:-3], *pooled.shape[-3:])


def fast_pool_layout(maps: torch.Tensor) -> torch.Tensor:
    """maps [N, C, H, W], eager on a CPU, channels-last: there max_pool2d's kernel runs along C, several
    times faster than over NCHW's windows, copy included, with the same values and indices."""
    if maps.device.type != "cpu" or being_compiled():
        return maps
    return maps.contiguous(memory_format=torch.channels_last)


def route_to_max(grad_pooled: torch.Tensor, spike: torch.Tensor, pool: PoolArgs = POOL_2X2) -> torch.Tensor:
    """dL/dS [..., H, W] from dL/d(pooled) [..., H', W'], routed as torch's max_pool2d routes it
    (its own indices): each window's gradient to the window's first maximum, ties of zeros included;
    0 elsewhere, and on a row or column the floor of H/2, W/2 drops. Compiled, the 2x2 routing is the
    same rule written elementwise (route_to_first_spike), which inductor fuses into the step instead of
    a gather; eager on a CPU, route_to_window_cells where the gradient is finite; otherwise max_pool2d's
    own indices."""
    if pool == POOL_2X2 and being_compiled():
        return route_to_first_spike(grad_pooled, spike)
    maps = spike.reshape(-1, *spike.shape[-3:])
    # spikes made in float32 from a half type: the routing only selects, so it is exact in their dtype
    grads = grad_pooled.reshape(-1, *grad_pooled.shape[-3:]).to(maps.dtype)
    # one pass to check, on a CPU (elsewhere it would wait on the device): a NaN or inf would spread
    # over its window's cells in the arithmetic (any overflow of the sum takes the exact indices too)
    if pool == POOL_2X2 and maps.device.type == "cpu" and bool(torch.isfinite(grads.sum())):
        return route_to_window_cells(grads, maps).reshape(spike.shape)
    _, indices = torch.ops.aten.max_pool2d_with_indices(fast_pool_layout(maps), *pool)
    grad = torch.ops.aten.max_pool2d_with_indices_backward(grads, maps, *pool, indices)
    return grad.reshape(spike.shape)


def route_to_window_cells(grad_pooled: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
    """The 2x2 route_to_max, eager: each window's gradient, in reading order of its cells, to the first
    that holds a spike (to its first cell where none does), written straight into the cells' strided
    views: a quarter-size multiply and subtract a cell, no indices, no scatter. Spikes are 0 or 1 and
    the gradient finite, so every product and difference is exact (a zero's sign aside)."""
    h2, w2 = grad_pooled.shape[-2:]
    odd = spike.shape[-2] != 2 * h2 or spike.shape[-1] != 2 * w2  # a dropped row or column gets 0
    grad = torch.zeros_like(spike) if odd else torch.empty_like(spike)  # in the spikes' memory format
    first, *others = corners(grad, h2, w2)
    first_spikes, *other_spikes = corners(spike, h2, w2)
    torch.mul(grad_pooled, first_spikes, out=first)
    left = grad_pooled - first  # what no cell before has taken
    for cell, spikes in zip(others, other_spikes):
        torch.mul(left, spikes, out=cell)
        left.sub_(cell)
    first.add_(left)  # a window with no spike: all of it to its first cell
    return grad


def route_to_first_spike(grad_pooled: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
    """route_to_max for spikes (0 or 1), with no indices: a window's first maximum in reading order is
    its first spike, or its top-left cell where it has none."""
    h2, w2 = grad_pooled.shape[-2:]
    cells = spike[..., : 2 * h2, : 2 * w2].unflatten(-1, (w2, 2)).unflatten(-3, (h2, 2)) > 0  # [..., h2, 2, w2, 2]
    a, b, c, d = cells[..., 0, :, 0], cells[..., 0, :, 1], cells[..., 1, :, 0], cells[..., 1, :, 1]
    first = (a | ~(b | c | d), ~a & b, ~(a | b) & c, ~(a | b | c) & d)
    routed = [torch.where(m, grad_pooled, 0.0) for m in first]
    grad = torch.zeros_like(spike, dtype=grad_pooled.dtype)  # in the spikes' memory format
    grad[..., : 2 * h2, : 2 * w2] = (
        torch.stack([torch.stack(routed[:2], -1), torch.stack(routed[2:], -1)], -3).flatten(-4, -3).flatten(-2, -1)
    )
    return grad


@in_cache_blocks(first_is_sequence=False)
def lif_static_forward(x: torch.Tensor, steps: int, neuron: Neuron, max_pool: bool) -> torch.Tensor:
    """x [...] fed at every one of `steps` steps -> spikes [steps, ...] (2x2 max-pooled if max_pool:
    x is [N, C, H, W]). Nothing is kept for backward but x itself."""
    x_seq = x.to(compute_dtype(x.dtype)).expand(steps, *x.shape)
    spike_seq, _, _ = lif_scan_forward(x_seq, None, neuron, False, keep_h=False)
    return (max_pool_spikes(spike_seq) if max_pool else spike_seq).to(x.dtype)


@in_cache_blocks(first_is_sequence=True)
def lif_static_backward(grad_s_seq: torch.Tensor, x: torch.Tensor, neuron: Neuron, max_pool: bool) -> torch.Tensor:
    """dL/dx [...] of lif_static_forward, by forward-mode differentiation: the input is one number per
    neuron fed at every step, so dV[t]/dx is one number per neuron too, carried forward beside V
    (its charge is the charge's linear part at dV, dX = 1); dL/dx = sum_t dL/dS[t] * dS[t]/dx, summed
    as the steps go. H is recomputed, never saved, and no [T, ...] gradient is formed.

    Under torch.compile, backpropagation through the recomputed steps instead (H and the spikes of
    every step live only inside backward): inductor fuses it as it fuses the plain scan's backward,
    where the forward-mode steps unrolled compile far slower and run no faster. The gradient is the
    same, summed in another order, step by step in the backward loop's carry (no [T, ...] gradient)."""
    if being_compiled():
        x_seq = x.to(compute_dtype(x.dtype)).expand(grad_s_seq.shape[0], *x.shape)
        _, h_seq, _ = lif_scan_forward(x_seq, None, neuron, False)
        return lif_scan_backward(
            grad_s_seq, h_seq, None, None, None, neuron, False, False, max_pool=max_pool, sum_over_time=True
        )[0]
    grad_dtype, cdt = grad_s_seq.dtype, compute_dtype(x.dtype)
    x = x.to(cdt)
    neuron = neuron.computing_in(cdt)
    v_threshold, v_reset = neuron.v_threshold, neuron.v_reset

    def step(carry, grad_s):
        v, dv, grad_x = carry
        v_next, spike, h = forward_step(v, x, neuron)
        u = h - v_threshold
        dh = charge(dv, 1.0, neuron.charge_form, neuron.leak, None)
        ds = surrogate_grad(u, neuron.surrogate, neuron.beta) * dh
        if max_pool:
            grad_s = route_to_max(grad_s, spike.to(grad_dtype))
        grad_x = grad_x + grad_s.to(cdt) * ds
        dv_dh, dv_ds = reset_derivatives(h, spike, v_threshold, v_reset)  # the spike of forward, not recomputed
        dv = dv_dh * dh if neuron.detach_reset else dv_dh * dh + dv_ds * ds
        return v_next, dv, grad_x

    carry = (torch.full_like(x, rest_potential(v_reset)), torch.zeros_like(x), torch.zeros_like(x))
    for grad_s in grad_s_seq:  # eager only (compiled: the branch above)
        carry = step(carry, grad_s)
    return carry[2].to(grad_dtype)


@in_cache_blocks(first_is_sequence=True)
def lif_pool_forward(x_seq: torch.Tensor, neuron: Neuron) -> tuple[torch.Tensor, torch.Tensor]:
    """x_seq [T, N, C, H, W] -> (2x2 max-pooled spikes [T, N, C, H//2, W//2] in x_seq's dtype,
    H [T, N, C, H, W] in the compute dtype, kept for backward)."""
    spike_seq, h_seq, _ = lif_scan_forward(x_seq, None, neuron, False)
    return max_pool_spikes(spike_seq), h_seq


@in_cache_blocks(first_is_sequence=True)
def lif_pool_backward(grad_pooled_seq: torch.Tensor, h_seq: torch.Tensor, neuron: Neuron) -> torch.Tensor:
    """dL/dx_seq of lif_pool_forward: BPTT, each step's gradient routed as max_pool2d routes it (the
    spikes recomputed from H)."""
    return lif_scan_backward(grad_pooled_seq, h_seq, None, None, None, neuron, False, False, max_pool=True)[0]


# ---- spikes saved as bits ------------------------------------------------------------------------


def pack_bits(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (contiguous) -> (uint8 [ceil(numel / 8)], bit k of byte b the spike x.flatten()[8b + k] != 0;
    a 0-dim bool: whether every value is 0 or 1, i.e. the bits hold x exactly)."""
    flat = x.reshape(-1)
    if flat.numel() == 0:  # an empty batch: nothing to hold, and aminmax has no empty reduction
        return flat.new_empty(0, dtype=torch.uint8), torch.ones((), dtype=torch.bool, device=x.device)
    # x - x*x is 0 at 0 and 1, > 0 between them (even rounded) and < 0 (or NaN) outside: one pass
    # and a reduction instead of two compares, an OR and an all.
    low, high = torch.aminmax(torch.addcmul(flat, flat, flat, value=-1))
    binary = torch.logical_and(low == 0, high == 0)
    bits = flat.to(torch.bool).view(torch.uint8)  # x != 0, in a several times faster conversion than ne's
    if flat.numel() % 8:
        bits = F.pad(bits, (0, -flat.numel() % 8))
    # Eight 0/1 bytes read as one little-endian int64: the multiply moves byte k to bit 56 + k, with
    # no two partial products on one bit (so no carries); a quarter of a per-byte weighted sum's time.
    # The shift is arithmetic (bit 63 copied down), and the cast to uint8 keeps the low byte.
    return ((bits.view(torch.int64) * 0x0102040810204080) >> 56).to(torch.uint8), binary


@functools.cache
def byte_spikes(device: torch.device) -> torch.Tensor:
    """int64 [256]: for each byte b, its eight bits as eight 0/1 bytes (bit k in byte k), read as one
    little-endian int64: unpack_bits' lookup table."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return bits.to(torch.uint8).view(torch.int64).view(-1)


def unpack_bits(bits: torch.Tensor, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [ceil(numel / 8)] -> [numel] of 0 and 1 in dtype (pack_bits' inverse): one table lookup a
    byte (byte_spikes), then one cast."""
    spread = byte_spikes(bits.device).index_select(0, bits.to(torch.int32))
    return spread.view(torch.uint8)[:numel].to(dtype)


# ---- max pooling of spikes kept as bits ----------------------------------------------------------


def spike_max_pool2d_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """dL/dx [N, C, H, W] of max_pool2d(x) for spikes x (0 or 1, any integer or float dtype, [N, C, H, W]),
    from dL/dout [N, C, OH, OW]; OH, OW say whether ceil_mode made the last windows. Each window's
    gradient goes to its first maximum in row-major window order, the one max_pool2d's indices pick:
    its first spike, or its first cell inside the input where it has none (padding is -inf, never a
    maximum). A cell sums the gradients of the windows it is the first maximum of in row-major order
    of the windows, the order max_pool2d's backward adds them in (in the compute dtype, rounded once).
    The result is in grad_out's dtype, laid out as x where x is NCHW or channels-last."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    (h, w), (oh, ow) = x.shape[-2:], grad_out.shape[-2:]
    # Worked on as [N, H, W, C] where x is channels-last, else [N, C, H, W, 1]: the windows slide over
    # dims -3 and -2, and the last dim is the one memory runs along.
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    frame = (lambda t: t.permute(0, 2, 3, 1)) if channels_last else (lambda t: t.unsqueeze(-1))  # noqa: E731
    # padded on the right and below as far as ceil_mode's last window reaches
    hp, wp = max(h + 2 * ph, (oh - 1) * sh + (kh - 1) * dh + 1), max(w + 2 * pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    spikes = frame(x.to(torch.int8))
    if (hp, wp) != (h, w):
        spikes = F.pad(spikes, (0, 0, pw, wp - w - pw, ph, hp - h - ph), value=-1)  # -1: outside x

    def cell(t: torch.Tensor, k: int) -> torch.Tensor:  # cell k (row-major) of every window: [..., OH, OW, C']
        a, b = divmod(k, kw)
        return t[..., a * dh : a * dh + (oh - 1) * sh + 1 : sh, b * dw : b * dw + (ow - 1) * sw + 1 : sw, :]

    # The cells of every window side by side, [kh * kw, ..., OH, OW, C']: the one strided read of the spikes.
    cells = torch.stack([cell(spikes, k) for k in range(kh * kw)])
    is_max = cells == cells.amax(0)
    firsts, taken = [is_max[0]], is_max[0]
    for k in range(1, kh * kw):  # the window's first maximum: the first cell equal to its maximum
        firsts.append(is_max[k] & ~taken)
        taken = taken | firsts[k]
    cdt = compute_dtype(grad_out.dtype)
    # The routed gradient as bits: the gradient's times 1, or 0 (+0.0). A select is several times slower
    # on a CPU, and a float product would turn the 0 of a non-finite gradient into NaN.
    grad_bits = frame(grad_out.to(cdt)).contiguous().view(torch.int64 if cdt == torch.float64 else torch.int32)
    tiled = (sh, sw, dh, dw) == (kh, kw, 1, 1) and (hp, wp) == (oh * kh, ow * kw)  # every cell in one window
    grad = spikes.new_empty(spikes.shape, dtype=cdt) if tiled else spikes.new_zeros(spikes.shape, dtype=cdt)
    overlap = sh < (kh - 1) * dh + 1 or sw < (kw - 1) * dw + 1
    for k in reversed(range(kh * kw)):  # k descending: the windows that reach a cell by k come in row-major order
        routed = (grad_bits * firsts[k]).view(cdt)
        if overlap:
            cell(grad, k).add_(routed)
        else:  # a cell in one window at most
            cell(grad, k).copy_(routed)
    grad = grad[..., ph : ph + h, pw : pw + w, :]
    grad = grad.permute(0, 3, 1, 2) if channels_last else grad.squeeze(-1)
    if (hp, wp) == (h, w) and grad.dtype == grad_out.dtype:
        return grad
    return torch.empty_like(x, dtype=grad_out.dtype).copy_(grad)
