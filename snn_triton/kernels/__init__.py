"""Triton kernels and their launchers.

Triton decides between compiling and interpreting when a kernel is decorated, so
``TRITON_INTERPRET=1`` must be set before this package is first imported for the kernels to
run on CPU tensors.
"""

from .bits import pack_bits, unpack_bits
from .common import INTERPRETED
from .fused_scans import lif_pool_backward, lif_pool_forward, lif_static_backward, lif_static_forward
from .lif import lif_scan_backward, lif_scan_forward
from .spike import spike_backward, spike_forward
from .spike_pool import spike_max_pool2d_backward, spike_max_pool2d_forward

__all__ = [
    "INTERPRETED",
    "lif_pool_backward",
    "lif_pool_forward",
    "lif_scan_backward",
    "lif_scan_forward",
    "lif_static_backward",
    "lif_static_forward",
    "pack_bits",
    "spike_backward",
    "spike_forward",
    "spike_max_pool2d_backward",
    "spike_max_pool2d_forward",
    "unpack_bits",
]
