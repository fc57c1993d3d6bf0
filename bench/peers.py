"""The implementations a benchmark compares, by name, each a factory for a callable.

Ours: the Triton kernels (GPU); the PyTorch reference under torch.compile and eager (CPU).
Peers: a plain PyTorch eager loop with the notebook's surrogate (the baseline every ratio is
taken against), and whichever spikingjelly is importable: 0.0.0.0.14 (the seed's, backends
torch and, on a GPU, cupy) or 2.0.0 (its own Triton kernels; run in a session of its own because
both are the package ``spikingjelly``: see bench/README.md).

The spikingjelly backends get spikingjelly's built-in surrogate of our surrogate's family, which
their fast kernels accept (``SJ_SURROGATES``): ``Sigmoid(alpha=4)`` for our sigmoid (the kernel suite),
``SoftSign(alpha=10)`` for our SuperSpike (the libraries suite); each h is a constant times ours. The
one exception: 0.0.0.0.14's cupy kernels are built from a surrogate's CUDA snippet (``cuda_codes``),
which its SoftSign lacks, so cupy runs ``Sigmoid(alpha=4)`` there, and its row says so (``note``).
2.0.0's Triton and CPU kernels have both (its surrogate ids 0 and 4; a surrogate outside its seven
built-in ones sends ``lif_multi_step`` to its PyTorch reference loop). 2.0.0's own ``SuperSpike(alpha)``
is alpha / (1 + |x|)^2, ours at beta 1 only, so SoftSign is the one of ours at beta 10. A peer that
cannot run a case (no CuPy, a dtype it lacks) is recorded with the error.
Each LIF comes with its ``Claim`` (agree.py): what it computes in our terms, checked before it is timed.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Callable, NamedTuple

import torch
from agree import Claim
from lif_loop import TAU, V_RESET, V_THRESHOLD, eager_loop_lif
from measure import ON_CUDA
from oracles import NotebookSurrogate
from results import BASELINES, OURS
from workloads import LIF_SURROGATE

import snn_triton as st

SPIKINGJELLY = importlib.metadata.version("spikingjelly")
COMPILE_BACKEND = os.environ.get("SNN_BENCH_COMPILE_BACKEND", "inductor")  # "eager" in the dry run: no C++ builds

SJ_ALPHA = 4.0  # spikingjelly's Sigmoid(alpha): h(x) = alpha * s * (1 - s), s = sigmoid(alpha * x)


class SJSurrogate(NamedTuple):
    """A spikingjelly surrogate (its class in ``spikingjelly.activation_based.surrogate``, alpha) and
    the gradient it gives in our terms."""

    name: str
    alpha: float
    claim: Claim

    def make(self):
        from spikingjelly.activation_based import surrogate

        return getattr(surrogate, self.name)(alpha=self.alpha)


SUPERSPIKE_BETA = st.SURROGATES["superspike"]
# Ours -> spikingjelly's of the same family. SoftSign(alpha): g'(x) = alpha / (2 (1 + |alpha x|)^2),
# our SuperSpike 1 / (beta |x| + 1)^2 at beta = alpha, times alpha / 2.
SJ_SURROGATES = {
    "sigmoid": SJSurrogate("Sigmoid", SJ_ALPHA, Claim("sigmoid", SJ_ALPHA, grad_scale=SJ_ALPHA)),
    "superspike": SJSurrogate(
        "SoftSign", SUPERSPIKE_BETA, Claim("superspike", SUPERSPIKE_BETA, grad_scale=SUPERSPIKE_BETA / 2)
    ),
}
NO_CUPY_SOFTSIGN = (
    "surrogate Sigmoid(alpha=4), not SoftSign: spikingjelly 0.0.0.0.14's cupy kernels need a surrogate's "
    "cuda_codes, which its SoftSign lacks"
)

LIF_BASELINE, SPIKE_BASELINE = BASELINES["lif_scan"], BASELINES["spike"]
OUR_CLAIM = Claim(LIF_SURROGATE, st.SURROGATES[LIF_SURROGATE])
SPIKINGJELLY_CLAIM = SJ_SURROGATES["sigmoid"].claim


class Peer(NamedTuple):
    make: Callable[[], Callable]  # -> x_seq [T, ...] -> spikes [T, ...]
    claim: Claim
    note: str | None = None  # where it is not configured as asked: the row says so
    unrolled: bool = False  # dynamo traces its loop over T whole (no graph break in it): a compile unrolls T steps


_compiled = {}


def compiled(fn, case):
    """torch.compile(fn), shared by the benchmarks of one case (the forward's compile serves the
    forward+backward's). Each new case starts dynamo afresh, so none falls back to eager after
    hitting the recompile limit."""
    if case not in _compiled:
        _compiled.clear()
        torch._dynamo.reset()
        _compiled[case] = torch.compile(fn, backend=COMPILE_BACKEND)
    return _compiled[case]


# ---- LIF scan: x_seq [T, N] -> spikes [T, N] ---------------------------------------------------


def ours_lif(backend):
    return lambda x_seq: st.lif_scan(
        x_seq, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET, surrogate=LIF_SURROGATE, backend=backend
    )


def spikingjelly0_lif(backend, sj_surrogate: SJSurrogate = SJ_SURROGATES["sigmoid"]):
    from spikingjelly.activation_based import functional, neuron

    node = neuron.LIFNode(
        tau=TAU,
        decay_input=True,
        v_threshold=V_THRESHOLD,
        v_reset=V_RESET,
        surrogate_function=sj_surrogate.make(),
        step_mode="m",
        backend=backend,
    )

    def lif(x_seq):
        functional.reset_net(node)  # as the notebook does between batches: V starts at v_reset
        return node(x_seq)

    return lif


def spikingjelly2_lif(sj_surrogate: SJSurrogate = SJ_SURROGATES["sigmoid"]):
    """spikingjelly 2.0.0's functional LIF: a float32 state and a built-in surrogate keep it on its
    fast path (one op, its kernels) for every dtype."""
    from spikingjelly.activation_based import functional

    spike = sj_surrogate.make()

    def lif(x_seq):
        v = torch.zeros(x_seq.shape[1:], device=x_seq.device)
        return functional.lif_multi_step(x_seq, v, TAU, True, V_THRESHOLD, V_RESET, spike, False, False)[0]

    return lif


def spikingjelly2_backend() -> str:
    """The implementation spikingjelly 2.0.0 picks on this device (it tries cuda, triton, torch)."""
    if not ON_CUDA:
        return "torch"
    try:
        from spikingjelly._ops.lif import _selection  # private: only to label the row

        return _selection._get_cuda_selection(torch.device("cuda")).name
    except Exception as error:
        return f"auto ({type(error).__name__})"


def spikingjelly_impls(surrogate: str = LIF_SURROGATE) -> dict[str, Peer]:
    """Name -> Peer, for whichever spikingjelly is importable and its backends here, with
    spikingjelly's surrogate of `surrogate`'s family (SJ_SURROGATES) where the backend has it."""
    asked = SJ_SURROGATES[surrogate]
    if SPIKINGJELLY.startswith("0."):
        impls = {}
        for backend in ["torch", "cupy"] if ON_CUDA else ["torch"]:
            sj = SJ_SURROGATES["sigmoid"] if backend == "cupy" else asked  # NO_CUPY_SOFTSIGN
            impls[f"spikingjelly {SPIKINGJELLY} {backend}"] = Peer(
                lambda backend=backend, sj=sj: spikingjelly0_lif(backend, sj),
                sj.claim,
                None if sj is asked else NO_CUPY_SOFTSIGN,
                unrolled=backend == "torch",  # its multi-step loop has no graph break; cupy: one kernel over T
            )
        return impls
    name = f"spikingjelly {SPIKINGJELLY} {spikingjelly2_backend()}"
    return {name: Peer(lambda: spikingjelly2_lif(asked), asked.claim)}  # one registered op over T


def lif_impls(case=None) -> dict[str, Peer]:
    """Name -> Peer(factory of x_seq -> spikes, its claim); `case` keys the compiled variant's cache."""
    if ON_CUDA:
        impls = {OURS["cuda"]: lambda: ours_lif("triton")}
    else:  # the reference, compiled and eager: the CPU path (the kernels' interpreter is no benchmark)
        impls = {
            OURS["cpu"]: lambda: compiled(ours_lif("torch"), ("lif_scan", case)),
            "snn_triton reference": lambda: ours_lif("torch"),
        }
    impls[LIF_BASELINE] = lambda: eager_loop_lif
    return {name: Peer(make, OUR_CLAIM) for name, make in impls.items()} | spikingjelly_impls(LIF_SURROGATE)


# ---- spike: x -> heaviside(x), surrogate backward ------------------------------------------------


def spike_impls(surrogate: str, case=None) -> dict:
    """Name -> factory of x -> spikes with `surrogate` in backward."""

    def ours(backend):
        return lambda x: st.spike(x, surrogate, backend=backend)

    if ON_CUDA:
        impls = {OURS["cuda"]: lambda: ours("triton")}
    else:
        impls = {
            OURS["cpu"]: lambda: compiled(ours("torch"), ("spike", surrogate, case)),
            "snn_triton reference": lambda: ours("torch"),
        }
    impls[SPIKE_BASELINE] = lambda: NotebookSurrogate(surrogate)
    return impls
