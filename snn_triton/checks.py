"""Argument checks shared by every entry point: bad input fails here, in Python, with an error
that names the argument, before any kernel is launched."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .surrogate import SURROGATE_IDS, resolve_surrogate

BACKENDS = ("auto", "triton", "torch")


class LIFParams(NamedTuple):
    tau: float
    v_threshold: float
    v_reset: float | None  # None: soft reset
    surrogate: str
    beta: float
    detach_reset: bool

    @property
    def surrogate_id(self) -> int:
        return SURROGATE_IDS[self.surrogate]


def check_float(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_lif_params(tau, v_threshold, v_reset, surrogate, beta, detach_reset) -> LIFParams:
    surrogate, beta = resolve_surrogate(surrogate, beta)
    return LIFParams(
        tau=check_float(tau, "tau", positive=True),
        v_threshold=check_float(v_threshold, "v_threshold"),
        v_reset=None if v_reset is None else check_float(v_reset, "v_reset"),
        surrogate=surrogate,
        beta=beta,
        detach_reset=check_bool(detach_reset, "detach_reset"),
    )


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_float_tensor(x, name: str, *, min_dim: int = 0, what: str = "") -> torch.Tensor:
    """A floating-point tensor with at least `min_dim` dims (`what` describes the layout)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims{what}, got shape {tuple(x.shape)}")
    return x


def check_time_major(x_seq, name: str = "x_seq") -> torch.Tensor:
    """A [T, ...] input with T >= 1."""
    check_float_tensor(x_seq, name, min_dim=1, what=" ([T, ...])")
    if x_seq.shape[0] < 1:
        raise ValueError(f"{name} must have T >= 1 time steps (dim 0), got shape {tuple(x_seq.shape)}")
    return x_seq


def check_same_device(name: str, x: torch.Tensor, expected: torch.device) -> None:
    if x.device != expected:
        raise ValueError(f"{name} is on {x.device} but the parameters are on {expected}")
