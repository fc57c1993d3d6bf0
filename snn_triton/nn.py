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

from .checks import (
    NeuronParams,
    check_backend,
    check_bool,
    check_float_tensor,
    check_init_tau,
    check_neuron_params,
    check_step_mode,
    check_steps,
)
from .ops import neuron_scan, spike_checked, spike_conv, spike_linear
from .reference import compute_dtype, rest_potential
from .surrogate import resolve_surrogate


class Spike(nn.Module):
    """Elementwise spike with a surrogate gradient: ``st.spike`` as a layer (any shape).

    Args:
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        backend: "auto", "triton" or "torch" (see ``st.spike``).

    Returns:
        A module mapping x (any shape, floating point) to its spikes, 0 or 1, in x's shape and dtype.

    Raises:
        TypeError: beta is not a number; at call time, x is not a floating-point tensor.
        ValueError: an unknown surrogate or backend, or beta not finite and > 0.

    Examples:
        >>> import torch, snn_triton as st
        >>> st.Spike("superspike")(torch.tensor([-1.0, 2.0]))
        tensor([0., 1.])
    """

    def __init__(self, surrogate: str = "superspike", beta: Optional[float] = None, backend: str = "auto"):
        super().__init__()
        self.surrogate, self.beta = resolve_surrogate(surrogate, beta)
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_checked(x, self.surrogate, self.beta, self.backend)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate!r}, beta={self.beta}, backend={self.backend!r}"


def setting(name: str, doc: str) -> property:
    """A neuron's setting `name` as an attribute, read from and written to its ``params`` (checked as
    the constructor checks it): threshold or tau schedules set it between calls."""

    def get(self):
        return getattr(self.params, name)

    def set(self, value):
        self.change_settings(**{name: value})

    return property(get, set, doc=doc)


class NeuronLayer(nn.Module):
    """What IF, LIF and PLIF share: the step mode, the state and its reset, and the forms that keep
    less for backward (``steps``: one static input fed T times; ``max_pool``: 2x2 max pooling fused
    in; see ``st.lif_scan``). The settings are attributes too (``v_threshold``, ``v_reset``,
    ``detach_reset``, ``decay_input``, ``surrogate``, ``beta``; LIF's ``tau``), and setting one
    changes what later calls compute."""

    v_threshold = setting("v_threshold", "The firing threshold.")
    v_reset = setting("v_reset", "The potential after a spike; None: the soft reset.")
    detach_reset = setting("detach_reset", "Whether the reset is detached from the graph.")
    decay_input = setting("decay_input", "Whether the input is decayed too (LIF, PLIF).")
    surrogate = setting("surrogate", "The surrogate gradient's registered name.")
    beta = setting("beta", "The surrogate's sharpness.")

    def __init__(
        self,
        params: NeuronParams,
        step_mode: str,
        stateful: bool,
        backend: str,
        steps: Optional[int] = None,
        max_pool: bool = False,
    ):
        super().__init__()
        self.params = params
        self.steps = check_steps(steps)
        self.max_pool = check_bool(max_pool, "max_pool")
        self.step_mode, self.stateful = step_mode, stateful
        self.backend = check_backend(backend)
        self.v: Union[float, Tensor] = rest_potential(params.v_reset)

    @property
    def step_mode(self) -> str:
        """The step mode: "m" takes [T, N, ...], "s" one step [N, ...]; set later (``set_step_mode``), checked."""
        return self.__dict__["_step_mode"]

    @step_mode.setter
    def step_mode(self, step_mode: str) -> None:
        self.check_forms(check_step_mode(step_mode), self.__dict__.get("_stateful", False))
        self.__dict__["_step_mode"] = step_mode

    @property
    def stateful(self) -> bool:
        """Whether v is kept between calls; set, checked."""
        return self.__dict__["_stateful"]

    @stateful.setter
    def stateful(self, stateful: bool) -> None:
        self.check_forms(self.__dict__.get("_step_mode", "m"), check_bool(stateful, "stateful"))
        self.__dict__["_stateful"] = stateful

    def check_forms(self, step_mode: str, stateful: bool) -> None:
        # read from __dict__: spikingjelly's MemoryModule sets step_mode before our constructor sets these
        fused = self.__dict__.get("steps") is not None or self.__dict__.get("max_pool", False)
        if fused and (stateful or step_mode == "s"):
            raise ValueError("steps and max_pool take neither stateful=True nor step_mode='s'")

    def change_settings(self, **changes) -> None:
        """``params`` with `changes` (NeuronParams' field names), checked as the constructor checks them."""
        self.params = changed_params(self.params, changes)

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
        else:  # before the potential is made from its shape
            check_float_tensor(x, "x_seq", min_dim=1)
        x_seq = x.unsqueeze(0) if single_step else x
        out = self.scan(x_seq, self.initial_potential(x_seq) if self.stateful else None)
        if self.stateful:
            out, self.v = out
        return out[0] if single_step else out

    def initial_potential(self, x_seq: Tensor) -> Optional[Tensor]:
        """The potential this call starts from, as a step of x_seq: ``v`` (kept from the last call, or
        set by hand: a number, or a tensor that broadcasts to a step, as spikingjelly takes it), or
        None for the resting potential."""
        step, v = x_seq.shape[1:], self.v
        if not isinstance(v, Tensor):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"the membrane potential v must be a number or a tensor, got {type(v).__name__}")
            if v == rest_potential(self.params.v_reset):
                return None
            return torch.full(step, float(v), dtype=x_seq.dtype, device=x_seq.device)
        if v.dtype not in (x_seq.dtype, compute_dtype(x_seq.dtype)) or v.device != x_seq.device:
            v = v.to(x_seq.device, x_seq.dtype)  # the model moved (.double(), .cuda()) with its v kept
        if v.shape != step:
            if v.dim() > len(step) or any(a not in (1, b) for a, b in zip(reversed(v.shape), reversed(step))):
                raise ValueError(
                    f"the membrane potential v kept from the last call has shape {tuple(v.shape)}, "
                    f"but a step of x has shape {tuple(step)}: call reset() between batches"
                )
            v = v.expand(step)
        return v

    def scan(self, x_seq: Tensor, v_init: Optional[Tensor]):
        """The scan of one call's [T, ...] input: spikes, and (spikes, V[T-1]) when stateful."""
        return neuron_scan(
            x_seq, self.scan_params(), w=self.leak_weight(), v_init=v_init, return_v=self.stateful, backend=self.backend
        )

    def reset(self) -> None:
        """Back to the resting potential (v_reset, or 0 for the soft reset), as spikingjelly resets."""
        self.v = rest_potential(self.params.v_reset)

    def detach(self) -> None:
        """Cut the potential from the graph (truncated BPTT): later backward passes stop here."""
        if isinstance(self.v, Tensor):
            self.v = self.v.detach()

    def extra_repr(self) -> str:
        skip = (
            {"neuron", "forced_charge_form"}
            | ({"tau"} if self.params.neuron != "lif" else set())
            | ({"decay_input"} if self.params.neuron == "if" else set())
        )
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params._asdict().items() if k not in skip)
        forms = (f", steps={self.steps}" if self.steps is not None else "") + (
            ", max_pool=True" if self.max_pool else ""
        )
        return f"{fields}{forms}, step_mode={self.step_mode!r}, stateful={self.stateful}, backend={self.backend!r}"


class LIF(NeuronLayer):
    """LIF neurons, spikingjelly's ``LIFNode``, as a layer: ``st.lif_scan`` with its settings kept.

    decay_input=True: ``H = V + (X - (V - v_reset)) / tau``; False: ``H = V - (V - v_reset) / tau + X``.
    Stateless unless stateful=True: then ``v`` is kept between calls until ``reset()``, and
    ``detach()`` cuts it from the graph (truncated BPTT).

    Args:
        tau: the membrane time constant, > 0.
        v_threshold: the firing threshold (+inf: the neuron never fires; its v is a readout).
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        backend: "auto", "triton" or "torch" (see ``st.lif_scan``).
        decay_input: whether the input is divided by tau too.
        step_mode: "m" takes `[T, N, ...]`, "s" one step `[N, ...]` per call.
        stateful: keep the membrane potential between calls.
        steps: the input is one step `[N, ...]` fed at each of ``steps`` steps (see ``st.lif_scan``).
        max_pool: 2x2 max-pool the spikes of `[T, N, C, H, W]` (see ``st.lif_scan``).

    Returns:
        A module mapping x `[T, N, ...]` (step_mode "m") or `[N, ...]` ("s") to spikes of the same shape
            (`[T, N, C, H//2, W//2]` with max_pool, `[steps, N, ...]` with steps).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value (tau <= 0, an unknown surrogate, step mode or backend), or steps /
            max_pool with stateful=True or step_mode="s"; at call time, a kept v of another shape
            than a step of x.

    Examples:
        >>> import torch, snn_triton as st
        >>> lif = st.LIF(tau=2.0, stateful=True)
        >>> lif(torch.full((4, 2), 1.2)).sum(0)  # H: 0.6, 0.9, 1.05 (fires), 0.6
        tensor([1., 1.])
        >>> lif.v
        tensor([0.6000, 0.6000])
        >>> lif.reset()
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: str = "superspike",
        beta: Optional[float] = None,
        detach_reset: bool = False,
        backend: str = "auto",
        *,
        decay_input: bool = True,
        step_mode: str = "m",
        stateful: bool = False,
        steps: Optional[int] = None,
        max_pool: bool = False,
    ):
        params = check_neuron_params(
            "lif",
            tau=tau,
            decay_input=decay_input,
            v_threshold=v_threshold,
            v_reset=v_reset,
            surrogate=surrogate,
            beta=beta,
            detach_reset=detach_reset,
        )
        super().__init__(params, step_mode, stateful, backend, steps, max_pool)

    tau = setting("tau", "The membrane time constant.")


class IF(NeuronLayer):
    """Integrate-and-fire neurons, spikingjelly's ``IFNode``, as a layer: ``H = V + X``, no leak.

    Args:
        v_threshold: the firing threshold (+inf: the neuron never fires; its v is a readout).
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        backend: "auto", "triton" or "torch" (see ``st.lif_scan``).
        step_mode: "m" takes `[T, N, ...]`, "s" one step `[N, ...]` per call.
        stateful: keep the membrane potential between calls (see ``LIF``).
        steps: the input is one step `[N, ...]` fed at each of ``steps`` steps (see ``st.lif_scan``).
        max_pool: 2x2 max-pool the spikes of `[T, N, C, H, W]` (see ``st.lif_scan``).

    Returns:
        A module mapping x `[T, N, ...]` (or `[N, ...]` in step_mode "s") to spikes of the same shape.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value, as for ``LIF``.

    Examples:
        >>> import torch, snn_triton as st
        >>> step = st.IF(step_mode="s", stateful=True)
        >>> [step(torch.tensor([0.6])).item() for _ in range(3)]
        [0.0, 1.0, 0.0]
    """

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: str = "superspike",
        beta: Optional[float] = None,
        detach_reset: bool = False,
        backend: str = "auto",
        *,
        step_mode: str = "m",
        stateful: bool = False,
        steps: Optional[int] = None,
        max_pool: bool = False,
    ):
        params = check_neuron_params(
            "if", v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate, beta=beta, detach_reset=detach_reset
        )
        super().__init__(params, step_mode, stateful, backend, steps, max_pool)


class PLIF(NeuronLayer):
    """Parametric LIF neurons (Fang et al. 2021), spikingjelly's ``ParametricLIFNode``, as a layer.

    The LIF charge with ``1/tau = sigmoid(w)`` multiplied, ``w`` a learned scalar parameter
    initialised to ``-log(init_tau - 1)``, so that tau starts at init_tau.

    Args:
        init_tau: the initial time constant, > 1.
        v_threshold: the firing threshold (+inf: the neuron never fires; its v is a readout).
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        backend: "auto", "triton" or "torch" (see ``st.lif_scan``).
        decay_input: whether the input is multiplied by 1/tau too.
        step_mode: "m" takes `[T, N, ...]`, "s" one step `[N, ...]` per call.
        stateful: keep the membrane potential between calls (see ``LIF``).

    Returns:
        A module mapping x `[T, N, ...]` (or `[N, ...]` in step_mode "s") to spikes of the same shape.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: init_tau <= 1, or another bad value as for ``LIF``.

    Examples:
        >>> import torch, snn_triton as st
        >>> plif = st.PLIF(init_tau=2.0)
        >>> round(plif.tau, 4)
        2.0
        >>> plif(torch.randn(4, 2, 8)).shape
        torch.Size([4, 2, 8])
    """

    def __init__(
        self,
        init_tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: str = "superspike",
        beta: Optional[float] = None,
        detach_reset: bool = False,
        backend: str = "auto",
        *,
        decay_input: bool = True,
        step_mode: str = "m",
        stateful: bool = False,
    ):
        init_tau = check_init_tau(init_tau)
        params = check_neuron_params(
            "plif",
            decay_input=decay_input,
            v_threshold=v_threshold,
            v_reset=v_reset,
            surrogate=surrogate,
            beta=beta,
            detach_reset=detach_reset,
        )
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


def changed_params(params: NeuronParams, changes: dict) -> NeuronParams:
    """`params` with `changes` (field names), checked as the constructor checks them; the forced
    charge form is kept."""
    fields = {**params._asdict(), **changes}
    neuron, forced = fields.pop("neuron"), fields.pop("forced_charge_form")
    return check_neuron_params(neuron, **fields)._replace(forced_charge_form=forced)


class SpikeConv2d(nn.Conv2d):
    """nn.Conv2d for spike input (every value 0 or 1), the input kept for backward as bits.

    Backward needs the input only for the weight gradient; it is kept as bits, 1/32 of its float32
    size, and the results are nn.Conv2d's exactly. Same parameters and state_dict as nn.Conv2d.

    Args:
        *args: nn.Conv2d's (in_channels, out_channels, kernel_size, ...).
        backend: "auto", "triton" or "torch": where the bits are packed (see ``st.lif_scan``).
        **kwargs: nn.Conv2d's (stride, padding, dilation, groups, bias, ...).

    Returns:
        A module mapping spikes `[N, C_in, H, W]` to `[N, C_out, H_out, W_out]`, as nn.Conv2d.

    Raises:
        ValueError: string padding or a padding_mode other than "zeros", or an unknown backend; at
            call time, in training, input other than 0 and 1 fails an assertion (device-side on a
            GPU, without a host sync).

    Examples:
        >>> import torch, snn_triton as st
        >>> conv = st.SpikeConv2d(2, 4, 3, padding=1)
        >>> conv((torch.rand(1, 2, 8, 8) > 0.5).float()).shape
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("SpikeConv2d takes numeric padding with padding_mode='zeros'")
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_conv(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.backend
        )


class SpikeLinear(nn.Linear):
    """nn.Linear for spike input (every value 0 or 1), the input kept for backward as bits.

    As ``SpikeConv2d``: the results, parameters and state_dict are nn.Linear's.

    Args:
        *args: nn.Linear's (in_features, out_features, bias).
        backend: "auto", "triton" or "torch": where the bits are packed (see ``st.lif_scan``).
        **kwargs: nn.Linear's.

    Returns:
        A module mapping spikes `[..., in_features]` to `[..., out_features]`, as nn.Linear.

    Raises:
        ValueError: an unknown backend; at call time, in training, input other than 0 and 1 fails
            an assertion.

    Examples:
        >>> import torch, snn_triton as st
        >>> fc = st.SpikeLinear(16, 4)
        >>> fc((torch.rand(8, 3, 16) > 0.5).float()).shape
        torch.Size([8, 3, 4])
    """

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = check_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        return spike_linear(x, self.weight, self.bias, self.backend)
