"""nn.Module forms of the ops. Arguments are checked once, when the module is built."""
from typing import Optional

from torch import Tensor, nn

from .checks import check_backend, check_lif_params
from .ops import lif_scan_checked, spike_checked
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


class LIF(nn.Module):
    """Multi-step LIF neurons: [T, N, ...] -> spikes [T, N, ...]; every call starts at V = v_reset.

    Same dynamics as spikingjelly's ``LIFNode(decay_input=True, step_mode='m')``, with no state
    kept between calls (so no ``reset_net`` is needed). v_reset=None selects the soft reset.
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 surrogate: str = "superspike", beta: Optional[float] = None, detach_reset: bool = False,
                 backend: str = "auto"):
        super().__init__()
        self.params = check_lif_params(tau, v_threshold, v_reset, surrogate, beta, detach_reset)
        self.backend = check_backend(backend)

    def forward(self, x_seq: Tensor) -> Tensor:
        return lif_scan_checked(x_seq, self.params, self.backend)

    def extra_repr(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params._asdict().items())
        return f"{fields}, backend={self.backend!r}"
