"""Ahead-of-time compilation of every kernel launch the ops make, for real GPU targets, on a CPU.

The launches are not written out by hand: each case calls a real launcher from
``snn_triton.kernels`` on ``meta`` tensors and records the kernel and the arguments it passes
(block size, warps, constexprs, sizes, strides). Triton's own binder then turns those into the
signature and the divisibility attributes a real launch would get, and ``triton.compile`` builds
PTX and a cubin for the target; ``cuobjdump`` from triton's package reads the registers and
spills. So what is compiled is what the launchers launch, and cannot drift from it.

Compiling needs the kernels as real ``JITFunction``s, i.e. a process started without
``TRITON_INTERPRET=1``, so the tests run this file as a subprocess:

    TRITON_INTERPRET=0 python tests/aot.py 90 LAUNCH_ID... > results.json

Another triton (e.g. 3.6, installed with ``pip install --target DIR``) is used by putting DIR
first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch

from snn_triton import reference
from snn_triton.reference import compute_dtype
from snn_triton.surrogate import SURROGATES

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

# Tensor layouts [T, neurons...]. Sizes decide the specialization, not the work: a multiple of 16
# gets Triton's divisibility hint, 1 becomes a constant, and 2^31 or more needs 64-bit ints.
LAYOUTS = {
    "aligned": (4, 32, 128),  # what the models launch: every size a multiple of 16
    "expanded": (4, 32, 128),  # the same, input (grad) step stride 0: one step read T times in place
    "odd": (4, 3, 5, 7),  # no divisibility: the kernels must still compile, scalar accesses are expected
    "one": (4, 1),  # n_neurons == 1 is specialized to a constant
    "huge": (2, 2**31),  # n_neurons >= 2^31: int64 sizes and offsets
}
# The pooled scans' steps [T, N, C, H, W]: sizes of 16 where the layout allows vectors, odd ones where not.
POOL_LAYOUTS = {"aligned": (4, 2, 32, 16, 16), "odd": (4, 1, 3, 5, 7)}
# The forms of the static and pooled scans: (static input, pooled, channels-last steps)
FORMS = {
    "static": (True, False, False),
    "static-pool": (True, True, True),
    "static-pool-nchw": (True, True, False),
    "pool": (False, True, True),
    "pool-nchw": (False, True, False),
}
# The max pooling of spikes' backward from bits: [N, C, H, W] and windows (kernel, stride, padding,
# dilation); its forms are "<memory order>-<window>". Dilation 2 and padding 0 are specializations
# of their own (an int argument of 1 is a constant).
SPIKE_POOL_LAYOUTS = {"aligned": (2, 32, 16, 16), "odd": (1, 3, 5, 7), "huge": (2, 2**10, 2**10, 2**10)}
SPIKE_POOL_WINDOWS = {"k2s2": (2, 2, 0, 1), "k3s2p1": (3, 2, 1, 1), "k3s1p1d2": (3, 1, 1, 2)}
LEAN_LAUNCHERS = ("lif_static_forward", "lif_static_backward", "lif_pool_forward", "lif_pool_backward")
LEAN_NEURONS = ("lif", "if", "lif-leak", "lif-scaled")  # the neurons they take: no PLIF leak, no state


@dataclass(frozen=True)
class Variant:
    """A neuron scan as the ops launch it: its charge, PLIF's leak from memory, state in and out."""

    charge_form: int
    plif: bool = False  # the leak k is a tensor (and backward sums dL/dk)
    state: bool = False  # V0 in, V[T-1] out; backward takes dL/dV[T-1] and writes dL/dV0


VARIANTS = {
    "lif": Variant(reference.DECAY_INPUT),  # the seed's
    "if": Variant(reference.IF),
    "lif-leak": Variant(reference.DECAY_POTENTIAL),
    "lif-scaled": Variant(reference.SCALED),
    "plif": Variant(reference.DECAY_INPUT, plif=True),
    "plif-leak": Variant(reference.DECAY_POTENTIAL, plif=True),
    "plif-scaled": Variant(reference.SCALED, plif=True),
    "lif-state": Variant(reference.DECAY_INPUT, state=True),
    "plif-state": Variant(reference.DECAY_INPUT, plif=True, state=True),  # every option at once
}
# A user's surrogate with a triton.jit function (registered in the subprocess), and one with only a
# PyTorch formula (its h is precomputed and loaded: a kernel variant of its own).
USER_SURROGATES = ("user", "user-precomputed")
KERNEL_SURROGATES = list(SURROGATES) + ["user"]
# The scans and the lean forms compile the seed's three, spikingjelly's Sigmoid and ATan and a user's:
# spikingjelly's other surrogates are device functions of the same few ops (exp, a division, a select),
# each compiled in every dtype in the spike's backward, where its registers and spills show alone.
SCAN_KERNEL_SURROGATES = ["superspike", "sigmoid", "esser", "spikingjelly_sigmoid", "atan", "user"]
SCAN_SURROGATES = SCAN_KERNEL_SURROGATES + ["user-precomputed"]


@dataclass(frozen=True)
class Launch:
    """One call of a launcher in ``snn_triton.kernels``; together they cover every kernel specialization."""

    launcher: str
    dtype: torch.dtype
    layout: str = "aligned"
    neuron: str | None = None  # a VARIANTS key, for the scan launchers
    form: str | None = None  # a FORMS key, for the static and pooled scans
    surrogate: str | None = None
    hard_reset: bool | None = None
    detach_reset: bool | None = None

    @property
    def id(self) -> str:
        parts = [
            self.launcher,
            str(self.dtype).removeprefix("torch."),
            self.layout,
            self.neuron,
            self.form,
            self.surrogate,
            {True: "hard", False: "soft"}.get(self.hard_reset),
            {True: "detach"}.get(self.detach_reset),
        ]
        return "-".join(p for p in parts if p)

    @property
    def vectorizable(self) -> bool:
        """Whether every access can be 16 bytes wide: sizes are multiples of 16 elements (and a pooled
        NCHW step, whose windows' neurons stand two apart, is not)."""
        return self.layout in ("aligned", "expanded", "huge") and not (self.form or "").endswith("nchw")

    @property
    def variant(self) -> Variant | None:
        return VARIANTS.get(self.neuron)


SEQUENCE_LAUNCHERS = ("lif_scan_forward", "lif_scan_backward")  # the ones that keep a step stride of 0


def all_launches() -> list[Launch]:
    """A covering set of the specializations, not their full product (hundreds of compiles): every
    surrogate in every dtype; every neuron variant in every dtype, hard and soft reset; the seed's LIF
    backward over surrogate x reset x detach_reset in float32; the other layouts in float32."""
    fp32 = torch.float32
    launches = [Launch("spike_forward", dtype) for dtype in DTYPES]
    launches += [Launch("spike_backward", dtype, surrogate=s) for dtype in DTYPES for s in KERNEL_SURROGATES]
    for neuron in VARIANTS:
        launches += [Launch("lif_scan_forward", dtype, neuron=neuron, hard_reset=True) for dtype in DTYPES]
        launches.append(Launch("lif_scan_forward", fp32, neuron=neuron, hard_reset=False))
        launches += [
            Launch(
                "lif_scan_backward", dtype, neuron=neuron, surrogate="superspike", hard_reset=True, detach_reset=False
            )
            for dtype in DTYPES
        ]
        launches.append(
            Launch(
                "lif_scan_backward", fp32, neuron=neuron, surrogate="superspike", hard_reset=False, detach_reset=True
            )
        )
    launches += [
        Launch("lif_scan_backward", dtype, neuron="lif", surrogate=s, hard_reset=True, detach_reset=False)
        for dtype in DTYPES
        for s in SCAN_SURROGATES
        if s != "superspike"
    ]
    launches += [
        Launch("lif_scan_backward", fp32, neuron="lif", surrogate=s, hard_reset=hard, detach_reset=detach)
        for s in SCAN_SURROGATES
        for hard in (True, False)
        for detach in (False, True)
        if (hard, detach) != (True, False) and (s, hard, detach) != ("superspike", False, True)
    ]
    firsts = {"spike_forward": {}, "spike_backward": dict(surrogate="superspike")}
    for launcher in ("spike_forward", "spike_backward"):  # the elementwise launchers make their input contiguous
        launches += [Launch(launcher, fp32, layout, **firsts[launcher]) for layout in ("odd", "one", "huge")]
    for neuron in ("lif", "plif-state"):
        for layout in ("expanded", "odd", "one", "huge"):
            launches.append(Launch("lif_scan_forward", fp32, layout, neuron=neuron, hard_reset=True))
            launches.append(
                Launch(
                    "lif_scan_backward",
                    fp32,
                    layout,
                    neuron=neuron,
                    surrogate="superspike",
                    hard_reset=True,
                    detach_reset=False,
                )
            )
    launches += lean_launches() + [Launch(launcher, dtype) for launcher in BIT_LAUNCHERS for dtype in DTYPES]
    launches += [Launch(launcher, fp32, "odd") for launcher in BIT_LAUNCHERS]
    launches += spike_pool_launches()
    assert len({launch.id for launch in launches}) == len(launches), "a launch is listed twice"
    return launches


def lean_launches() -> list[Launch]:
    """The static and pooled scans: each form in every dtype; in float32 each neuron, soft reset with
    detach_reset, every surrogate of the backward, and odd sizes."""
    fp32, launches = torch.float32, []
    for launcher in LEAN_LAUNCHERS:
        backward = launcher.endswith("backward")
        forms = [f for f in FORMS if FORMS[f][0] == ("static" in launcher)]
        first = dict(neuron="lif", hard_reset=True) | (
            dict(surrogate="superspike", detach_reset=False) if backward else {}
        )
        launches += [Launch(launcher, dtype, form=form, **first) for dtype in DTYPES for form in forms]
        form = forms[1] if len(forms) > 2 else forms[0]  # pooled, channels-last
        launches += [Launch(launcher, fp32, form=form, **(first | dict(neuron=neuron))) for neuron in LEAN_NEURONS[1:]]
        launches.append(
            Launch(
                launcher, fp32, form=form, **(first | dict(hard_reset=False, detach_reset=True if backward else None))
            )
        )
        if backward:
            launches += [
                Launch(launcher, fp32, form=form, **(first | dict(surrogate=s)))
                for s in SCAN_KERNEL_SURROGATES
                if s != "superspike"
            ]
        launches.append(Launch(launcher, fp32, "odd", form=form, **first))
    return launches


# Spikes as bits, and the "scaled" store's bits and c (pack_scaled, unpack_scaled)
BIT_LAUNCHERS = ("pack_bits", "unpack_bits", "pack_scaled", "unpack_scaled")
# The pooling of spikes: forward packing and backward from bits (the lean pool's), and for the neuron
# that makes its pooling, forward without packing and backward from its float spikes.
SPIKE_POOL_LAUNCHERS = (
    "spike_max_pool2d_forward",
    "spike_max_pool2d_backward",
    "spike_max_pool2d_forward_unpacked",
    "spike_max_pool2d_backward_from_spikes",
)


def spike_pool_launches() -> list[Launch]:
    """The pooling of spikes (SPIKE_POOL_LAUNCHERS), forward and backward: the zoo's windows in both
    memory orders in every dtype; in float32 dilation 2, odd and huge sizes."""
    fp32, launches = torch.float32, []
    forms = ("nchw-k2s2", "channels-last-k2s2", "nchw-k3s2p1", "channels-last-k3s2p1")
    for pool in SPIKE_POOL_LAUNCHERS:
        launches += [Launch(pool, dtype, form=form) for dtype in DTYPES for form in forms]
        launches.append(Launch(pool, fp32, form="channels-last-k3s1p1d2"))
        launches += [Launch(pool, fp32, layout, form=form) for layout in ("odd", "huge") for form in forms[1::2]]
    return launches


def representative_launches() -> list[Launch]:
    """Each launcher in each dtype and layout, and each neuron variant, with its first parameters:
    every kernel, dtype conversion, size specialization and charge form, without the full matrix."""
    firsts = {}
    for launch in all_launches():
        firsts.setdefault((launch.launcher, launch.dtype, launch.layout), launch)
        firsts.setdefault((launch.launcher, launch.neuron), launch)
    return list(dict.fromkeys(firsts.values()))


# ---- the subprocess: record the launches, compile them --------------------------------------


def _meta(launch: Launch, dtype: torch.dtype, expanded: bool = False, step: bool = False) -> torch.Tensor:
    T, *neurons = LAYOUTS[launch.layout]
    if step:
        return torch.empty(neurons, dtype=dtype, device="meta")
    if expanded:
        return torch.empty([1, *neurons], dtype=dtype, device="meta").expand(T, *neurons)
    return torch.empty([T, *neurons], dtype=dtype, device="meta")


def register_user_surrogates() -> None:
    """The two kinds of user surrogate, as ``st.register_surrogate`` adds them (in the subprocess)."""
    import triton
    import triton.language as tl

    from snn_triton import register_surrogate

    @triton.jit
    def gaussian(x, beta):
        return tl.exp(-beta * x * x)

    def gaussian_torch(x, beta):
        return torch.exp(-beta * x * x)

    register_surrogate("user", gaussian_torch, default_beta=1.0, kernel=gaussian)
    register_surrogate("user-precomputed", gaussian_torch, default_beta=1.0)


def call_lean_launcher(launch: Launch, beta: float | None) -> None:
    """The static and pooled scans on meta tensors, each step laid out as the form says."""
    from snn_triton import kernels
    from snn_triton.kernels.fused_scans import _like_step

    static, pooled, channels_last = FORMS[launch.form]
    variant, v_reset = VARIANTS[launch.neuron], 0.0 if launch.hard_reset else None
    leak = 1.0 - 1.0 / 2.0 if variant.charge_form == reference.SCALED else 2.0
    if pooled:
        T, *step = POOL_LAYOUTS[launch.layout]
        n, c, h, w = step
        pooled_step = (n, c, h // 2, w // 2)
    else:
        T, *step = LAYOUTS[launch.layout]
        pooled_step = step

    def meta(shape, dtype, leading=()):
        if pooled:
            return _like_step(shape, channels_last, dtype, "meta", leading)
        return torch.empty((*leading, *shape), dtype=dtype, device="meta")

    neuron = reference.Neuron(variant.charge_form, leak, 1.0, v_reset, launch.surrogate, beta, launch.detach_reset)
    if launch.launcher == "lif_static_forward":
        kernels.lif_static_forward(meta(step, launch.dtype), T, neuron, pooled)
    elif launch.launcher == "lif_static_backward":
        kernels.lif_static_backward(meta(pooled_step, launch.dtype, (T,)), meta(step, launch.dtype), neuron, pooled)
    elif launch.launcher == "lif_pool_forward":
        kernels.lif_pool_forward(meta(step, launch.dtype, (T,)), neuron)
    else:
        kernels.lif_pool_backward(
            meta(pooled_step, launch.dtype, (T,)), meta(step, compute_dtype(launch.dtype), (T,)), neuron
        )


def call_spike_pool_launcher(launch: Launch) -> None:
    """The pooling of spikes on meta tensors: forward from [N, C, H, W] in the form's memory order;
    backward from its bits and the pooled gradient laid out alike."""
    from snn_triton import kernels
    from snn_triton.kernels.fused_scans import _like_step

    memory, window = launch.form.rsplit("-", 1)
    n, c, h, w = SPIKE_POOL_LAYOUTS[launch.layout]
    k, s, p, d = SPIKE_POOL_WINDOWS[window]
    oh, ow = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (h, w))
    channels_last = memory == "channels-last"
    order = [0, 2, 3, 1] if channels_last else [0, 1, 2, 3]
    window = ((k, k), (s, s), (p, p), (d, d))
    x = _like_step((n, c, h, w), channels_last, launch.dtype, "meta")
    if launch.launcher.startswith("spike_max_pool2d_forward"):
        kernels.spike_max_pool2d_forward(x, order, *window, False, launch.launcher == "spike_max_pool2d_forward")
        return
    grad_out = _like_step((n, c, oh, ow), channels_last, launch.dtype, "meta")
    bits = torch.empty(-(-n * c * h * w // 8), dtype=torch.uint8, device="meta")
    spikes = x if launch.launcher.endswith("from_spikes") else bits
    kernels.spike_max_pool2d_backward(grad_out, spikes, [n, c, h, w], order, *window)


def call_launcher(launch: Launch) -> None:
    """Run the launcher on meta tensors, with the arguments the ops would pass."""
    from snn_triton import kernels
    from snn_triton.surrogate import SURROGATES as REGISTERED

    beta = REGISTERED.get(launch.surrogate)
    if launch.launcher in SPIKE_POOL_LAUNCHERS:
        return call_spike_pool_launcher(launch)
    if launch.launcher in LEAN_LAUNCHERS:
        return call_lean_launcher(launch, beta)
    x = _meta(launch, launch.dtype, expanded=launch.layout == "expanded")
    if launch.launcher in BIT_LAUNCHERS:
        scaled = launch.launcher.endswith("scaled")
        if launch.launcher.startswith("pack"):
            kernels.pack_bits(x.reshape(-1), scaled)
        else:
            saved = torch.empty(-(-x.numel() // 8) + launch.dtype.itemsize, dtype=torch.uint8, device="meta")
            kernels.unpack_bits(saved, x.numel(), launch.dtype, scaled)
        return
    v_reset = 0.0 if launch.hard_reset else None
    v_threshold = 1.0
    if launch.launcher == "spike_forward":
        kernels.spike_forward(x)
        return
    if launch.launcher == "spike_backward":
        kernels.spike_backward(x, _meta(launch, launch.dtype), launch.surrogate, beta)
        return
    variant, cdt = launch.variant, compute_dtype(launch.dtype)
    leak = torch.empty((), dtype=cdt, device="meta") if variant.plif else 2.0
    state = _meta(launch, cdt, step=True) if variant.state else None
    neuron = reference.Neuron(
        variant.charge_form, leak, v_threshold, v_reset, launch.surrogate, beta, launch.detach_reset
    )
    if launch.launcher == "lif_scan_forward":
        kernels.lif_scan_forward(x, state, neuron, return_v=variant.state)
    elif launch.launcher == "lif_scan_backward":
        h_seq = _meta(launch, cdt)
        x_seq = _meta(launch, launch.dtype) if variant.plif else None
        kernels.lif_scan_backward(
            x,
            h_seq,
            state,
            x_seq,
            state if variant.plif else None,
            neuron,
            grad_v_init=variant.state,
            grad_leak=variant.plif,
        )
    else:
        raise KeyError(launch.launcher)


def record_launch(launch: Launch) -> tuple:
    """(kernel, args, kwargs) of the one kernel launch the launcher makes for `launch`."""
    from snn_triton.kernels import common

    launched = []

    class Recorder:  # stands in for torch.library.wrap_triton, which every launch goes through
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched.append((self.kernel, args, kwargs))

    wrap_triton, common.wrap_triton = common.wrap_triton, Recorder
    try:
        call_launcher(launch)
    finally:
        common.wrap_triton = wrap_triton
    (record,) = launched
    return record


def compile_launch(launch: Launch, capability: int):
    """triton.compile of what a real launch of `launch` would compile on a GPU of `capability`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import MockTensor, create_function_from_signature

    kernel, args, kwargs = record_launch(launch)
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    # MockTensor's data_ptr is 0, i.e. 16-byte aligned, as every CUDA allocation is (PyTorch
    # aligns blocks to 512 bytes) and as the launchers pass their tensors (no offset views).
    args = [MockTensor(a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
    # The binder and _pack_args are what JITFunction.run uses to specialize a launch (triton 3.6-3.8).
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    source = ASTSource(kernel, signature, constexprs, attrs)
    return kernel, triton.compile(source, target=target, options=options.__dict__)


_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)")


def global_access_bytes(ptx: str) -> list[int]:
    """Bytes each thread moves per global load/store instruction in the PTX (16 = a 128-bit access)."""
    sizes = []
    for _, suffixes in _ACCESS.findall(ptx):
        vector = re.search(r"\.v(\d+)\b", suffixes)
        bits = re.findall(r"\.[bfsu](\d+)\b", suffixes)
        sizes.append((int(vector.group(1)) if vector else 1) * int(bits[-1]) // 8)
    return sizes


def kernel_body(sass: str) -> str:
    """The kernel's own SASS, without the subroutines ptxas appends after it (the slow path of an
    IEEE division, say): those save registers on the stack by design, which is not a spill."""
    calls = [int(target, 16) for target in re.findall(r"\bCALL\.\S+\s+0x([0-9a-f]+)", sass)]
    if not calls:
        return sass
    address = re.compile(r"/\*([0-9a-f]{4,})\*/")  # each instruction's, e.g. /*0910*/
    return "\n".join(
        line
        for line in sass.splitlines()
        if not (match := address.search(line)) or int(match.group(1), 16) < min(calls)
    )


def machine_code(cubin: bytes) -> dict[str, int]:
    """Registers, stack and local memory of the one kernel in `cubin` (triton's own cuobjdump). A
    spill needs a stack frame; where there is one, the SASS tells spills (STL/LDL in the kernel's
    own code) from subroutine calls (CALL), which a frame also serves."""
    import triton

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()

        def dump(*options):
            return subprocess.run([cuobjdump, *options, file.name], capture_output=True, text=True, check=True).stdout

        (usage,) = re.findall(r"REG:.*", dump("--dump-resource-usage"))
        usage = {key: int(value) for key, value in re.findall(r"(\w+)(?:\[\d+\])?:(\d+)", usage)}
        sass = dump("--dump-sass") if usage["STACK"] else ""  # 0.3 s each, so only where it matters
    return {
        "registers": usage["REG"],
        "stack_bytes": usage["STACK"],
        "local_bytes": usage["LOCAL"],
        "spill_instructions": len(re.findall(r"\b(?:STL|LDL)\b", kernel_body(sass))),
        "calls": len(re.findall(r"\bCALL\b", sass)),
    }


def inspect_launch(launch: Launch, capability: int) -> dict:
    """What the tests check of one compiled launch, as JSON; a compile error is a result too."""
    try:
        kernel, compiled = compile_launch(launch, capability)
    except Exception as error:  # noqa: BLE001 - reported per launch, the test shows it
        cause = error
        while cause.__cause__ is not None:  # Triton wraps the real reason in one error per call level
            cause = cause.__cause__
        return {"error": f"{type(error).__name__}: {error}\nbecause {type(cause).__name__}: {cause}"}
    ptx = compiled.asm["ptx"]
    return {
        "kernel": kernel.fn.__name__,
        **machine_code(compiled.asm["cubin"]),
        "shared_bytes": compiled.metadata.shared,  # scratch Triton allocates, e.g. to change data layouts
        "access_bytes": global_access_bytes(ptx),
        "divisions": sorted(set(re.findall(r"\bdiv(?:\.\w+)+", ptx))),
        "products": sorted(set(re.findall(r"\b(?:mul\.rn|fma\.rn)(?:\.\w+)+", ptx))),
    }


def package_kernels() -> list[str]:
    """Every kernel in snn_triton.kernels (the @triton.jit functions named *_kernel)."""
    import pkgutil
    from importlib import import_module

    import snn_triton.kernels as package

    names = set()
    for module in pkgutil.iter_modules(package.__path__):
        for name, value in vars(import_module(f"{package.__name__}.{module.name}")).items():
            if name.endswith("_kernel") and hasattr(value, "fn"):
                names.add(name)
    return sorted(names)


def main(capability: int, launch_ids: list[str]) -> dict:
    import triton

    from snn_triton.kernels import INTERPRETED

    assert not INTERPRETED, "run with TRITON_INTERPRET=0: the kernels must be JITFunctions to compile"
    register_user_surrogates()
    launches = {launch.id: launch for launch in all_launches()}
    return {
        "triton": triton.__version__,
        "kernels": package_kernels(),
        "results": {i: inspect_launch(launches[i], capability) for i in launch_ids},
    }


if __name__ == "__main__":
    json.dump(main(int(sys.argv[1]), sys.argv[2:]), sys.stdout)
