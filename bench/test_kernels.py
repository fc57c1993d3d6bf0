"""Kernel suite: st.spike and st.lif_scan against the peers, on the same input in the same run.

Before an implementation is timed, it is checked to compute what ours computes on that input
(agree.py): a peer that does not is recorded with the reason, not timed, and fails its test.

Each row also carries the bytes the kernels must move (snn_triton/kernels/traffic.py: each input
read once, each output written once), so the report can set achieved GB/s against the copy
bandwidth measured here first.
"""

import pytest
import torch
from agree import Disagree, agreeing_neurons, close
from measure import CPU_SECONDS, median_seconds
from oracles import oracle_spike
from peers import TAU, V_RESET, V_THRESHOLD, lif_impls, spike_impls
from workloads import (
    COPY_ELEMENTS,
    DTYPES,
    LIF_CASES,
    LIF_SURROGATE,
    SPIKE_CASES,
    case_id,
    lif_input,
    randn,
    spike_input,
)

import snn_triton as st
from snn_triton.kernels import traffic
from snn_triton.surrogate import SURROGATES


def measure_or_skip(benchmark, record, row, make_impl, make_call, check, cpu_seconds=CPU_SECONDS):
    """Build the implementation and its timed call, run it once, check it (check(impl) says what
    agreed, or raises Disagree), time it (for about `cpu_seconds` on a CPU). A peer that cannot run
    this case is recorded with the reason and skipped; ours failing is a failure; one that disagrees
    is recorded, not timed, and fails."""
    try:
        impl = make_impl()
        call = make_call(impl)
        call()
    except Exception as error:
        if row["impl"].startswith("snn_triton"):
            raise
        reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
        record(dict(row, seconds=None, note=reason))
        pytest.skip(reason)
    try:
        verdict = check(impl)
    except Disagree as error:
        record(dict(row, seconds=None, note=f"not timed: {error}"))
        raise
    record(dict(row, check=verdict, seconds=median_seconds(benchmark, call, cpu_seconds)))


def check_lif(lif, claim, x_seq, grad, phase) -> str:
    """The LIF's spikes against the definition; with backward (float32), its grad x_seq against the
    definition's run as its claim says."""
    spikes = lif(x_seq)
    agree, found = agreeing_neurons(spikes, x_seq, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET)
    if phase == "fwd":
        return found
    definition = claim.lif(TAU, V_THRESHOLD, V_RESET)(x_seq)  # in float32, whatever x_seq's dtype
    close(
        torch.autograd.grad(spikes, x_seq, grad)[0],
        torch.autograd.grad(definition, x_seq, grad)[0],
        agree,
        "grad x_seq",
        x_seq.dtype,
    )
    return f"{found}; {claim.describe()}"


def check_spike(spike, surrogate, x, grad, phase) -> str:
    """heaviside(x) exactly; backward: grad x equal to the notebook's formula (spikingjelly's own
    surrogate for its two), in float64 on the same values."""
    if phase == "fwd":
        differs = int((spike(x) != (x >= 0).to(x.dtype)).sum())
        if differs:
            raise Disagree(f"spikes differ from heaviside(x) at {differs} of {x.numel()}")
        return "spikes equal"
    x64 = x.detach().double().requires_grad_()
    expected = torch.autograd.grad(oracle_spike(x64, surrogate, st.SURROGATES[surrogate]), x64, grad.double())[0]
    close(torch.autograd.grad(spike(x), x, grad)[0], expected, None, f"grad x ({surrogate})", x.dtype)
    return f"grads equal the notebook's formula ({surrogate}, beta {st.SURROGATES[surrogate]:g})"


def test_copy_bandwidth(benchmark, record):
    """The roofline's ceiling: a large device-to-device copy, bytes read plus bytes written."""
    src = randn((COPY_ELEMENTS,), torch.float32, seed=0)
    dst = torch.empty_like(src)
    record(
        dict(
            suite="kernels",
            op="copy",
            phase="copy",
            impl="torch copy_",
            neurons=COPY_ELEMENTS,
            dtype="float32",
            bytes=2 * src.nbytes,
            seconds=median_seconds(benchmark, lambda: dst.copy_(src)),
        )
    )


@pytest.mark.parametrize("impl", list(lif_impls()))
@pytest.mark.parametrize("phase", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", LIF_CASES, ids=case_id)
def test_lif_scan(benchmark, record, case, phase, impl):
    T, neurons, dtype = case
    x_seq, grad = lif_input(T, neurons, dtype)
    model_bytes = traffic.lif_scan_forward_bytes(T, neurons, DTYPES[dtype])
    if phase == "fwd":

        def make_call(lif):
            return lambda: lif(x_seq)
    else:
        model_bytes += traffic.lif_scan_backward_bytes(T, neurons, DTYPES[dtype])

        def make_call(lif):
            return lambda: torch.autograd.grad(lif(x_seq), x_seq, grad)

    row = dict(
        suite="kernels",
        op="lif_scan",
        phase=phase,
        impl=impl,
        T=T,
        neurons=neurons,
        dtype=dtype,
        surrogate=LIF_SURROGATE,
        bytes=model_bytes,
    )
    peer = lif_impls(case)[impl]
    measure_or_skip(
        benchmark, record, row, peer.make, make_call, lambda lif: check_lif(lif, peer.claim, x_seq, grad, phase)
    )


@pytest.mark.parametrize("impl", list(spike_impls("superspike")))
@pytest.mark.parametrize("phase, surrogate", [("fwd", "superspike")] + [("bwd", name) for name in SURROGATES])
@pytest.mark.parametrize("case", SPIKE_CASES, ids=case_id)
def test_spike(benchmark, record, case, phase, surrogate, impl):
    """Forward (the same for every surrogate) and backward alone (the graph kept between calls)."""
    elements, dtype = case
    x, grad = spike_input(elements, dtype)
    if phase == "fwd":
        model_bytes = traffic.spike_forward_bytes(elements, DTYPES[dtype])

        def make_call(spike):
            return lambda: spike(x)
    else:
        model_bytes = traffic.spike_backward_bytes(elements, DTYPES[dtype])

        def make_call(spike):
            s = spike(x)  # one forward; each timed call is one backward through it
            return lambda: torch.autograd.grad(s, x, grad, retain_graph=True)

    row = dict(
        suite="kernels",
        op="spike",
        phase=phase,
        impl=impl,
        neurons=elements,
        dtype=dtype,
        surrogate=surrogate,
        bytes=model_bytes,
    )
    measure_or_skip(
        benchmark,
        record,
        row,
        spike_impls(surrogate, case)[impl],
        make_call,
        lambda spike: check_spike(spike, surrogate, x, grad, phase),
    )
