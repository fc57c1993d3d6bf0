"""What one training or evaluation step computes on a batch, as one module: the unit that
torch.compile turns into few launches and that DistributedDataParallel wraps.

Everything it returns stays on the device: the loss to call backward on, and the batch's metric
sums, which the engine adds up over an epoch and reads once at its end. Nothing here waits for
the device, so the host can queue the next step while the device runs this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import LIF

PRECISIONS = ("fp32", "bf16")
# The per-image quantities summed over a batch, then the firing rate of each LIF layer.
SUMS = ("loss", "correct", "images")


class Objective(nn.Module):
    """forward(x [b, C, H, W], y [b], weight [b]) -> (loss [], sums [len(SUMS) + layers]).

    The model runs under bf16 autocast with precision "bf16" (convolutions and linear layers in
    bfloat16; the LIF ops compute in float32 inside); the cross-entropy is always float32.
    loss = loss_scale * sum(weight * cross-entropy): with the batch's weights (1 / images in the
    global batch, 0 for padding) and loss_scale = the number of processes, DDP's mean of the
    processes' gradients is the gradient of the mean loss over the global batch.
    sums: cross-entropy, correct answers, images and each LIF layer's firing rate (spikes per
    neuron and step), summed over the batch's images (weight > 0).
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", loss_scale: float = 1.0):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model, self.bf16, self.loss_scale = model, precision == "bf16", loss_scale
        lifs = [m for m in model.modules() if isinstance(m, LIF)]
        self.layers = [f"lif{i + 1}" for i in range(len(lifs))]
        self.rates: list[Tensor | None] = [None] * len(lifs)  # per image, of the latest forward
        for i, lif in enumerate(lifs):
            lif.register_forward_hook(self._record_rate(i))

    def _record_rate(self, i: int):
        def record(module, inputs, spikes):  # spikes [T, b, ...] -> [b]
            dims = [0, *range(2, spikes.dim())]
            self.rates[i] = spikes.detach().mean(dims, dtype=torch.float32)

        return record

    def forward(self, x: Tensor, y: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        correct = (logits.argmax(1) == y).float()
        per_image = torch.stack([losses.detach(), correct, torch.ones_like(correct), *self.rates])
        return self.loss_scale * (weight * losses).sum(), per_image @ (weight > 0).float()
