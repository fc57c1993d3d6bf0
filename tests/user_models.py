"""Models as a user writes them, kept out of the test files: pytest rewrites the assert statements of
those, and a model's own assert must stay Python's."""

from spikingjelly.activation_based import neuron
from torch import nn


class Checked(nn.Module):
    """A forward that checks its input first, as spikingjelly 2.x's transformers do."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.sn, self.fc = neuron.LIFNode(v_threshold=0.3, step_mode="m"), nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        if x.ndim != 5:
            raise ValueError(f"expected [T, N, C, H, W], got {x.shape}")
        T, N, C, H, W = x.shape
        assert C == 2, "two channels"
        s = self.sn(self.bn(self.conv(x.flatten(0, 1))).unflatten(0, (T, N)))
        return self.fc(s.flatten(2))
