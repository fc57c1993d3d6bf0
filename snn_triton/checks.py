"""Argument checks shared by every entry point: bad input fails here, in Python, with an error
that names the argument, before any kernel is launched."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import reference
from .surrogate import resolve_surrogate

BACKENDS = ("auto", "triton", "torch")
NEURONS = ("if", "lif", "plif")
STEP_MODES = ("s", "m")


class NeuronParams(NamedTuple):
    """A neuron's settings, checked: the one value that travels from a layer or a public function down
    to the ops. PLIF's leak is not here: it is the tensor sigmoid(w)."""

    neuron: str  # "if", "lif" or "plif"
    tau: float  # LIF's time constant; unused by IF and PLIF
    decay_input: bool
    v_threshold: float
    v_reset: float | None  # None: soft reset
    surrogate: str
    beta: float
    detach_reset: bool
    forced_charge_form: int | None = None  # a form other than spikingjelly 0.0.0.0.14's in training (the adapter's)

    @property
    def charge_form(self) -> int:
        """The charge form (``reference.CHARGE_FORMS``) spikingjelly computes for these settings."""
        if self.forced_charge_form is not None:
            return self.forced_charge_form
        return reference.charge_form_of(self.neuron != "if", self.decay_input, self.v_reset)

    @property
    def leak(self) -> float:
        """LIF's leak operand (``reference``): tau, divided by; for SCALED the factor 1 - 1/tau, as
        spikingjelly rounds it."""
        return 1.0 - 1.0 / self.tau if self.charge_form == reference.SCALED else self.tau

    def as_neuron(self, leak: reference.Leak) -> reference.Neuron:
        """These settings as the equations take them, with `leak` as the leak operand (PLIF's tensor)."""
        return reference.Neuron(*self.op_settings())._replace(leak=leak)

    def op_settings(self) -> tuple:
        """The settings as the ops take them, in their schemas' order (a schema takes no tuple):
        charge_form, leak, v_threshold, v_reset, surrogate, beta, detach_reset."""
        return (
            self.charge_form,
            self.leak,
            self.v_threshold,
            self.v_reset,
            self.surrogate,
            self.beta,
            self.detach_reset,
        )


def check_float(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def check_threshold(value) -> float:
    """A firing threshold: a finite number, or +inf (a neuron that never fires: a readout of v)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return check_float(value, "v_threshold")


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


def check_neuron_params(
    neuron, *, tau=1.0, decay_input=True, v_threshold, v_reset, surrogate, beta, detach_reset
) -> NeuronParams:
    surrogate, beta = resolve_surrogate(surrogate, beta)
    return NeuronParams(
        neuron=neuron,
        tau=check_float(tau, "tau", positive=True),
        decay_input=check_bool(decay_input, "decay_input"),
        v_threshold=check_threshold(v_threshold),
        v_reset=None if v_reset is None else check_float(v_reset, "v_reset"),
        surrogate=surrogate,
        beta=beta,
        detach_reset=check_bool(detach_reset, "detach_reset"),
    )


def check_init_tau(init_tau) -> float:
    """PLIF's initial tau: 1/tau = sigmoid(w) < 1 needs tau > 1 (w = -log(init_tau - 1))."""
    init_tau = check_float(init_tau, "init_tau")
    if init_tau <= 1.0:
        raise ValueError(f"init_tau must be > 1 (1/tau = sigmoid(w) is below 1), got {init_tau!r}")
    return init_tau


def check_steps(steps) -> int | None:
    """The number of steps a static input is fed for: None (the input is a sequence), or an int >= 1."""
    return None if steps is None else check_int(steps, "steps")


def check_step_mode(step_mode) -> str:
    if step_mode not in STEP_MODES:
        raise ValueError(
            f"step_mode must be 's' (one step, [N, ...]) or 'm' (multi-step, [T, N, ...]), got {step_mode!r}"
        )
    return step_mode


def check_state(v_init, x_seq: torch.Tensor, name: str = "v_init") -> torch.Tensor | None:
    """An initial membrane potential: None, or a tensor of one step's shape, on x_seq's device, in
    x_seq's dtype or the dtype the scan computes in (float32 for half inputs)."""
    if v_init is None:
        return None
    if not isinstance(v_init, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(v_init).__name__}")
    if v_init.shape != x_seq.shape[1:]:
        raise ValueError(f"{name} must have one step's shape {tuple(x_seq.shape[1:])}, got {tuple(v_init.shape)}")
    allowed = {x_seq.dtype, reference.compute_dtype(x_seq.dtype)}
    if v_init.dtype not in allowed:
        raise ValueError(
            f"{name} must have dtype {' or '.join(sorted(map(str, allowed)))} for an input of "
            f"{x_seq.dtype}, got {v_init.dtype}"
        )
    if v_init.device != x_seq.device:
        raise ValueError(f"{name} is on {v_init.device} but the input is on {x_seq.device}")
    return v_init


def check_plif_weight(w, x_seq: torch.Tensor) -> torch.Tensor:
    """PLIF's w: a floating-point tensor of one element on x_seq's device."""
    check_float_tensor(w, "w")
    if w.numel() != 1:
        raise ValueError(f"w must have one element (one learned leak per layer), got shape {tuple(w.shape)}")
    if w.device != x_seq.device:
        raise ValueError(f"w is on {w.device} but the input is on {x_seq.device}")
    return w


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
