"""snn_triton: surrogate-gradient spiking neural networks with Triton kernels.

Public API: ``SURROGATES``, ``register_surrogate``, ``spike``, ``lif_scan``, ``if_scan``,
``plif_scan``, ``Spike``, ``LIF``, ``IF``, ``PLIF``, ``SpikeConv2d``, ``SpikeLinear``, ``BasicCSNN``,
``from_spikingjelly``, ``lean``, ``lean_report``, ``LeanReport``, ``to_nir``, ``from_nir``,
``export_streaming`` (the last three need the deploy extra: ``pip install -e ".[deploy]"``).
"""

from .lean import LeanReport, lean, lean_report
from .model import BasicCSNN
from .nir_graph import from_nir, to_nir
from .nn import IF, LIF, PLIF, Spike, SpikeConv2d, SpikeLinear
from .ops import if_scan, lif_scan, plif_scan, spike
from .spikingjelly_adapter import from_spikingjelly
from .streaming import export_streaming
from .surrogate import SURROGATES, register_surrogate, unregister_surrogate

__all__ = [
    "BasicCSNN",
    "IF",
    "LIF",
    "LeanReport",
    "PLIF",
    "SURROGATES",
    "Spike",
    "SpikeConv2d",
    "SpikeLinear",
    "export_streaming",
    "from_nir",
    "from_spikingjelly",
    "if_scan",
    "lean",
    "lean_report",
    "lif_scan",
    "plif_scan",
    "register_surrogate",
    "spike",
    "to_nir",
    "unregister_surrogate",
]
__version__ = "0.1.0"
