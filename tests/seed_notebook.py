"""The seed notebook's network, as the notebook builds it: spikingjelly 0.0.0.0.14 single-step
LIFNodes with the notebook's surrogates, the whole net called T times on the same image.

The oracle of ``st.BasicCSNN`` (same state_dict keys, same logits and gradients) and the
baseline of the CPU benchmarks. Nothing here imports snn_triton.
"""

from oracles import NotebookSurrogate
from spikingjelly.activation_based import functional, neuron
from torch import nn


class SeedNet(nn.Module):
    """Conv(C->32) LIF Pool Conv(32->64) LIF Pool Flatten Linear(->128) LIF Linear(128->classes).

    forward(x [N, C, H, W]) -> logits [N, num_classes]: the mean over T calls of the net. The
    neurons keep their state between calls: call ``reset()`` after each batch, as the notebook does.
    """

    def __init__(self, T=8, surrogate="superspike", beta=None, in_channels=3, num_classes=10, image_size=32):
        super().__init__()
        self.T = T

        def lif():
            return neuron.LIFNode(
                tau=2.0,
                surrogate_function=NotebookSurrogate(surrogate, beta),
                detach_reset=False,
                v_reset=0.0,
                v_threshold=1.0,
            )

        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            lif(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            lif(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (image_size // 4) ** 2, 128),
            lif(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        out = 0
        for _ in range(self.T):
            out = out + self.net(x)
        return out / self.T

    def reset(self):
        functional.reset_net(self.net)
