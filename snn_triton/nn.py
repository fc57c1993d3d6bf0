"""nn.Module forms of the ops. Arguments are checked once, when the module is built.

The neuron layers (``IF``, ``LIF``, ``PLIF``) are stateless by default: every call starts from
V = v_reset, so no ``reset_net`` is needed. With ``stateful=True`` a layer keeps its membrane
potential ``v`` between calls, as spikingjelly's neurons do, until ``reset()``; the potential
stays in the autograd graph (backpropagation through all calls since the reset) unless
``detach()`` cuts it there (truncated BPTT). ``step_mode='m'`` takes [T, N, ...], ``'s'`` one
step [N, ...].
"""
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .checks import (NeuronParams, check_backend, check_bool, check_float_tensor, check_init_tau,
                     check_neuron_params, check_step_mode, check_steps)
from .ops import neuron_scan, spike_checked, spike_conv2d, spike_linear
from .reference import rest_potential
from .surrogate import resolve_surrogate


class Spike(nn.Module):
    """Elementwise spike with a surrogate gradient: ``st.spike`` as a layer (any shape)."""

    def __init__(self, surrogate: str = "superspike", beta: Optional[float] = None, backend: str = "auto"):
        super().__init__()
        self.surrogate, self.beta = resolve_surrogate(surrogate, beta)
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_checked(x, self.surrogate, self.beta, self.backend)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate!r}, beta={self.beta}, backend={self.backend!r}"


class NeuronLayer(nn.Module):
    """What IF, LIF and PLIF share: the step mode, the state and its reset, and the forms that keep
    less for backward (``steps``: one static input fed T times; ``max_pool``: 2x2 max pooling fused
    in; see ``st.lif_scan``)."""

    def __init__(self, params: NeuronParams, step_mode: str, stateful: bool, backend: str,
                 steps: Optional[int] = None, max_pool: bool = False):
        super().__init__()
        self.params = params
        self.step_mode = check_step_mode(step_mode)
        self.stateful = check_bool(stateful, "stateful")
        self.backend = check_backend(backend)
        self.steps = check_steps(steps)
        self.max_pool = check_bool(max_pool, "max_pool")
        if (self.steps is not None or self.max_pool) and (self.stateful or self.step_mode == "s"):
            raise ValueError("steps and max_pool take neither stateful=True nor step_mode='s'")
        self.v: Union[float, Tensor] = rest_potential(params.v_reset)

    def leak_weight(self) -> Optional[Tensor]:
        """PLIF's w; None for the fixed neurons."""
        return None

    def scan_params(self) -> NeuronParams:
        """What this call computes: ``params`` (a converted spikingjelly neuron changes the charge in eval mode)."""
        return self.params

    def forward(self, x: Tensor) -> Tensor:
        if self.steps is not None or self.max_pool:
            return neuron_scan(x, self.scan_params(), backend=self.backend, steps=self.steps, max_pool=self.max_pool)
        single_step = self.step_mode == "s"
        if single_step:
            check_float_tensor(x, "x", min_dim=1, what=" ([N, ...] in step_mode 's')")
        x_seq = x.unsqueeze(0) if single_step else x
        v_init = self.v if self.stateful and isinstance(self.v, Tensor) else None
        if v_init is not None and v_init.shape != x_seq.shape[1:]:
            raise ValueError(f"the membrane potential v kept from the last call has shape {tuple(v_init.shape)}, "
                             f"but a step of x has shape {tuple(x_seq.shape[1:])}: call reset() between batches")
        out = self.scan(x_seq, v_init)
        if self.stateful:
            out, self.v = out
        return out[0] if single_step else out

    def scan(self, x_seq: Tensor, v_init: Optional[Tensor]):
        """The scan of one call's [T, ...] input: spikes, and (spikes, V[T-1]) when stateful."""
        return neuron_scan(x_seq, self.scan_params(), w=self.leak_weight(), v_init=v_init, return_v=self.stateful,
                           backend=self.backend)

    def reset(self) -> None:
        """Back to the resting potential (v_reset, or 0 for the soft reset), as spikingjelly resets."""
        self.v = rest_potential(self.params.v_reset)

    def detach(self) -> None:
        """Cut the potential from the graph (truncated BPTT): later backward passes stop here."""
        if isinstance(self.v, Tensor):
            self.v = self.v.detach()

    def extra_repr(self) -> str:
        skip = {"neuron", "charge_form"} | ({"tau"} if self.params.neuron != "lif" else set()) | (
            {"decay_input"} if self.params.neuron == "if" else set())
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params._asdict().items() if k not in skip)
        forms = (f", steps={self.steps}" if self.steps is not None else "") + (", max_pool=True" if self.max_pool else "")
        return f"{fields}{forms}, step_mode={self.step_mode!r}, stateful={self.stateful}, backend={self.backend!r}"


class LIF(NeuronLayer):
    """LIF neurons, spikingjelly's ``LIFNode``: [T, N, ...] -> spikes [T, N, ...] (step_mode 'm').

    decay_input=True: H = V + (X - (V - v_reset)) / tau; False: H = V - (V - v_reset) / tau + X.
    v_reset=None selects the soft reset. Stateless unless stateful=True (see the module doc).
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 surrogate: str = "superspike", beta: Optional[float] = None, detach_reset: bool = False,
                 backend: str = "auto", *, decay_input: bool = True, step_mode: str = "m", stateful: bool = False,
                 steps: Optional[int] = None, max_pool: bool = False):
        params = check_neuron_params("lif", tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                                     v_reset=v_reset, surrogate=surrogate, beta=beta, detach_reset=detach_reset)
        super().__init__(params, step_mode, stateful, backend, steps, max_pool)


class IF(NeuronLayer):
    """Integrate-and-fire neurons, spikingjelly's ``IFNode``: H = V + X, no leak."""

    def __init__(self, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, surrogate: str = "superspike",
                 beta: Optional[float] = None, detach_reset: bool = False, backend: str = "auto", *,
                 step_mode: str = "m", stateful: bool = False, steps: Optional[int] = None, max_pool: bool = False):
        params = check_neuron_params("if", v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                                     beta=beta, detach_reset=detach_reset)
        super().__init__(params, step_mode, stateful, backend, steps, max_pool)


class PLIF(NeuronLayer):
    """Parametric LIF neurons (Fang et al. 2021), spikingjelly's ``ParametricLIFNode``: the LIF
    charge with 1/tau = sigmoid(w), ``w`` a learned scalar parameter initialised to
    -log(init_tau - 1), so that tau starts at init_tau (> 1)."""

    def __init__(self, init_tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 surrogate: str = "superspike", beta: Optional[float] = None, detach_reset: bool = False,
                 backend: str = "auto", *, decay_input: bool = True, step_mode: str = "m", stateful: bool = False):
        init_tau = check_init_tau(init_tau)
        params = check_neuron_params("plif", decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                                     surrogate=surrogate, beta=beta, detach_reset=detach_reset)
        super().__init__(params, step_mode, stateful, backend)
        self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))

    def leak_weight(self) -> Tensor:
        return self.w

    @property
    def tau(self) -> float:
        """The current time constant, 1 / sigmoid(w)."""
        with torch.no_grad():
            return 1.0 / self.w.sigmoid().item()

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g}, " + super().extra_repr()


class SpikeConv2d(nn.Conv2d):
    """nn.Conv2d for spike input (every value 0 or 1): the input, which backward needs for the weight
    gradient, is kept as bits, 1/32 of its float32 size; the results are nn.Conv2d's exactly.
    Same parameters and state_dict as nn.Conv2d. Input other than 0 and 1 fails an assertion
    (device-side on a GPU, no sync), as bits cannot hold it."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("SpikeConv2d takes numeric padding with padding_mode='zeros'")
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                            self.backend)


class SpikeLinear(nn.Linear):
    """nn.Linear for spike input (every value 0 or 1), the input kept for backward as bits; as SpikeConv2d."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_linear(x, self.weight, self.bias, self.backend)
