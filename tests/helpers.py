"""Shared by the tests: which device each backend runs on, and how results are compared."""

import itertools

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


def assert_grad_close(actual, expected):
    """float64: 1e-9 relative; float32: 1e-5 relative to the gradient's scale; half types: 2 ulps."""
    tol = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}[expected.dtype]
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
