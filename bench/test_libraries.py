"""Libraries suite: one Linear layer then LIF neurons, side by side with every SNN library a user
would pick instead (the Open Neuromorphic SNN-library benchmark's shape: batch 16, T x neurons).

    python -m pytest bench/test_libraries.py      # then: python bench/report.py

Per case, every implementation (libraries.py; spikingjelly 2.0.0 in a process of its own,
remote.py) is built, run once and checked against the definition (agree.py: spikes, and
gradients of the Linear's weight and bias); one that disagrees is recorded, not timed, and fails
the test. Then the forward (with autograd recording, as in training) and the forward+backward
(gradients of the weight and bias) are timed, interleaved on a CPU (measure.py). Libraries that
are not installed get a row saying so (``pip install -e ".[peers]"``).

At a compiled case (workloads.LIBRARY_COMPILED) every implementation is also timed under
torch.compile; a compiled variant left out gets a row saying why: a peer whose loop dynamo unrolls
(libraries.not_compiled_why), or one whose compile would start after the session's
SNN_BENCH_PEER_COMPILE_SECONDS of peers' compiles (the GPU check's stage limit) were spent.
"""

import os
from pathlib import Path

import pytest
import torch
from agree import Disagree
from libraries import names as library_names
from libraries import prepare
from measure import CPU_SECONDS, ON_CUDA, elapsed_seconds, gpu_figures, interleaved_medians
from peers import SPIKINGJELLY
from remote import Remote
from workloads import LIBRARY_BATCH, LIBRARY_CASES, LIBRARY_COMPILED, case_id

PHASES = ["fwd", "fwd+bwd"]
# Seconds of the peers' first compiled calls (compiles) after which no further peer is compiled; unset: no limit.
PEER_COMPILE_SECONDS = float(os.environ.get("SNN_BENCH_PEER_COMPILE_SECONDS") or "inf")
# spikingjelly 2.0.0's folder (bench/README.md); the GPU check passes the one it installed.
SJ2 = os.environ.get("SNN_BENCH_SJ2") or str(Path(__file__).resolve().parent / ".sj2")


@pytest.fixture(scope="module")
def remote():
    """spikingjelly 2.0.0 in its own process, where its folder exists and this one runs 0.0.0.0.14."""
    if not SPIKINGJELLY.startswith("0.") or not (Path(SJ2) / "spikingjelly").is_dir():
        yield None
        return
    process = Remote(SJ2)
    yield process
    process.close()


def reason(error: Exception) -> str:
    """The error's first line: why an implementation could not run."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


@pytest.fixture(scope="module")
def compile_spent():
    """[seconds of the peers' compiles so far in this session]."""
    return [0.0]


def compile_left_out(name: str, spent: list) -> str | None:
    if name.startswith("snn_triton") or not name.endswith(" compiled") or spent[0] < PEER_COMPILE_SECONDS:
        return None
    return (
        f"not compiled: the session's {PEER_COMPILE_SECONDS:g} s of peers' compiles (SNN_BENCH_PEER_COMPILE_SECONDS, "
        f"bench/gpu_check.sh's peers stage limit) were spent ({spent[0]:.0f} s)"
    )


def count_compile(name: str, first_call_seconds: float, spent: list) -> None:
    if name.endswith(" compiled") and not name.startswith("snn_triton"):
        spent[0] += first_call_seconds


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=case_id)
def test_linear_lif(record, remote, compile_spent, case):
    T, neurons = case
    torch._dynamo.reset()
    flags = (T, case in LIBRARY_COMPILED)
    base = dict(suite="libraries", op="linear_lif", T=T, batch=LIBRARY_BATCH, neurons=neurons, dtype="float32")
    rows, timers, refused = {}, {phase: {} for phase in PHASES}, []

    def not_timed(name, note):
        for phase in PHASES:
            record(dict(base, impl=name, phase=phase, seconds=None, note=note))

    def timed_row(name, check, first_call_seconds, note):
        count_compile(name, first_call_seconds, compile_spent)
        row = dict(base, impl=name, check=check, first_call_seconds=round(first_call_seconds, 3))
        return row | ({"note": note} if note else {})

    if remote is None and SPIKINGJELLY.startswith("0."):
        not_timed("spikingjelly 2.0.0", f"not installed: no {SJ2} (bench/README.md)")
    here, left_out = library_names(*flags)
    if remote:
        answer = remote.ask(names=flags)
        there, left_out = answer["names"], left_out | answer["left_out"]
    for name, why in left_out.items():
        not_timed(name, why)
    for name in here:  # in this process
        if why := compile_left_out(name, compile_spent):
            not_timed(name, why)
            continue
        try:
            prepared = prepare(name, T, neurons)
        except Disagree as error:
            refused.append(f"{name}: {error}")
            not_timed(name, f"not timed: {error}")
            continue
        except Exception as error:
            if name.startswith("snn_triton"):
                raise
            not_timed(name, reason(error))
            continue
        rows[name] = timed_row(name, prepared.check, prepared.first_call_seconds, prepared.note)
        for phase, call in prepared.calls.items():
            timers[phase][name] = (
                (lambda call=call: gpu_figures(call)) if ON_CUDA else (lambda call=call: elapsed_seconds(call))
            )
    for name in there if remote else []:  # in spikingjelly 2.0.0's process
        if why := compile_left_out(name, compile_spent):
            not_timed(name, why)
            continue
        answer = remote.ask(prepare=[name, T, neurons])
        if "check" not in answer:
            refused += [f"{name}: {answer['disagree']}"] * ("disagree" in answer)
            not_timed(name, f"not timed: {answer['disagree']}" if "disagree" in answer else answer["error"])
            continue
        rows[name] = timed_row(name, answer["check"], answer["first_call_seconds"], answer["note"])
        for phase in PHASES:
            timers[phase][name] = (
                (lambda name=name, phase=phase: remote.ask(bench=[name, phase]))
                if ON_CUDA
                else (lambda name=name, phase=phase: remote.ask(time=[name, phase])["seconds"])
            )

    for phase in PHASES:
        if ON_CUDA:
            figures = {name: timer() for name, timer in timers[phase].items()}
        else:  # a few seconds of rounds per implementation, their calls interleaved
            figures = {
                name: {"seconds": seconds}
                for name, seconds in interleaved_medians(timers[phase], 4 * CPU_SECONDS * len(timers[phase])).items()
            }
        for name, figure in figures.items():
            record(dict(rows[name], phase=phase, **figure))
    assert not refused, "computes something else than ours:\n" + "\n".join(refused)
