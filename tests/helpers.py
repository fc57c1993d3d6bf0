"""Shared by the tests: which device each backend runs on, how results are compared, and the runs of a
test file again under spikingjelly 2.0.0."""

import importlib.metadata
import itertools
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

# The reference runs on the CPU (where PyTorch divides exactly as spikingjelly does on the
# CPU); the kernels run on the GPU when there is one, else under Triton's interpreter.
BACKENDS = [pytest.param("torch", id="reference"), pytest.param("triton", id="kernels")]
DEVICE = {"torch": "cpu", "triton": "cuda" if HAS_CUDA else "cpu"}


def forward_backward(fn, x, grad_out=None, seed=0):
    """(fn(x), d<fn(x), grad_out>/dx), both detached and on the CPU; grad_out random if None."""
    x = x.detach().requires_grad_()
    out = fn(x)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    (grad_x,) = torch.autograd.grad(out, x, grad_out.to(out.device, out.dtype))
    return out.detach().cpu(), grad_x.cpu()


def assert_grad_close(actual, expected, computed_in=None):
    """float64: 1e-9 relative; float32: 1e-5 relative to the gradient's scale; half types: 2 ulps. By
    the dtype the gradient was computed in (computed_in: autocast's), by default its own."""
    tol = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}[
        computed_in or expected.dtype
    ]
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-3))


def gradcheck(fn, inputs, backend) -> bool:
    """torch.autograd.gradcheck at eps 1e-6, atol 1e-7: the kernels against a random projection of
    the Jacobian (the whole one costs seconds under Triton's interpreter), the reference against
    all of it."""
    return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=backend == "triton")


class StopAfter:
    """Stands for a Ctrl-C that lands after `batches` batches (what Trainer.train_epoch polls)."""

    def __init__(self, batches: int):
        self.left = batches

    @property
    def requested(self) -> bool:
        self.left -= 1
        return self.left <= 0


def corrupt(path, how: str) -> None:
    """Damages the checkpoint at `path` as a user or a full disk might."""
    if how == "text":
        path.write_text("not a checkpoint\n")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not a dict":
        torch.save([1, 2, 3], path)
    else:  # a key, or config.key, missing
        ckpt = torch.load(path, weights_only=True)
        holder, key = (ckpt["config"], how[7:]) if how.startswith("config.") else (ckpt, how)
        del holder[key]
        torch.save(ckpt, path)


def covering(**factors) -> list[tuple]:
    """A covering array of strength 2: rows (one value per factor, in the order given) such that every
    value of every factor, and every pair of values of any two factors, is in some row; far fewer
    rows than the full product. Deterministic (greedy: each row the product's row that covers the
    most pairs not yet covered, the first such one)."""
    names = list(factors)
    values = [list(v) for v in factors.values()]
    index = [range(len(v)) for v in values]
    uncovered = {
        (a, i, b, j) for a, b in itertools.combinations(range(len(names)), 2) for i in index[a] for j in index[b]
    }
    candidates = list(itertools.product(*index))
    rows = []
    while uncovered:
        best = max(
            candidates,
            key=lambda r: sum((a, r[a], b, r[b]) in uncovered for a, b in itertools.combinations(range(len(r)), 2)),
        )
        uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(range(len(best)), 2)}
        rows.append(tuple(values[f][k] for f, k in enumerate(best)))
    if len(names) == 1:
        rows = [(v,) for v in values[0]]
    return rows


# spikingjelly: 0.0.0.0.14 (the test extra) in this process; test files that hold our results against it
# run again in a process of their own with 2.0.0 first on the path (SNN_TRITON_SPIKINGJELLY2 names a folder
# made by `pip install --no-deps --target DIR spikingjelly==2.0.0 loguru==0.7.3 h5py`; .ci/run makes one).
SPIKINGJELLY_VERSION = importlib.metadata.version("spikingjelly")
SPIKINGJELLY2 = os.environ.get("SNN_TRITON_SPIKINGJELLY2")
ONE_VERSION_ONLY = "does not depend on spikingjelly's version: run with 0.0.0.0.14 only"
ONE_VERSION = pytest.mark.skipif(SPIKINGJELLY_VERSION.startswith("2"), reason=ONE_VERSION_ONLY)
NEEDS_SPIKINGJELLY2 = pytest.mark.skipif(
    not SPIKINGJELLY2,
    reason="no spikingjelly 2.0.0: set SNN_TRITON_SPIKINGJELLY2 to a folder made by "
    "`pip install --no-deps --target DIR spikingjelly==2.0.0 loguru==0.7.3 h5py` (.ci/run does)",
)
# Left out of the 2.0.0 run: the kernels' cases. Each holds the kernels to the reference (or to
# spikingjelly through it), and the 2.0.0 run holds the reference to spikingjelly 2.0.0 itself.
NOT_AGAIN_WITH_2 = "kernels"
REPO = Path(__file__).resolve().parents[1]


def assert_passes_with_spikingjelly_2(request, tmp_path, at_least: int) -> None:
    """Run the calling test's file again under spikingjelly 2.0.0, its kernels' cases left out: only the
    tests marked ONE_VERSION skip there, every other test of the file that this session collected
    passes there too, and at least `at_least` pass (so that the run cannot pass by collecting nothing).

    Args:
        request, tmp_path: the calling test's fixtures.
        at_least: the count of the file's tests that pass under 2.0.0 today.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SPIKINGJELLY2, os.environ.get("PYTHONPATH")])))
    version = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('spikingjelly'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "2.0.0", f"SNN_TRITON_SPIKINGJELLY2={SPIKINGJELLY2} holds spikingjelly {version}"
    path, report = request.path, tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={report}"]
        + ["-k", f"not {NOT_AGAIN_WITH_2}", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    outcomes = {
        case.get("name"): [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        for case in ElementTree.parse(report).getroot().iter("testcase")
    }
    skipped = {name for name, tags in outcomes.items() if tags == ["skipped"]}
    passed = {name for name, tags in outcomes.items() if not tags}
    one_version = {
        name
        for name, fn in vars(request.module).items()
        if name.startswith("test_")
        and NOT_AGAIN_WITH_2 not in name.lower()
        and any(m.kwargs.get("reason") == ONE_VERSION_ONLY for m in getattr(fn, "pytestmark", []))
    }
    assert skipped == one_version and len(passed) == len(outcomes) - len(one_version), (skipped, one_version)
    here = {
        item.name for item in request.session.items if item.path == path and NOT_AGAIN_WITH_2 not in item.name.lower()
    } - one_version
    assert here <= passed and len(passed) >= at_least, (sorted(here - passed), len(passed))
