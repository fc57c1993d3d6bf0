"""Libraries suite: one Linear layer then LIF neurons, side by side with every SNN library a user
would pick instead (the Open Neuromorphic SNN-library benchmark's shape: batch 16, T x neurons).

    python -m pytest bench/test_libraries.py      # then: python bench/report.py

Per case, every implementation (libraries.py; spikingjelly 2.0.0 in a process of its own,
remote.py) is built, run once and checked against the definition (agree.py: spikes, and
gradients of the Linear's weight and bias); one that disagrees is recorded, not timed, and fails
the test. Then the forward (with autograd recording, as in training) and the forward+backward
(gradients of the weight and bias) are timed, interleaved on a CPU (measure.py). Libraries that
are not installed get a row saying so (``pip install -e ".[peers]"``).
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
from workloads import LIBRARY_BATCH, LIBRARY_CASES, LIBRARY_COMPILED, OURS_COMPILED, case_id

PHASES = ["fwd", "fwd+bwd"]
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


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=case_id)
def test_linear_lif(record, remote, case):
    T, neurons = case
    torch._dynamo.reset()
    flags = (case in LIBRARY_COMPILED, case in OURS_COMPILED)
    base = dict(suite="libraries", op="linear_lif", T=T, batch=LIBRARY_BATCH, neurons=neurons, dtype="float32")
    rows, timers, refused = {}, {phase: {} for phase in PHASES}, []

    def not_timed(name, note):
        for phase in PHASES:
            record(dict(base, impl=name, phase=phase, seconds=None, note=note))

    if remote is None and SPIKINGJELLY.startswith("0."):
        not_timed("spikingjelly 2.0.0", f"not installed: no {SJ2} (bench/README.md)")
    for name in library_names(*flags):  # in this process
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
        rows[name] = dict(
            base, impl=name, check=prepared.check, first_call_seconds=round(prepared.first_call_seconds, 3)
        )
        for phase, call in prepared.calls.items():
            timers[phase][name] = (
                (lambda call=call: gpu_figures(call)) if ON_CUDA else (lambda call=call: elapsed_seconds(call))
            )
    for name in remote.ask(names=flags)["names"] if remote else []:  # in spikingjelly 2.0.0's process
        answer = remote.ask(prepare=[name, T, neurons])
        if "check" not in answer:
            refused += [f"{name}: {answer['disagree']}"] * ("disagree" in answer)
            not_timed(name, f"not timed: {answer['disagree']}" if "disagree" in answer else answer["error"])
            continue
        rows[name] = dict(base, impl=name, check=answer["check"], first_call_seconds=answer["first_call_seconds"])
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
