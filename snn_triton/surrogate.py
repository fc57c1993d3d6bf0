"""The three surrogate gradients of the seed experiment: names, default betas, formulas.

The forward of every surrogate is the Heaviside step ``S = 1 if x >= 0 else 0``; they differ
only in the derivative ``h(x)`` that stands in for dS/dx in backward:

    superspike  h(x) = 1 / (beta * |x| + 1)^2
    sigmoid     h(x) = s * (1 - s),  s = sigmoid(beta * x)   (no extra beta factor)
    esser       h(x) = max(0, 1 - beta * |x|)

This module is the PyTorch definition; ``snn_triton.kernels.surrogate`` holds the same three
formulas as Triton device functions, selected by the ids below.
"""
from __future__ import annotations

import math

import torch

# name -> default beta, in the order of the kernels' constexpr ids.
SURROGATES: dict[str, float] = {"superspike": 10.0, "sigmoid": 4.0, "esser": 1.0}
SURROGATE_IDS: dict[str, int] = {name: i for i, name in enumerate(SURROGATES)}


def resolve_surrogate(surrogate: str, beta: float | None) -> tuple[str, float]:
    """Check a surrogate name and beta; return the name and the beta to use (default if None)."""
    if not isinstance(surrogate, str) or surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
    if beta is None:
        return surrogate, SURROGATES[surrogate]
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a float or None, got {type(beta).__name__}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return surrogate, float(beta)


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """The spike: 1 where x >= 0, else 0, in x's dtype.

    The comparison writes x's dtype directly: a bool result and its conversion cost three times
    as much on a CPU."""
    return torch.ge(x, 0, out=torch.empty_like(x))


def surrogate_grad(x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    """h(x), the surrogate derivative of the spike at x (same dtype as x)."""
    if surrogate == "superspike":
        return (beta * x.abs() + 1.0).pow(-2)  # one op, the same values as 1 / (...) ** 2
    if surrogate == "sigmoid":
        # s * (1 - s) = e / (1 + e)^2 with e = exp(-beta * |x|): the same value, but 1 - s is
        # never formed, so it keeps full relative precision where s rounds to 1.
        e = torch.exp(-beta * x.abs())
        return e / (1.0 + e) ** 2
    if surrogate == "esser":
        return torch.clamp_min(1.0 - beta * x.abs(), 0.0)
    raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
