"""Independent oracles: the seed notebook's surrogate formulas, written as the notebook writes
them, driving spikingjelly 0.0.0.0.14's LIFNode. Nothing here imports snn_triton."""
import torch
from spikingjelly.activation_based import neuron

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


class _NotebookSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate, beta):
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.beta = surrogate, beta
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * notebook_surrogate_grad(x, ctx.surrogate, ctx.beta), None, None


class NotebookSurrogate(torch.nn.Module):
    """A spikingjelly `surrogate_function`: heaviside forward, the notebook's h(x) backward."""

    def __init__(self, surrogate: str, beta: float | None = None):
        super().__init__()
        self.surrogate = surrogate
        self.beta = NOTEBOOK_DEFAULT_BETA[surrogate] if beta is None else beta

    def forward(self, x):
        return _NotebookSpike.apply(x, self.surrogate, self.beta)


def notebook_spike(x, surrogate, beta=None):
    return NotebookSurrogate(surrogate, beta)(x)


def spikingjelly_lif(x_seq, *, tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate="superspike",
                     beta=None, detach_reset=False):
    """Spikes of spikingjelly's multi-step LIFNode (torch backend, training mode) for x_seq."""
    node = neuron.LIFNode(tau=float(tau), decay_input=True, v_threshold=v_threshold, v_reset=v_reset,
                          surrogate_function=NotebookSurrogate(surrogate, beta),
                          detach_reset=detach_reset, step_mode="m", backend="torch")
    return node(x_seq)
