"""snn_triton: surrogate-gradient spiking neural networks with Triton kernels.

Public API: ``SURROGATES``, ``spike``, ``lif_scan``, ``Spike``, ``LIF``, ``BasicCSNN``.
"""
from .model import BasicCSNN
from .nn import LIF, Spike
from .ops import lif_scan, spike
from .surrogate import SURROGATES

__all__ = ["BasicCSNN", "LIF", "SURROGATES", "Spike", "lif_scan", "spike"]
__version__ = "0.1.0"
