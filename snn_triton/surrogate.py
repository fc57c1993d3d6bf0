"""Surrogate gradients: the registry of names, default betas and formulas.

The forward of every surrogate is the Heaviside step ``S = 1 if x >= 0 else 0``; they differ
only in the derivative ``h(x)`` that stands in for dS/dx in backward:

    superspike            h(x) = 1 / (beta * |x| + 1)^2                  (the seed's three)
    sigmoid               h(x) = s * (1 - s),  s = sigmoid(beta * x)     (no extra beta factor)
    esser                 h(x) = max(0, 1 - beta * |x|)
    spikingjelly_sigmoid  h(x) = beta * s * (1 - s)                      (spikingjelly's Sigmoid(alpha))
    atan                  h(x) = beta / 2 / (1 + (pi / 2 * beta * x)^2)  (spikingjelly's ATan(alpha))
    soft_sign             h(x) = beta / 2 / (beta * |x| + 1)^2           (SoftSign(alpha))
    piecewise_quadratic   h(x) = beta * max(0, 1 - beta * |x|)           (PiecewiseQuadratic(alpha))
    piecewise_exp         h(x) = beta / 2 * exp(-beta * |x|)             (PiecewiseExp(alpha))
    erf                   h(x) = beta / sqrt(pi) * exp(-(beta * x)^2)    (Erf(alpha))
    nonzero_sign_log_abs  h(x) = 1 / (1 / beta + |x|)                    (NonzeroSignLogAbs(alpha))
    spikingjelly_superspike  h(x) = beta / (|x| + 1)^2                   (2.x's SuperSpike(alpha))

The spikingjelly ones are the derivatives of its surrogates of that name, with its alpha as beta.

This module is the PyTorch definition; ``snn_triton.kernels.surrogate`` holds the built-in
formulas as Triton device functions, selected by the ids below. ``register_surrogate`` adds a
user's: a PyTorch formula ``h(x, beta)`` and, optionally, a ``triton.jit`` device function of the
same signature that the kernels call in place of a built-in one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# Kernel ids beyond the built-ins: a user's triton.jit function, passed to the kernels as a
# constexpr; or h computed by the user's PyTorch formula and handed to the kernels precomputed.
USER_KERNEL, PRECOMPUTED = 100, 101


@dataclass(frozen=True)
class Surrogate:
    name: str
    default_beta: float
    grad: Callable[[torch.Tensor, float], torch.Tensor]  # h(x, beta) in PyTorch, x's dtype
    kernel: object = None  # a triton.jit device function h(x, beta), or None
    kernel_id: int = PRECOMPUTED  # a built-in's id, USER_KERNEL, or PRECOMPUTED

    @property
    def kernel_fn(self):
        """The user's device function, or None: what the kernels get as their SURROGATE_FN constexpr."""
        return self.kernel if self.kernel_id == USER_KERNEL else None


def _superspike(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta * x.abs() + 1.0).pow(-2)  # one op, the same values as 1 / (...) ** 2


def _sigmoid(x: torch.Tensor, beta: float) -> torch.Tensor:
    # s * (1 - s) = e / (1 + e)^2 with e = exp(-beta * |x|): the same value, but 1 - s is never
    # formed, so it keeps full relative precision where s rounds to 1.
    e = torch.exp(-beta * x.abs())
    return e / (1.0 + e) ** 2


def _esser(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.clamp_min(1.0 - beta * x.abs(), 0.0)


def _spikingjelly_sigmoid(x: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * _sigmoid(x, beta)


def _atan(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta / 2) / (1.0 + (math.pi / 2 * beta * x).square())


def _soft_sign(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta / 2) * _superspike(x, beta)


def _piecewise_quadratic(x: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * _esser(x, beta)


def _piecewise_exp(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta / 2) * torch.exp(-beta * x.abs())


def _erf(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (beta / math.sqrt(math.pi)) * torch.exp(-(beta * x).square())


def _nonzero_sign_log_abs(x: torch.Tensor, beta: float) -> torch.Tensor:
    return 1.0 / (1.0 / beta + x.abs())


def _spikingjelly_superspike(x: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * _superspike(x, 1.0)


# The built-ins, in the order of the kernels' constexpr ids.
_BUILTINS = [
    ("superspike", 10.0, _superspike),
    ("sigmoid", 4.0, _sigmoid),
    ("esser", 1.0, _esser),
    ("spikingjelly_sigmoid", 4.0, _spikingjelly_sigmoid),
    ("atan", 2.0, _atan),
    ("soft_sign", 2.0, _soft_sign),
    ("piecewise_quadratic", 1.0, _piecewise_quadratic),
    ("piecewise_exp", 1.0, _piecewise_exp),
    ("erf", 2.0, _erf),
    ("nonzero_sign_log_abs", 1.0, _nonzero_sign_log_abs),
    ("spikingjelly_superspike", 1.0, _spikingjelly_superspike),
]
REGISTRY: dict[str, Surrogate] = {
    name: Surrogate(name, beta, grad, kernel_id=i) for i, (name, beta, grad) in enumerate(_BUILTINS)
}
BUILTIN_IDS: dict[str, int] = {name: i for i, (name, _, _) in enumerate(_BUILTINS)}
# The seed notebook's comparison: what `train.py --surrogate all` trains.
SEED_SURROGATES = ("superspike", "sigmoid", "esser")
# name -> default beta, for every registered surrogate (kept in step with REGISTRY).
SURROGATES: dict[str, float] = {name: s.default_beta for name, s in REGISTRY.items()}
"""Every registered surrogate's name and default beta, built-ins first: ``st.SURROGATES["superspike"]``
is 10.0. Read it; ``register_surrogate`` and ``unregister_surrogate`` change it."""


def _check_beta(beta, name: str = "beta") -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(beta).__name__}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {beta!r}")
    return float(beta)


def register_surrogate(
    name: str, grad: Callable[[torch.Tensor, float], torch.Tensor], *, default_beta: float, kernel=None
) -> None:
    """Add a surrogate gradient under `name`, usable wherever a surrogate name is taken.

    Registering a name again replaces the earlier entry; built-in names cannot be replaced.

    Args:
        name: the new surrogate's name, a non-empty str.
        grad: ``grad(x, beta) -> h(x)``, the PyTorch formula of the derivative (the reference path,
            on a CPU), in x's dtype and shape.
        default_beta: the beta used when a caller passes none, finite and > 0.
        kernel: optionally a ``triton.jit`` device function ``h(x, beta)`` of the same math, which
            the Triton kernels call (specialized at compile time, like the built-ins); x arrives in
            float32 or float64, beta in the same dtype. Without one, the kernels are handed h
            computed by `grad` (one more pass over memory).

    Returns:
        None; ``st.SURROGATES`` then lists `name`.

    Raises:
        TypeError: name is not a non-empty str, grad is not callable, default_beta is not a number,
            or kernel is not a ``triton.jit`` function.
        ValueError: name is a built-in's, or default_beta is not finite and > 0.

    Examples:
        >>> import math, torch, snn_triton as st
        >>> def gaussian(x, beta):
        ...     return beta / math.sqrt(2 * math.pi) * torch.exp(-0.5 * (beta * x) ** 2)
        >>> st.register_surrogate("gaussian", gaussian, default_beta=3.0)
        >>> st.SURROGATES["gaussian"]
        3.0
        >>> st.spike(torch.zeros(2), "gaussian").tolist()
        [1.0, 1.0]
        >>> st.unregister_surrogate("gaussian")
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name in BUILTIN_IDS:
        raise ValueError(f"name {name!r} is a built-in surrogate; choose another name")
    if not callable(grad):
        raise TypeError(f"grad must be callable as grad(x, beta), got {type(grad).__name__}")
    default_beta = _check_beta(default_beta, "default_beta")
    if kernel is not None:
        try:
            from triton.runtime.jit import JITFunction
        except ImportError as error:  # no triton: a kernel cannot be given
            raise TypeError("kernel needs triton, which is not installed") from error
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(kernel, (JITFunction, InterpretedFunction)):
            raise TypeError(f"kernel must be a @triton.jit device function h(x, beta), got {type(kernel).__name__}")
    REGISTRY[name] = Surrogate(name, default_beta, grad, kernel, USER_KERNEL if kernel is not None else PRECOMPUTED)
    SURROGATES[name] = default_beta


def unregister_surrogate(name: str) -> None:
    """Remove a surrogate added by ``register_surrogate``; a name not registered is ignored.

    Args:
        name: the surrogate's name.

    Returns:
        None; ``st.SURROGATES`` no longer lists `name`.

    Raises:
        ValueError: name is a built-in's.

    Examples:
        >>> import torch, snn_triton as st
        >>> st.register_surrogate("box", lambda x, beta: (x.abs() < 1 / beta).to(x.dtype), default_beta=2.0)
        >>> st.unregister_surrogate("box")
        >>> "box" in st.SURROGATES
        False
    """
    if name in BUILTIN_IDS:
        raise ValueError(f"{name!r} is a built-in surrogate and cannot be removed")
    REGISTRY.pop(name, None)
    SURROGATES.pop(name, None)


def resolve_surrogate(surrogate: str, beta: float | None) -> tuple[str, float]:
    """Check a surrogate name and beta; return the name and the beta to use (default if None)."""
    if not isinstance(surrogate, str) or surrogate not in REGISTRY:
        raise ValueError(f"surrogate must be one of {sorted(REGISTRY)}, got {surrogate!r}")
    if beta is None:
        return surrogate, REGISTRY[surrogate].default_beta
    return surrogate, _check_beta(beta)


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """The spike: 1 where x >= 0, else 0, in x's dtype.

    The comparison writes x's dtype directly: a bool result and its conversion cost three times
    as much on a CPU."""
    return torch.ge(x, 0, out=torch.empty_like(x))


def surrogate_grad(x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    """h(x), the surrogate derivative of the spike at x (same dtype as x)."""
    try:
        entry = REGISTRY[surrogate]
    except KeyError:
        raise ValueError(f"surrogate must be one of {sorted(REGISTRY)}, got {surrogate!r}") from None
    return entry.grad(x, beta)
