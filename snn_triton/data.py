"""Datasets of the seed experiment and its stand-ins, and batches whose order is a function of
(seed, epoch), so that a run resumed in the middle of an epoch sees the batches it would have seen.

- ``cifar10``: torchvision's CIFAR10 with the seed's transforms (horizontal flip, ToTensor,
  Normalize with the seed's mean/std); downloaded when missing and online.
- ``fashion-mnist``: torchvision's FashionMNIST (1x28x28), prepared offline from the gzipped idx
  files that ``apt-get install dataset-fashion-mnist`` puts under /usr/share/datasets.
- ``synthetic``: deterministic random images (a noisy prototype per class), any shape.

The random horizontal flip is drawn with the epoch's shuffle (``EpochPlan``), not inside the
dataset, so it does not depend on worker processes, on where a run was interrupted, on how many
processes share the batches, or on where the batches are made: by torchvision's transforms in a
DataLoader (``HostSplit``), or on the device from the dataset held there as stored (``ResidentSplit``).
Both give the same tensors.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

DATASETS = ("cifar10", "fashion-mnist", "synthetic")

# The seed notebook's Normalize, kept to reproduce the seed experiment. They are
# the constants most CIFAR-10 code copies; the std is not the training set's pixel std (about 0.247,
# 0.243, 0.261), so these are literals, not derived from the data.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# The mean and (population) std of all 60,000 x 784 training pixels / 255, to 4 decimals;
# tests/test_data.py derives them again from the real files when they are installed.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
SYNTHETIC_SIZES = (1024, 256)  # train, test images


class DataUnavailable(RuntimeError):
    """A dataset is not on disk and cannot be fetched; the message says what to do."""


@dataclass(frozen=True)
class ImageData:
    """Train and test sets of [C, H, W] images with integer labels."""

    train: Dataset
    test: Dataset
    in_channels: int
    image_size: int
    num_classes: int
    hflip: bool  # augment the training set with random horizontal flips
    mean: tuple[float, ...] | None = None  # Normalize's, after ToTensor's uint8 / 255; None: used as stored
    std: tuple[float, ...] | None = None


def load(name: str, data_dir: str | os.PathLike, *, download: bool = True, seed: int = 0) -> ImageData:
    """The dataset `name` (one of ``DATASETS``) from `data_dir`; `seed` draws the synthetic one."""
    if name == "cifar10":
        return _cifar10(Path(data_dir), download)
    if name == "fashion-mnist":
        return _fashion_mnist(Path(data_dir), download)
    if name == "synthetic":
        return synthetic(seed=seed)
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def _normalized(mean, std) -> transforms.Compose:
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


def _cifar10(root: Path, download: bool) -> ImageData:
    tf = _normalized(CIFAR10_MEAN, CIFAR10_STD)
    try:
        train, test = (datasets.CIFAR10(root, train=split, transform=tf, download=download) for split in (True, False))
    except (RuntimeError, OSError) as error:  # torchvision: "not found or corrupted"; offline: URLError
        raise DataUnavailable(
            f"CIFAR-10 is not in {root}/cifar-10-batches-py and could not be downloaded ({error}). "
            "Put it there or point --data-dir at it, or train offline with --dataset fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or --dataset synthetic."
        ) from None
    return ImageData(
        train, test, in_channels=3, image_size=32, num_classes=10, hflip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD
    )


def prepare_fashion_mnist(root: Path) -> bool:
    """Put the un-gzipped idx files where torchvision looks (ROOT/FashionMNIST/raw), taking the
    gzipped ones from there, from ROOT, or from the system package. Whether all four are there."""
    raw = root / "FashionMNIST" / "raw"
    for name in FASHION_MNIST_FILES:
        if (raw / name).is_file():
            continue
        found = [d / f"{name}.gz" for d in (raw, root, SYSTEM_FASHION_MNIST) if (d / f"{name}.gz").is_file()]
        if not found:
            return False
        raw.mkdir(parents=True, exist_ok=True)
        partial = raw / f"{name}.partial"
        with gzip.open(found[0], "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(partial, raw / name)  # never leave a truncated file under the final name
    return True


def _fashion_mnist(root: Path, download: bool) -> ImageData:
    tf = _normalized(FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    try:
        download = not prepare_fashion_mnist(root) and download
        train, test = (
            datasets.FashionMNIST(root, train=split, transform=tf, download=download) for split in (True, False)
        )
    except (RuntimeError, OSError) as error:
        raise DataUnavailable(
            f"Fashion-MNIST is not under {root} and could not be downloaded ({error}). Install it "
            f"offline with `apt-get install dataset-fashion-mnist` (gzipped idx files in "
            f"{SYSTEM_FASHION_MNIST}), or point --data-dir at a folder with the files, or use --dataset synthetic."
        ) from None
    return ImageData(
        train,
        test,
        in_channels=1,
        image_size=28,
        num_classes=10,
        hflip=True,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
    )


class SyntheticImages(Dataset):
    """`n` images [C, H, W]: the prototype of the label plus unit noise, drawn once from `seed`."""

    def __init__(self, prototypes: torch.Tensor, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(len(prototypes), (n,), generator=g)
        self.images = prototypes[self.labels] + torch.randn((n, *prototypes.shape[1:]), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def synthetic(
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    sizes: tuple[int, int] = SYNTHETIC_SIZES,
    seed: int = 0,
) -> ImageData:
    """Deterministic random images in any shape (CIFAR-10's by default): smoke runs, benchmarks."""
    prototypes = torch.randn(
        (num_classes, in_channels, image_size, image_size), generator=torch.Generator().manual_seed(seed)
    )
    train, test = (SyntheticImages(prototypes, n, seed=seed + 1 + i) for i, n in enumerate(sizes))
    return ImageData(train, test, in_channels, image_size, num_classes, hflip=False)


def stored(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as it is stored, before any transform: (pixels [N, H, W, C], labels [N] int64); uint8
    for the real datasets (torchvision keeps them whole in memory), float for the synthetic one."""
    if isinstance(dataset, SyntheticImages):
        return dataset.images.permute(0, 2, 3, 1), dataset.labels
    pixels = torch.as_tensor(dataset.data)  # CIFAR10: numpy [N, H, W, C]; FashionMNIST: a tensor [N, H, W]
    return (pixels if pixels.dim() == 4 else pixels.unsqueeze(-1)), torch.as_tensor(dataset.targets)


def fits_on_device(data: ImageData, device: torch.device) -> bool:
    """Whether both splits, as stored, take at most a quarter of the device's free memory (the rest
    is left to the activations); False off CUDA, where the DataLoader path is the default."""
    if device.type != "cuda":
        return False
    size = sum(t.nbytes for split in (data.train, data.test) for t in stored(split))
    return 4 * size <= torch.cuda.mem_get_info(device)[0]


class EpochPlan:
    """The batches of one epoch as tables: a permutation and a coin per image drawn from (seed,
    epoch), or the split in order without flips, cut into batches of `batch_size` (the global batch).

    Every batch has the same shape (one compiled graph; CUDA graphs need it): the last one is padded
    with images of weight 0. With `world` processes, rank `rank` takes columns
    [rank * b, (rank + 1) * b) of every batch, b = batch_size / world, so that the batches, and
    therefore the result, do not depend on the number of processes.

    rows [batches, b] (image indices), flips [batches, b] (bool), weights [batches, b]:
    1 / (images in the global batch) for an image, 0 for padding, so that the weighted sum of the
    losses over all ranks is the mean over the batch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        hflip: bool,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)  # one stream per (seed, epoch)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        flips = torch.rand(n, generator=g) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
        batches = -(-n // batch_size)
        pad = batches * batch_size - n
        real = (torch.arange(batches * batch_size) < n).view(batches, batch_size)
        columns = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self.rows = torch.cat([order, order[torch.arange(pad) % n]]).view(batches, batch_size)[:, columns]
        self.flips = torch.cat([flips, torch.zeros(pad, dtype=torch.bool)]).view(batches, batch_size)[:, columns]
        self.weights = (real / real.sum(1, keepdim=True))[:, columns]

    def __len__(self) -> int:
        return len(self.rows)


class Flippable(Dataset):
    """A dataset indexed by (index, flip): the image of `index`, mirrored left-right if `flip`."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, bool]):
        image, label = self.base[key[0]]
        return (image.flip(-1) if key[1] else image), label


class HostSplit:
    """A split made into batches on the CPU by a DataLoader (torchvision's transforms per image, in
    `num_workers` processes) and copied to `device`: the seed's way."""

    def __init__(self, dataset: Dataset, device: torch.device, num_workers: int = 0):
        self.dataset, self.device, self.num_workers = dataset, device, num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, plan: EpochPlan, numbers: range):
        """(x [b, C, H, W] float32, y [b], weight [b]) on the device for the plan's batches `numbers`."""
        keys = [list(zip(plan.rows[i].tolist(), plan.flips[i].tolist())) for i in numbers]
        pinned = self.device.type == "cuda"  # page-locked batches copy to the GPU without a wait
        loader = DataLoader(
            Flippable(self.dataset), batch_sampler=keys, num_workers=self.num_workers, pin_memory=pinned
        )
        weights = plan.weights.to(self.device)
        for i, (x, y) in zip(numbers, loader):
            yield x.to(self.device, non_blocking=pinned), y.to(self.device, non_blocking=pinned), weights[i]


class ResidentSplit:
    """A split held whole in device memory as stored (CIFAR-10's training set: 150 MB of uint8) and
    made into batches there: a gather, the flip, ToTensor's / 255 and Normalize, as torchvision
    computes them, with no CPU work per image and no copy from the host per batch."""

    def __init__(self, dataset: Dataset, device: torch.device, mean=None, std=None):
        pixels, labels = stored(dataset)
        self.pixels = pixels.to(device).contiguous()  # [N, H, W, C]
        self.labels = labels.to(device)
        self.device = device
        self.mean, self.std = (
            (None, None) if mean is None else (torch.tensor(mean, device=device), torch.tensor(std, device=device))
        )

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Images `rows` [b], mirrored where `flips` [b]: [b, C, H, W] float32, channels-last."""
        x = self.pixels[rows]  # [b, H, W, C]
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(2), x)  # W is dim 2
        if x.dtype == torch.uint8:
            x = x.float().div(255)  # ToTensor
        if self.mean is not None:
            x = x.sub(self.mean).div(self.std)  # Normalize, over C (the last dim)
        return x.permute(0, 3, 1, 2)

    def batches(self, plan: EpochPlan, numbers: range):
        """(x [b, C, H, W] float32, y [b], weight [b]) on the device for the plan's batches `numbers`."""
        rows, flips, weights = (t.to(self.device) for t in (plan.rows, plan.flips, plan.weights))
        for i in numbers:
            yield self.batch(rows[i], flips[i]), self.labels[rows[i]], weights[i]


def splits(
    data: ImageData, device: torch.device, *, resident: bool, num_workers: int = 0
) -> dict[str, HostSplit | ResidentSplit]:
    """The "train" and "test" splits of `data`, held on `device` if `resident`, else behind a DataLoader."""
    pairs = (("train", data.train), ("test", data.test))
    if resident:
        return {name: ResidentSplit(dataset, device, data.mean, data.std) for name, dataset in pairs}
    return {name: HostSplit(dataset, device, num_workers) for name, dataset in pairs}
