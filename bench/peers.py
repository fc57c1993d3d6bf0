"""The implementations a benchmark compares, by name, each a factory for a callable.

Ours: the Triton kernels (GPU); the PyTorch reference under torch.compile and eager (CPU).
Peers: a plain PyTorch eager loop with the notebook's surrogate (the baseline every ratio is
taken against), and whichever spikingjelly is importable: 0.0.0.0.14 (the seed's, backends
torch and, on a GPU, cupy) or 2.0.0 (its own Triton kernels; run in a session of its own because
both are the package ``spikingjelly``: see bench/README.md).

The spikingjelly backends get spikingjelly's built-in ``Sigmoid(alpha=4)``, the closest equivalent
of our sigmoid surrogate that their fast kernels accept (its h(x) is beta times ours: the same
work). A peer that cannot run a case (no CuPy, a dtype it lacks) is recorded with the error.
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

LIF_BASELINE, SPIKE_BASELINE = BASELINES["lif_scan"], BASELINES["spike"]
OUR_CLAIM = Claim(LIF_SURROGATE, st.SURROGATES[LIF_SURROGATE])
SPIKINGJELLY_CLAIM = Claim("sigmoid", SJ_ALPHA, grad_scale=SJ_ALPHA)


class Peer(NamedTuple):
    make: Callable[[], Callable]  # -> x_seq [T, ...] -> spikes [T, ...]
    claim: Claim


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


def spikingjelly0_lif(backend):
    from spikingjelly.activation_based import functional, neuron, surrogate

    node = neuron.LIFNode(
        tau=TAU,
        decay_input=True,
        v_threshold=V_THRESHOLD,
        v_reset=V_RESET,
        surrogate_function=surrogate.Sigmoid(alpha=SJ_ALPHA),
        step_mode="m",
        backend=backend,
    )

    def lif(x_seq):
        functional.reset_net(node)  # as the notebook does between batches: V starts at v_reset
        return node(x_seq)

    return lif


def spikingjelly2_lif():
    """spikingjelly 2.0.0's functional LIF: a float32 state keeps it on its fast path for every dtype."""
    from spikingjelly.activation_based import functional, surrogate

    sigmoid = surrogate.Sigmoid(alpha=SJ_ALPHA)

    def lif(x_seq):
        v = torch.zeros(x_seq.shape[1:], device=x_seq.device)
        return functional.lif_multi_step(x_seq, v, TAU, True, V_THRESHOLD, V_RESET, sigmoid, False, False)[0]

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


def spikingjelly_impls() -> dict:
    """Name -> factory of x_seq -> spikes, for whichever spikingjelly is importable and its backends here."""
    if SPIKINGJELLY.startswith("0."):
        return {
            f"spikingjelly {SPIKINGJELLY} {backend}": lambda backend=backend: spikingjelly0_lif(backend)
            for backend in (["torch", "cupy"] if ON_CUDA else ["torch"])
        }
    return {f"spikingjelly {SPIKINGJELLY} {spikingjelly2_backend()}": spikingjelly2_lif}


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
    peers = {name: Peer(make, OUR_CLAIM) for name, make in impls.items()}
    return peers | {name: Peer(make, SPIKINGJELLY_CLAIM) for name, make in spikingjelly_impls().items()}


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
