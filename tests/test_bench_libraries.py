"""The libraries suite's peers (bench/libraries.py) run our surrogate's family and compute what they
claim: each peer is prepared on a small case, which checks its spikes and its gradients against the
definition run as its Claim says (bench/agree.py) before it would be timed. A peer whose surrogate is
changed to another family is refused, whether its claim follows (the family check) or not (the gradient).
And a peer is labelled ``unrolled`` (not compiled at long T) exactly when dynamo unrolls its loop over T."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import libraries  # noqa: E402
from agree import Claim, Disagree  # noqa: E402
from peers import SJ_SURROGATES, spikingjelly0_lif  # noqa: E402

T, NEURONS = 8, 64
SPIKINGJELLY2 = os.environ.get("SNN_TRITON_SPIKINGJELLY2")
PEERS = [name for name in libraries.libraries() if name != "snn_triton"]


def installed(name: str) -> tuple[libraries.Library, Claim]:
    """(the Library `name`, its claim), skipping where its package is not installed."""
    library = libraries.libraries()[name]
    if library.package:
        pytest.importorskip(library.package)
    return library, library.make()[1]


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_runs_our_surrogate_family_and_computes_its_claim(name):
    library, claim = installed(name)
    # A peer may run another family only where it lacks ours, and then its rows say so.
    assert claim.surrogate == libraries.SURROGATE or library.note, f"{name} claims {claim}"
    prepared = libraries.prepare(name, T, NEURONS)  # raises Disagree
    assert prepared.check.startswith("spikes equal; grads equal"), prepared.check


def test_spikingjelly_in_another_family_is_refused(monkeypatch):
    """spikingjelly's LIFNode back on Sigmoid(alpha=4) while claiming SoftSign's gradient: refused."""
    name = next(name for name in PEERS if name.startswith("spikingjelly"))
    soft_sign = SJ_SURROGATES[libraries.SURROGATE]
    assert soft_sign.name == "SoftSign"
    sigmoid = libraries.Library(None, lambda: (spikingjelly0_lif("torch", SJ_SURROGATES["sigmoid"]), soft_sign.claim))
    monkeypatch.setattr(libraries, "libraries", lambda: {name: sigmoid})
    with pytest.raises(Disagree, match="grad weight"):
        libraries.prepare(name, T, NEURONS)


def dynamo_ops(lif, T: int) -> int:
    """The ops dynamo traces in lif on a [T, 16, 8] input, over all its graphs."""
    torch._dynamo.reset()
    return torch._dynamo.explain(lif)(libraries.workload(T, 8).x).op_count


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_is_labelled_unrolled_exactly_when_dynamo_unrolls_its_loop(name):
    library, _ = installed(name)
    lif, _ = library.make()
    ops = [dynamo_ops(lif, T) for T in (2, 4)]
    assert library.unrolled == (ops[1] > ops[0]), f"{name}: dynamo traces {ops[0]} ops at T=2, {ops[1]} at T=4"


def test_every_implementation_is_compiled_at_a_compiled_case_or_says_why():
    assert libraries.names(T, False) == (list(libraries.libraries()), {})
    run, left_out = libraries.names(T, True)
    assert run == [n for name in libraries.libraries() for n in (name, f"{name} compiled")] and not left_out
    run, left_out = libraries.names(500, True)
    unrolled = [name for name, library in libraries.libraries().items() if library.unrolled]
    assert "spikingjelly 0.0.0.0.14 torch" in unrolled
    assert sorted(left_out) == sorted(f"{name} compiled" for name in unrolled)
    assert all(why.startswith("not compiled: dynamo unrolls its loop over T") for why in left_out.values())
    assert set(run) | set(left_out) == {n for name in libraries.libraries() for n in (name, f"{name} compiled")}


@pytest.mark.skipif(
    not SPIKINGJELLY2,
    reason="no spikingjelly 2.0.0: set SNN_TRITON_SPIKINGJELLY2 to a folder made by "
    "pip install --no-deps --target DIR spikingjelly==2.0.0 loguru==0.7.3 h5py==3.16.0",
)
def test_spikingjelly_2_runs_soft_sign_and_computes_its_claim():
    """In a process of its own (bench/remote.py), as the suite runs it."""
    from remote import Remote

    remote = Remote(SPIKINGJELLY2)
    try:
        (name,) = remote.ask(names=[T, False])["names"]
        assert name.startswith("spikingjelly 2.0.0"), name
        answer = remote.ask(prepare=[name, T, NEURONS])
    finally:
        remote.close()
    assert answer.get("check", "").endswith(f"h = 5 × {libraries.SURROGATE}(beta 10)"), answer
