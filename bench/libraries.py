"""Every SNN library's LIF a user would pick instead of ours, configured as the closest equivalent
of our LIF, on the Open Neuromorphic SNN-library benchmark's workload (test_libraries.py).

Ours (docs/design.md): ``H = V + (X - V)/tau``, ``S = [H >= v_threshold]``, ``V = H (1 - S)``: decay
``1 - 1/tau`` with the input scaled by ``1/tau``, hard reset to 0 in the same step, the reset not
detached; tau 2, v_threshold 1, timed with SuperSpike (beta 10). Each library, configured so:

| library | neuron | configured | fires on | reset | surrogate h(u), u = H - v_threshold |
| --- | --- | --- | --- | --- | --- |
| snnTorch 1.0.0 | `Leaky`, stepped | beta = 1 - 1/tau; input divided by tau (Leaky adds it undivided) | `>` | `zero`, `reset_delay=False`: differentiable, as ours (the default zeroes V at the next step with the spike detached: the same spikes, ours with detach_reset's gradient) | `fast_sigmoid(slope=10)`: ours |
| Norse 1.1.0 | `LIFBoxCell` (no current), stepped | dt = 1 ms, tau_mem_inv = 1/(tau dt) | `>` | to v_reset | SuperSpike: `1/(abs(u)+1)^2`, Norse ignores its alpha: ours at beta 1, the only beta it gives (beta 10 would take the voltage in units a tenth as large: the input times 10, one more op per element; h costs the same at every beta) |
| Norse 1.1.0 | `LIF` (current-based) | as LIFBox, and tau_syn_inv = 1/dt: the current decays fully each step, so it carries exactly this step's input | `>` | to v_reset | as LIFBox |
| sinabs 3.1.3 | `LIF`, batch first | tau_mem = 1/ln(tau/(tau-1)) (decay exp(-1/tau_mem) = 1 - 1/tau exactly), `norm_input` scales by 1 - decay; tau and threshold frozen; `SingleSpike` (the default `MultiSpike` fires floor(H/v_threshold) spikes at once) | `>=` | `MembraneReset()`: the reset is not differentiable (ours with detach_reset) | a SuperSpike callable, beta 10: ours |
| spikingjelly 0.0.0.0.14 / 2.0.0 | peers.py's `LIFNode` / `lif_multi_step` | the same equations | `>=` | the same | `SoftSign(alpha=10)`: alpha/(2 (1 + abs(alpha u))^2), 5 times ours (grad_scale 5); 0.0.0.0.14's cupy backend (GPU) builds its kernels from a surrogate's `cuda_codes`, which SoftSign lacks, so it runs `Sigmoid(alpha=4)`, 4 times our sigmoid at beta 4, and its rows say so (`note`); 2.0.0's Triton and CPU kernels have SoftSign |

EXODUS (sinabs' CUDA LIF) is a source package that builds a CUDA extension against the installed
torch; it is not installed here (no nvcc on the CPU machine, and no build time in the GPU check).

"Stepped" means this file's loop, ``for x in x_seq``: iterating unbinds the input, so backward writes
each step's gradient once. Norse's ``LIF`` (and its ``Lift``), sinabs and spikingjelly 0.0.0.0.14's
torch backend index ``x_seq[t]`` instead, and the backward of each index writes a zero-filled
gradient of the whole input: quadratic in T (at T=500 most of their forward+backward time on a CPU).

Every one computes our spikes up to rounding (agree.py checks that before timing, and its
gradients against the definition run with the claimed surrogate). Only the order of operations
differs: ``0.5*V + 0.5*X`` (snnTorch, sinabs) against ``V + (X - V)/2``, and ``>`` against ``>=``.
SuperSpike's family throughout, except Norse (only beta 1 is possible) and spikingjelly's cupy.

Compiled (``torch.compile`` of the whole model) at every case where ours is (workloads.LIBRARY_COMPILED),
but for the peers whose loop over T dynamo unrolls (``Library.unrolled``), which are compiled only up
to T = workloads.UNROLLED_T_MAX; their rows at longer T say so. Dynamo graph-breaks in snnTorch's,
Norse's LIFBoxCell and sinabs' step, so it compiles one step and reuses it at every T; spikingjelly
2.0.0's LIF is one registered op over T, and 0.0.0.0.14's cupy one kernel. Norse's LIF (after two graph
breaks) and spikingjelly 0.0.0.0.14's torch loop (none) are traced whole, T steps unrolled: on a CPU
(one thread, 512 neurons, a cold cache) dynamo and AOTAutograd alone (backend ``aot_eager``, no code
generated) take 160 s and 60 s for their first forward+backward at T=500, against 3.5 s for snnTorch
(its first forward+backward under inductor: 16 s at T=8, 66 s at T=500 with another compile sharing
the CPU); inductor takes 96 s for spikingjelly 0.0.0.0.14's at T=8 and had not finished after 17
minutes at T=64. The GPU check's peers stage has
no room for those at T=500, and it caps the other peers' compiles at SNN_BENCH_PEER_COMPILE_SECONDS
(test_libraries.py), so that slow compiles still leave it the time for every case's eager rows.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from agree import Claim, agreeing_neurons, close
from peers import COMPILE_BACKEND, TAU, V_RESET, V_THRESHOLD, spikingjelly_impls
from workloads import DEVICE, LIBRARY_BATCH, UNROLLED_T_MAX, randn

import snn_triton as st

SURROGATE, BETA = "superspike", st.SURROGATES["superspike"]
NORSE_DT = 1e-3  # Norse's default time step; only dt / tau matters
torch._dynamo.config.recompile_limit = 64  # every compiled model below shares one code object


def version(package: str) -> str:
    return importlib.metadata.version(package)


def snntorch_leaky():
    import snntorch

    leaky = snntorch.Leaky(
        beta=1 - 1 / TAU,
        threshold=V_THRESHOLD,
        spike_grad=snntorch.surrogate.fast_sigmoid(slope=BETA),
        reset_mechanism="zero",
        reset_delay=False,
    ).to(DEVICE)  # its state is a buffer

    def lif(x_seq):
        mem = leaky.init_leaky()
        spikes = []
        for x in x_seq / TAU:
            spike, mem = leaky(x, mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return lif, Claim(SURROGATE, BETA)


def norse_parameters(**extra) -> dict:
    tensor = lambda value: torch.tensor(value, device=DEVICE)  # noqa: E731  Norse keeps its parameters as given
    return dict(
        tau_mem_inv=tensor(1 / (TAU * NORSE_DT)),
        v_leak=tensor(0.0),
        v_th=tensor(V_THRESHOLD),
        v_reset=tensor(V_RESET),
        method="super",
        alpha=tensor(BETA),
        **extra,
    )


NORSE_CLAIM = Claim(SURROGATE, 1.0)  # Norse 1.1.0's SuperSpike backward leaves alpha out


def norse_lif_box():
    from norse.torch import LIFBoxCell, LIFBoxParameters

    cell = LIFBoxCell(LIFBoxParameters(**norse_parameters()), dt=NORSE_DT)

    def lif(x_seq):
        state, spikes = None, []
        for x in x_seq:
            spike, state = cell(x, state)
            spikes.append(spike)
        return torch.stack(spikes)

    return lif, NORSE_CLAIM


def norse_lif():
    from norse.torch import LIF, LIFParameters

    module = LIF(LIFParameters(**norse_parameters(tau_syn_inv=torch.tensor(1 / NORSE_DT, device=DEVICE))), dt=NORSE_DT)
    return lambda x_seq: module(x_seq)[0], NORSE_CLAIM


@dataclass
class SinabsSuperSpike:
    """Our SuperSpike as a sinabs surrogate_grad_fn, which sinabs calls with (v_mem, spike_threshold)."""

    beta: float

    def __call__(self, v_mem, spike_threshold):
        return (self.beta * (v_mem - spike_threshold).abs() + 1.0).pow(-2)


def sinabs_lif():
    from sinabs.activation import MembraneReset, SingleSpike
    from sinabs.layers import LIF

    layer = (
        LIF(
            tau_mem=1 / math.log(TAU / (TAU - 1)),
            spike_threshold=V_THRESHOLD,
            spike_fn=SingleSpike,
            reset_fn=MembraneReset(V_RESET),
            surrogate_grad_fn=SinabsSuperSpike(BETA),
            norm_input=True,
        )
        .to(DEVICE)
        .requires_grad_(False)
    )

    def lif(x_seq):
        layer.reset_states()  # sinabs keeps the state between calls: start from 0, as ours does
        return layer(x_seq.transpose(0, 1)).transpose(0, 1)  # sinabs is batch first: [N, T, ...]

    return lif, Claim(SURROGATE, BETA, detach_reset=True)


def ours():
    return (
        lambda x_seq: st.lif_scan(
            x_seq, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET, surrogate=SURROGATE, beta=BETA
        )
    ), Claim(SURROGATE, BETA)


class Library(NamedTuple):
    package: str | None  # the distribution that must be installed (None: always here)
    make: Callable  # -> (x_seq [T, ...] -> spikes, Claim)
    note: str | None = None  # where it is not configured as the table says: its rows say so
    unrolled: bool = False  # dynamo traces its loop over T whole (no graph break in it): a compile unrolls T steps


def libraries() -> dict[str, Library]:
    """Name -> Library; their compiled variants are named "<name> compiled"."""
    named = {"snn_triton": Library(None, ours)}
    # Dynamo graph-breaks in snnTorch's, Norse's LIFBoxCell and sinabs' step, so it compiles one step and
    # reuses it at every T; after Norse LIF's breaks it traces its loop whole (tests/test_bench_libraries.py).
    for package, neuron, make, unrolled in [
        ("snntorch", "Leaky", snntorch_leaky, False),
        ("norse", "LIFBoxCell", norse_lif_box, False),
        ("norse", "LIF", norse_lif, True),
        ("sinabs", "LIF", sinabs_lif, False),
    ]:
        label = {"snntorch": "snnTorch", "norse": "Norse"}.get(package, package)
        installed = importlib.util.find_spec(package) is not None
        named[f"{label} {version(package) if installed else ''} {neuron}".replace("  ", " ")] = Library(
            package, make, unrolled=unrolled
        )
    for name, peer in spikingjelly_impls(SURROGATE).items():
        named[name] = Library(None, lambda peer=peer: (peer.make(), peer.claim), peer.note, peer.unrolled)
    return named


# ---- the workload: Linear(neurons, neurons) then the LIF, [T, batch, neurons] ------------------


class Workload(NamedTuple):
    x: torch.Tensor  # [T, batch, neurons] input
    linear: torch.nn.Linear
    grad: torch.Tensor  # [T, batch, neurons] upstream gradient of the spikes


def workload(T: int, neurons: int) -> Workload:
    """The same for every implementation and every process: seeded input, weights and gradient."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        linear = torch.nn.Linear(neurons, neurons).to(DEVICE)  # PyTorch's init: |w| <= 1/sqrt(neurons)
    # Currents of std ~1.2 around 0: about a tenth of the neurons fire at each step.
    x = randn((T, LIBRARY_BATCH, neurons), torch.float32, seed=1, scale=2.0)
    return Workload(x, linear, randn((T, LIBRARY_BATCH, neurons), torch.float32, seed=2))


class Prepared(NamedTuple):
    calls: dict[str, Callable]  # phase -> the timed call
    check: str  # what agreed with the definition
    first_call_seconds: float  # the first forward+backward: the compile, for a compiled model
    note: str | None = None  # Library.note


def prepare(name: str, T: int, neurons: int) -> Prepared:
    """Build `name` (a library's name, "... compiled" for torch.compile of the whole model) on the
    case's workload, run it once, check it against the definition (raises agree.Disagree), and
    return its timed calls. Raises ModuleNotFoundError when the library is not installed."""
    import time

    library = libraries()[name.removesuffix(" compiled")]
    if library.package and importlib.util.find_spec(library.package) is None:
        raise ModuleNotFoundError(f"{library.package} not installed (pip install -e '.[peers]')")
    lif, claim = library.make()
    work = workload(T, neurons)
    params = list(work.linear.parameters())

    def model(x):
        return lif(work.linear(x))

    if name.endswith(" compiled"):
        model = torch.compile(model, backend=COMPILE_BACKEND)

    def forward_backward():
        spikes = model(work.x)
        return spikes, torch.autograd.grad(spikes, params, work.grad)

    start = time.perf_counter()
    spikes, grads = forward_backward()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    first_call = time.perf_counter() - start
    current = work.linear(work.x).detach()
    agree, found = agreeing_neurons(
        spikes.reshape(current.shape), current, tau=TAU, v_threshold=V_THRESHOLD, v_reset=V_RESET
    )
    definition = claim.lif(TAU, V_THRESHOLD, V_RESET)(work.linear(work.x))
    rows = agree.all(0)  # the output neurons whose spikes agree in every sample
    for what, theirs, ours in zip(
        ["grad weight", "grad bias"], grads, torch.autograd.grad(definition, params, work.grad)
    ):
        close(theirs, ours, rows[:, None] if theirs.dim() == 2 else rows, what)
    calls = {"fwd": lambda: model(work.x), "fwd+bwd": forward_backward}
    return Prepared(calls, f"{found}; {claim.describe()}", first_call, library.note)


def not_compiled_why(name: str, T: int) -> str | None:
    """Why `name` is not compiled at T although the case is compiled, or None."""
    if libraries()[name].unrolled and T > UNROLLED_T_MAX:
        return (
            f"not compiled: dynamo unrolls its loop over T, and {T} steps take longer to compile than the GPU "
            f"check's peers stage allows (bench/libraries.py: the times measured; UNROLLED_T_MAX = {UNROLLED_T_MAX})"
        )
    return None


def names(T: int, compiled: bool) -> tuple[list[str], dict[str, str]]:
    """(the implementations to run in this process: every library, and at a compiled case the
    compiled variants; {compiled variant left out: why})."""
    run, left_out = [], {}
    for name in libraries():
        run.append(name)
        why = not_compiled_why(name, T) if compiled else None
        if why:
            left_out[f"{name} compiled"] = why
        elif compiled:
            run.append(f"{name} compiled")
    return run, left_out
