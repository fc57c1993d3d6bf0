"""Every kernel launch the ops make, compiled ahead of time for Hopper (sm_90) and Ampere (sm_80)
on the CPU, as a real launch would specialize it (tests/aot.py): it compiles, nothing spills,
registers stay under a bound, global accesses are 16 bytes wide where the sizes allow, and the
charge divides as IEEE (div.rn), which is what makes the spikes equal PyTorch's on a CPU.

The installed triton compiles every specialization for both; triton 3.6 (what common GPU images
ship) compiles each kernel in each dtype and size specialization (``representative_launches``),
to keep CI short.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aot import BIT_LAUNCHERS, FORMS, SPIKE_POOL_LAUNCHERS, Launch, all_launches, representative_launches

from snn_triton import reference

pytest.importorskip("triton", reason="the kernels need triton (Linux)")
pytestmark = pytest.mark.slow

AOT_SCRIPT = Path(__file__).with_name("aot.py")
# A folder holding triton 3.6, made by `pip install --no-deps --target DIR triton==3.6.0` (.ci/run does).
TRITON36 = os.environ.get("SNN_TRITON_TRITON36")


@dataclass(frozen=True)
class Target:
    capability: int
    launches: tuple[Launch, ...]
    triton_path: str | None = None  # put first on PYTHONPATH: another triton than the installed one
    triton_version: str = ""  # what that triton must report

    @property
    def name(self) -> str:
        return f"sm_{self.capability}" + (f"-triton{self.triton_version}" if self.triton_version else "")

    @property
    def available(self) -> bool:
        """The installed triton always is; another one where its folder holds a triton package."""
        return not self.triton_version or bool(self.triton_path and Path(self.triton_path, "triton").is_dir())


TARGETS = [Target(cc, tuple(all_launches())) for cc in (90, 80)]
TARGETS += [Target(cc, tuple(representative_launches()), TRITON36, "3.6") for cc in (90, 80)]
NO_TRITON36 = (
    "no triton 3.6: set SNN_TRITON_TRITON36 to a folder made by "
    "`pip install --no-deps --target DIR triton==3.6.0` (.ci/run does)"
)
each_target = pytest.mark.parametrize(
    "target",
    [pytest.param(t, id=t.name, marks=pytest.mark.skipif(not t.available, reason=NO_TRITON36)) for t in TARGETS],
)

# Registers per thread. A block is 128 threads; sm_80 and sm_90 have 64K registers and 2048
# threads per SM. At <= 64 registers 8 blocks (half the SM's threads) stay resident, enough loads
# in flight to stream memory. float64 values take two registers each, hence twice the bound.
MAX_REGISTERS = {torch.float64: 128}
MAX_REGISTERS_DEFAULT = 64


def _start(target: Target) -> subprocess.Popen:
    env = {**os.environ, "TRITON_INTERPRET": "0"}  # the kernels must be JITFunctions to compile
    if target.triton_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (target.triton_path, env.get("PYTHONPATH")) if p)
    command = [sys.executable, str(AOT_SCRIPT), str(target.capability), *(launch.id for launch in target.launches)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, f"tests/aot.py failed:\n{stderr[-4000:]}"
    return json.loads(stdout)


@pytest.fixture(scope="session")
def compiled() -> dict[str, dict]:
    """Target name -> tests/aot.py's JSON. The targets compile at once, each in its own process."""
    processes = {t.name: _start(t) for t in TARGETS if t.available}
    return {name: _finish(process) for name, process in processes.items()}


def _built(target: Target, compiled: dict) -> list[tuple[Launch, dict]]:
    """(launch, what tests/aot.py found) for each launch of `target` that compiled."""
    results = compiled[target.name]["results"]
    return [(launch, results[launch.id]) for launch in target.launches if "error" not in results[launch.id]]


def _offenders(found: dict) -> str:
    return "\n".join(f"{launch.id}: {details}" for launch, details in found.items())


@each_target
def test_every_kernel_launch_compiles(target, compiled):
    run = compiled[target.name]
    assert run["triton"].startswith(target.triton_version), (
        f"expected triton {target.triton_version}, ran {run['triton']}"
    )
    errors = {
        launch: run["results"][launch.id]["error"] for launch in target.launches if "error" in run["results"][launch.id]
    }
    assert not errors, _offenders(errors)
    # Every @triton.jit kernel of the package is among the launches, so a new one cannot go unchecked.
    assert {run["results"][launch.id]["kernel"] for launch in target.launches} == set(run["kernels"])


@each_target
def test_no_kernel_spills(target, compiled):
    """No spill instructions (STL/LDL) in the kernel's code and no local memory. A stack frame only
    serves subroutine calls (ptxas keeps the slow path of a float64 IEEE division out of line)."""
    spilling = {
        launch: {k: r[k] for k in ("spill_instructions", "local_bytes", "stack_bytes", "calls")}
        for launch, r in _built(target, compiled)
        if r["spill_instructions"] or r["local_bytes"] or (r["stack_bytes"] and not r["calls"])
    }
    assert not spilling, _offenders(spilling)


def state_changes_layout(launch: Launch) -> bool:
    """A scan with state (V0 in, V[T-1] out) on sizes that are not multiples of 16: the state is one
    aligned step and read or written with wide accesses, the tensors walking time cannot be, so the
    state changes thread layout through shared memory once at entry and once at exit."""
    return launch.variant is not None and launch.variant.state and not launch.vectorizable


@each_target
def test_registers_stay_under_the_bound(target, compiled):
    """The bound, or 1.5 times it where the state changes layout (state_changes_layout)."""

    def bound(launch):
        base = MAX_REGISTERS.get(launch.dtype, MAX_REGISTERS_DEFAULT)
        return base * 3 // 2 if state_changes_layout(launch) else base

    over = {launch: r["registers"] for launch, r in _built(target, compiled) if r["registers"] > bound(launch)}
    assert not over, _offenders(over)


def scalar_accesses(launch: Launch) -> int:
    """Accesses of one value per program: PLIF's leak k (read by both scans) and the backward's
    partial sum of dL/dk (written)."""
    if launch.variant is None or not launch.variant.plif:
        return 0
    return 1 if launch.launcher == "lif_scan_forward" else 2


@each_target
def test_global_accesses_are_16_bytes_wide(target, compiled):
    """Where every size is a multiple of 16 elements, each thread's loads and stores are 128-bit
    vectors (ld.global.v4.b32, v2.b64, ...): the widest single access, the fewest instructions.
    Only the accesses of one value per program (scalar_accesses) are narrower."""
    narrow = {}
    for launch, r in _built(target, compiled):
        vectors = sorted(r["access_bytes"])[scalar_accesses(launch) :]
        if launch.vectorizable and (not vectors or min(vectors) < 16) and not narrower_by_design(launch, vectors):
            narrow[launch] = sorted(r["access_bytes"])
    assert not narrow, _offenders(narrow)


def narrower_by_design(launch: Launch, access_bytes: list[int]) -> bool:
    """Known narrower accesses, where the widest is still 16 bytes (8 in half types, read 4 to a
    thread where registers allow no more): the pooled scans store one pooled spike per window (a
    quarter of the traffic) and read their [BLOCK, 4] window tiles 4 values per thread; the static
    backward reads 4 gradients per thread, its tangents leaving no registers for 8; bit packing
    writes a byte per 8 spikes, unpacking reads one (the scaled store's also its per-program values
    and c). The pooling of spikes gathers (forward the windows, backward the bits or the spikes and the
    pooled gradient) and holds one cell a thread: its stores of cells are one value a thread."""
    if launch.launcher in SPIKE_POOL_LAUNCHERS:
        return max(access_bytes) >= launch.dtype.itemsize
    half = launch.dtype in (torch.float16, torch.bfloat16)
    by_design = (
        FORMS.get(launch.form, (False, False))[1]
        or launch.launcher in BIT_LAUNCHERS
        or launch.launcher == "lif_static_backward"
    )
    return by_design and max(access_bytes) >= (8 if half and launch.launcher not in BIT_LAUNCHERS else 16)


SCAN_FORWARDS = ("lif_scan_forward", "lif_static_forward", "lif_pool_forward")
SCAN_BACKWARDS = ("lif_scan_backward", "lif_static_backward", "lif_pool_backward")


def divides_by_tau(launch: Launch) -> bool:
    """LIF's decay_input and leak charges divide by tau; IF adds, PLIF and the scaled charge multiply."""
    variant = launch.variant
    return (
        variant is not None
        and not variant.plif
        and variant.charge_form in (reference.DECAY_INPUT, reference.DECAY_POTENTIAL)
    )


@each_target
def test_charge_divides_as_ieee(target, compiled):
    """The LIF charge (X - ...) / tau and its derivative grad_H / tau use div.rn, rounded as PyTorch
    on a CPU divides; the forward has no other division, so its spikes are bit-identical."""
    wrong = {}
    for launch, r in _built(target, compiled):
        ieee = "div.rn.f64" if launch.dtype == torch.float64 else "div.rn.f32"
        divisions = [d for d in r["divisions"] if d.split(".")[-1].startswith("f")]  # not the index arithmetic's
        if launch.launcher in SCAN_FORWARDS and divisions != ([ieee] if divides_by_tau(launch) else []):
            wrong[launch] = r["divisions"]
        if launch.launcher in SCAN_BACKWARDS and divides_by_tau(launch) and ieee not in divisions:
            wrong[launch] = r["divisions"]
    assert not wrong, _offenders(wrong)


@each_target
def test_charge_products_are_rounded_on_their_own(target, compiled):
    """PLIF's (X - V) * k and the scaled charge V * (1 - 1/tau) + X are two roundings in PyTorch on a
    CPU; fused into one FMA (Triton's default) they round once and the spikes could differ. The
    forward multiplies with mul.rn (never fused, no flush to zero), and with a hard reset (nothing
    else to multiply) has no FMA at all."""
    wrong = {}
    for launch, r in _built(target, compiled):
        if launch.launcher not in SCAN_FORWARDS:
            continue
        multiplies = launch.variant.plif or launch.variant.charge_form == reference.SCALED
        mul_rn = "mul.rn.f64" if launch.dtype == torch.float64 else "mul.rn.f32"
        fused = [p for p in r["products"] if p.startswith("fma")]
        if (mul_rn in r["products"]) != multiplies or (launch.hard_reset and fused):
            wrong[launch] = r["products"]
    assert not wrong, _offenders(wrong)


@each_target
def test_kernels_need_no_shared_memory(target, compiled):
    """Loads and stores share one thread layout, so no data goes through shared memory. Known
    exceptions: the scan forward in half types stores H in float32, Triton lays out those 4-byte
    stores differently from the 2-byte X and S accesses and moves H through shared memory (so does
    the backward with the float32 state, dL/dV); the PLIF backward adds up its dL/dk over the
    program's warps through shared memory; state_changes_layout; the pooled scans, whose [BLOCK, 4]
    window tiles are reduced (max, first spike) across threads and stored as [BLOCK]; and bit
    packing (also in the pooling of spikes' forward, and in the scaled store with its per-program
    largest and smallest value), whose bytes are sums over 8 lanes."""

    def expected(launch):
        half = launch.dtype in (torch.float16, torch.bfloat16)
        half_forward = launch.launcher == "lif_scan_forward" and half
        half_state = launch.launcher == "lif_scan_backward" and half and launch.variant.state
        plif_sum = launch.launcher == "lif_scan_backward" and launch.variant.plif
        pooled = FORMS.get(launch.form, (False, False))[1]
        return (
            half_forward
            or half_state
            or plif_sum
            or state_changes_layout(launch)
            or pooled
            or launch.launcher in ("pack_bits", "pack_scaled", "spike_max_pool2d_forward")
        )

    shared = {
        launch: r["shared_bytes"]
        for launch, r in _built(target, compiled)
        if r["shared_bytes"] and not expected(launch)
    }
    assert not shared, _offenders(shared)
