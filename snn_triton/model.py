"""BasicCSNN: the seed experiment's convolutional SNN, multi-step, keeping little for backward.

The seed notebook calls a single-step network T times on the same image. Here every layer sees
the whole sequence [T, N, ...] at once, and the two linear ends are not repeated: conv1's input is
the same at every step, so conv1 runs once and the first LIF is the static-input scan (it keeps
conv1's one output, not H for every step); fc2 is linear, so the mean over time is taken before
it. Each 2x2 max pooling is fused into the LIF before it (only the pooled spikes are written, no
indices kept), and conv2 and fc1, fed spikes, keep them as bits. Same math as the notebook, less
work and about a tenth of the memory kept for backward.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from .checks import check_backend, check_float_tensor, check_int, check_same_device
from .nn import LIF, SpikeConv2d, SpikeLinear

# Channels and widths of the seed network.
CONV1_CHANNELS, CONV2_CHANNELS, HIDDEN = 32, 64, 128


class BasicCSNN(nn.Module):
    """Conv(C->32) LIF Pool Conv(32->64) LIF Pool Flatten Linear(->128) LIF Linear(128->classes).

    ``state_dict()`` keys are the seed notebook's (``net.0`` conv1, ``net.3`` conv2, ``net.7`` fc1,
    ``net.9`` fc2), so weights move both ways. The LIF neurons are those of the seed (tau=2,
    v_threshold=1, hard reset to 0, reset not detached).

    Args:
        T: time steps per image.
        surrogate: a registered surrogate name (``st.SURROGATES``) for every LIF layer.
        beta: the surrogate's sharpness; None takes its default.
        in_channels: channels of the input images (3 for CIFAR-10, 1 for Fashion-MNIST).
        num_classes: outputs of the last layer.
        image_size: height and width of the square input images, >= 4 (two 2x2 poolings).
        backend: "auto", "triton" or "torch" (see ``st.lif_scan``).

    Returns:
        A module mapping images `[N, in_channels, image_size, image_size]` to logits `[N, num_classes]`,
            the mean over the T steps of the last layer's output.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value (T < 1, image_size < 4, an unknown surrogate or backend); at call
            time, images of another shape or on another device than the weights.

    Examples:
        >>> import torch, snn_triton as st
        >>> net = st.BasicCSNN(T=4, in_channels=1, image_size=28)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        T: int = 8,
        surrogate: str = "superspike",
        beta: Optional[float] = None,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        backend: str = "auto",
    ):
        super().__init__()
        self.T = check_int(T, "T")
        self.in_channels = check_int(in_channels, "in_channels")
        self.image_size = check_int(image_size, "image_size", minimum=4)  # two 2x2 poolings
        check_int(num_classes, "num_classes")
        check_backend(backend)

        def lif(**form):
            return LIF(
                tau=2.0,
                v_threshold=1.0,
                v_reset=0.0,
                surrogate=surrogate,
                beta=beta,
                detach_reset=False,
                backend=backend,
                **form,
            )

        # The seed's layer list, indices included (they name the state_dict keys); the pooling
        # layers are Identity, each pooling being fused into the LIF before it.
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, CONV1_CHANNELS, kernel_size=3, padding=1),
            lif(steps=T, max_pool=True),
            nn.Identity(),
            SpikeConv2d(CONV1_CHANNELS, CONV2_CHANNELS, kernel_size=3, padding=1, backend=backend),
            lif(max_pool=True),
            nn.Identity(),
            nn.Flatten(),
            SpikeLinear(CONV2_CHANNELS * (image_size // 4) ** 2, HIDDEN, backend=backend),
            lif(),
            nn.Linear(HIDDEN, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_float_tensor(x, "x")
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"x must be [N, {self.in_channels}, {self.image_size}, {self.image_size}], got shape {tuple(x.shape)}"
            )
        conv1, lif_pool1, _, conv2, lif_pool2, _, flatten, fc1, lif3, fc2 = self.net
        check_same_device("x", x, conv1.weight.device)
        T, N = self.T, x.shape[0]
        # Channels-last activations: oneDNN's convolutions run fastest on them, and the LIF scans
        # read each step's [N, H, W, C] memory as it lies (the pooled spikes come out the same way).
        x = x.contiguous(memory_format=torch.channels_last)
        p1 = lif_pool1(conv1(x))  # conv1 once; [T, N, 32, H/2, W/2]
        p2 = lif_pool2(conv2(p1.flatten(0, 1)).unflatten(0, (T, N)))  # [T, N, 64, H/4, W/4]
        s3 = lif3(fc1(flatten(p2.flatten(0, 1))).unflatten(0, (T, N)))  # [T, N, 128]
        return fc2(s3.mean(0))  # [N, classes]: fc2 is linear, so average first

    def extra_repr(self) -> str:
        return f"T={self.T}"
