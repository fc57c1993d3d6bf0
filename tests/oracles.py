"""Independent oracles: the seed notebook's surrogate formulas, written as the notebook writes
them, and spikingjelly's own surrogates (Sigmoid, ATan, SoftSign, ...), driving spikingjelly's neurons
(IFNode, LIFNode, ParametricLIFNode). Nothing here imports snn_triton."""

import importlib.metadata

import torch
from spikingjelly.activation_based import neuron, surrogate

SPIKINGJELLY_MAJOR = int(importlib.metadata.version("spikingjelly").split(".")[0])
NOTEBOOK_DEFAULT_BETA = {"superspike": 10.0, "sigmoid": 4.0, "esser": 1.0}


def notebook_surrogate_grad(x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    """h(x) exactly as the notebook's autograd Functions compute it."""
    if surrogate == "superspike":
        return 1.0 / (beta * torch.abs(x) + 1.0) ** 2
    if surrogate == "sigmoid":
        s = torch.sigmoid(beta * x)
        return s * (1 - s)
    if surrogate == "esser":
        return torch.clamp(1.0 - beta * torch.abs(x), min=0)
    raise KeyError(surrogate)


class _StepSpike(torch.autograd.Function):
    """Heaviside forward; backward grad_output * h(x, beta), for a formula h written in this file."""

    @staticmethod
    def forward(ctx, x, h, beta):
        ctx.save_for_backward(x)
        ctx.h, ctx.beta = h, beta
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.h(x, ctx.beta), None, None


class NotebookSurrogate(torch.nn.Module):
    """A spikingjelly `surrogate_function`: heaviside forward, the notebook's h(x) backward."""

    def __init__(self, surrogate: str, beta: float | None = None):
        super().__init__()
        self.surrogate = surrogate
        self.beta = NOTEBOOK_DEFAULT_BETA[surrogate] if beta is None else beta

    def forward(self, x):
        return _StepSpike.apply(x, lambda x, beta: notebook_surrogate_grad(x, self.surrogate, beta), self.beta)


# snn_triton's names for spikingjelly's own surrogate functions (their alpha is our beta).
SPIKINGJELLY_SURROGATES = {
    "spikingjelly_sigmoid": "Sigmoid",
    "atan": "ATan",
    "soft_sign": "SoftSign",
    "piecewise_quadratic": "PiecewiseQuadratic",
    "piecewise_exp": "PiecewiseExp",
    "erf": "Erf",
    "nonzero_sign_log_abs": "NonzeroSignLogAbs",
    "spikingjelly_superspike": "SuperSpike",
}


class FormulaSurrogate(torch.nn.Module):
    """Where the installed spikingjelly has no working class of the name (0.0.0.0.14 has no SuperSpike,
    and its NonzeroSignLogAbs fails in backward): 2.0.0's formula, written out here; alpha defaults 1."""

    FORMULAS = {
        "SuperSpike": lambda x, alpha: alpha / (x.abs() + 1.0) ** 2,
        "NonzeroSignLogAbs": lambda x, alpha: 1.0 / (1.0 / alpha + x.abs()),
    }

    def __init__(self, name: str, alpha: float | None):
        super().__init__()
        self.formula, self.alpha = self.FORMULAS[name], 1.0 if alpha is None else alpha

    def forward(self, x):
        return _StepSpike.apply(x, self.formula, self.alpha)


def oracle_surrogate(name, beta=None):
    """A spikingjelly surrogate_function for a surrogate name: spikingjelly's own class (or its formula
    where that class does not work in the installed version), or the notebook's formula for the seed's three."""
    if name in SPIKINGJELLY_SURROGATES:
        theirs = SPIKINGJELLY_SURROGATES[name]
        if SPIKINGJELLY_MAJOR < 2 and theirs in FormulaSurrogate.FORMULAS:
            return FormulaSurrogate(theirs, beta)
        cls = getattr(surrogate, theirs)
        return cls() if beta is None else cls(alpha=beta)
    return NotebookSurrogate(name, beta)


def oracle_spike(x, surrogate, beta=None):
    return oracle_surrogate(surrogate, beta)(x)


def spikingjelly_neuron(
    kind,
    *,
    tau=2.0,
    decay_input=True,
    v_threshold=1.0,
    v_reset=0.0,
    surrogate="superspike",
    beta=None,
    detach_reset=False,
    step_mode="m",
):
    """spikingjelly's IFNode / LIFNode / ParametricLIFNode (tau is PLIF's init_tau), torch backend."""
    common = dict(
        v_threshold=float(v_threshold),
        v_reset=None if v_reset is None else float(v_reset),
        surrogate_function=oracle_surrogate(surrogate, beta),
        detach_reset=detach_reset,
        step_mode=step_mode,
        backend="torch",
    )
    if kind == "if":
        return neuron.IFNode(**common)
    if kind == "lif":
        return neuron.LIFNode(tau=float(tau), decay_input=decay_input, **common)
    if kind == "plif":
        return neuron.ParametricLIFNode(init_tau=float(tau), decay_input=decay_input, **common)
    raise KeyError(kind)


def spikingjelly_lif(
    x_seq, *, tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate="superspike", beta=None, detach_reset=False
):
    """Spikes of spikingjelly's multi-step LIFNode (torch backend, training mode) for x_seq."""
    return spikingjelly_neuron(
        "lif",
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate=surrogate,
        beta=beta,
        detach_reset=detach_reset,
    )(x_seq)
