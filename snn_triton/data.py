"""Datasets of the seed experiment and its stand-ins, and loaders whose order is a function of
(seed, epoch), so that a run resumed in the middle of an epoch sees the batches it would have seen.

- ``cifar10``: torchvision's CIFAR10 with the seed's transforms (horizontal flip, ToTensor,
  Normalize with the seed's mean/std); downloaded when missing and online.
- ``fashion-mnist``: torchvision's FashionMNIST (1x28x28), prepared offline from the gzipped idx
  files that ``apt-get install dataset-fashion-mnist`` puts under /usr/share/datasets.
- ``synthetic``: deterministic random images (a noisy prototype per class), any shape.

The random horizontal flip is drawn by the batch sampler with the epoch's shuffle, not inside
the dataset, so it does not depend on worker processes or on where a run was interrupted.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets, transforms

DATASETS = ("cifar10", "fashion-mnist", "synthetic")

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the seed's
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # over the training set
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
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
    return ImageData(train, test, in_channels=3, image_size=32, num_classes=10, hflip=True)


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
        train, test = (datasets.FashionMNIST(root, train=split, transform=tf, download=download)
                       for split in (True, False))
    except (RuntimeError, OSError) as error:
        raise DataUnavailable(
            f"Fashion-MNIST is not under {root} and could not be downloaded ({error}). Install it "
            f"offline with `apt-get install dataset-fashion-mnist` (gzipped idx files in "
            f"{SYSTEM_FASHION_MNIST}), or point --data-dir at a folder with the files, or use --dataset synthetic."
        ) from None
    return ImageData(train, test, in_channels=1, image_size=28, num_classes=10, hflip=True)


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


def synthetic(in_channels: int = 3, image_size: int = 32, num_classes: int = 10,
              sizes: tuple[int, int] = SYNTHETIC_SIZES, seed: int = 0) -> ImageData:
    """Deterministic random images in any shape (CIFAR-10's by default): smoke runs, benchmarks."""
    prototypes = torch.randn((num_classes, in_channels, image_size, image_size),
                             generator=torch.Generator().manual_seed(seed))
    train, test = (SyntheticImages(prototypes, n, seed=seed + 1 + i) for i, n in enumerate(sizes))
    return ImageData(train, test, in_channels, image_size, num_classes, hflip=False)


class Flippable(Dataset):
    """A dataset indexed by (index, flip): the image of `index`, mirrored left-right if `flip`."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, bool]):
        image, label = self.base[key[0]]
        return (image.flip(-1) if key[1] else image), label


class EpochBatches(Sampler):
    """Batches of (index, flip) of one epoch: a permutation and a coin per image drawn from
    (seed, epoch), or the dataset in order without flips; from batch `start`, at most `limit`."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, hflip: bool, seed: int = 0, epoch: int = 0,
                 start: int = 0, limit: int | None = None):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)  # one stream per (seed, epoch)
        self.order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        self.flips = torch.rand(n, generator=g) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
        self.batch_size = batch_size
        total = -(-n // batch_size)
        self.batches = range(start, total if limit is None else min(total, limit))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(self.order[rows].tolist(), self.flips[rows].tolist()))


def loader(data: ImageData, split: str, batch_size: int, *, seed: int = 0, epoch: int = 0, start: int = 0,
           limit: int | None = None, num_workers: int = 0) -> DataLoader:
    """Batches of split "train" (shuffled and flipped per (seed, epoch)) or "test" (in order),
    from batch `start` on, at most `limit` batches in all."""
    train = split == "train"
    dataset = data.train if train else data.test
    batches = EpochBatches(len(dataset), batch_size, shuffle=train, hflip=train and data.hflip, seed=seed,
                           epoch=epoch, start=start, limit=limit)
    return DataLoader(Flippable(dataset), batch_sampler=batches, num_workers=num_workers)
