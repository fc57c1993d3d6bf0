"""snn_triton.data on the datasets' real on-disk formats (tiny copies written here), the synthetic
set, batch orders that depend on (seed, epoch) alone, and batches made on the device that equal
torchvision's."""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
from torchvision import datasets

from snn_triton import data as datalib


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """cifar-10-batches-py as CIFAR-10 ships it (pickled uint8 rows of 3x32x32, channel-major),
    4 images per batch file; torchvision's md5 table is pointed at these files."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 4).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[n, md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return tmp_path


def test_cifar10_loads_the_real_format_with_the_seed_transforms(tiny_cifar10):
    data = datalib.load("cifar10", tiny_cifar10, download=False)
    assert (len(data.train), len(data.test), data.in_channels, data.image_size, data.num_classes) == (20, 4, 3, 32, 10)
    raw = pickle.loads((tiny_cifar10 / "cifar-10-batches-py" / "data_batch_2").read_bytes())
    image, label = data.train[5]  # the second image of the second file
    pixels = torch.tensor(raw["data"][1], dtype=torch.float64).reshape(3, 32, 32) / 255
    mean, std = torch.tensor(datalib.CIFAR10_MEAN).view(3, 1, 1), torch.tensor(datalib.CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(image.double(), (pixels - mean) / std, rtol=1e-6, atol=1e-6)
    assert label == raw["labels"][1]


def test_cifar10_missing_says_what_to_do(tmp_path):
    with pytest.raises(datalib.DataUnavailable, match="--data-dir") as error:
        datalib.load("cifar10", tmp_path, download=False)
    assert "--dataset fashion-mnist" in str(error.value) and "--dataset synthetic" in str(error.value)


def write_idx_gz(path, magic, array):
    """An idx file (big-endian header, then uint8 data), gzipped, as Fashion-MNIST ships."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_fashion_mnist_gz(tmp_path):
    """The four gzipped idx files of Fashion-MNIST (5 training, 3 test images)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "gz"
    folder.mkdir()
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (n, 28, 28)))
        write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, rng.integers(0, 10, n))
    return folder


@pytest.mark.parametrize("where", ["system package", "data dir"])
def test_fashion_mnist_is_prepared_from_gzipped_idx_files(tiny_fashion_mnist_gz, tmp_path, monkeypatch, where):
    root = tmp_path / "root"
    if where == "system package":
        monkeypatch.setattr(datalib, "SYSTEM_FASHION_MNIST", tiny_fashion_mnist_gz)
        root.mkdir()
    else:
        monkeypatch.setattr(datalib, "SYSTEM_FASHION_MNIST", tmp_path / "absent")
        tiny_fashion_mnist_gz.rename(root)
    data = datalib.load("fashion-mnist", root, download=False)
    assert (len(data.train), len(data.test), data.in_channels, data.image_size) == (5, 3, 1, 28)
    raw = gzip.decompress(
        (tiny_fashion_mnist_gz if where == "system package" else root)
        .joinpath("t10k-images-idx3-ubyte.gz")
        .read_bytes()
    )[16:]
    pixels = torch.tensor(np.frombuffer(raw, np.uint8)[784:1568], dtype=torch.float64).view(1, 28, 28) / 255
    image, _ = data.test[1]
    expected = (pixels - datalib.FASHION_MNIST_MEAN[0]) / datalib.FASHION_MNIST_STD[0]
    torch.testing.assert_close(image.double(), expected, rtol=1e-6, atol=1e-6)


def test_fashion_mnist_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(datalib, "SYSTEM_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(datalib.DataUnavailable, match="apt-get install dataset-fashion-mnist"):
        datalib.load("fashion-mnist", tmp_path, download=False)


def test_synthetic_is_deterministic_in_any_shape():
    a, b = datalib.synthetic(2, 12, 5, sizes=(10, 4), seed=3), datalib.synthetic(2, 12, 5, sizes=(10, 4), seed=3)
    assert a.train[7][0].shape == (2, 12, 12) and len(a.test) == 4
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, datalib.synthetic(2, 12, 5, sizes=(10, 4), seed=4).train.images)


def plan(n=50, batch_size=8, **kw) -> datalib.EpochPlan:
    return datalib.EpochPlan(n, batch_size, shuffle=True, hflip=True, **kw)


def keys(p: datalib.EpochPlan) -> list:
    return [list(zip(r.tolist(), f.tolist())) for r, f in zip(p.rows, p.flips)]


def test_epoch_plan_depends_on_seed_and_epoch_only():
    full = keys(plan(seed=1, epoch=2))
    assert full == keys(plan(seed=1, epoch=2))
    assert full != keys(plan(seed=1, epoch=3)) and full != keys(plan(seed=2, epoch=2))
    real = plan(seed=1, epoch=2).weights > 0
    assert sorted(i for b, r in zip(full, real) for (i, _), keep in zip(b, r) if keep) == list(range(50)), (
        "every image once per epoch"
    )
    assert 10 < sum(flip for b in full for _, flip in b) < 40


def test_epoch_plan_pads_the_last_batch_with_zero_weights():
    p = plan(n=50, batch_size=8)
    assert p.rows.shape == p.flips.shape == p.weights.shape == (7, 8), "50 images: 6 full batches and 2 of 8"
    torch.testing.assert_close(p.weights.sum(1), torch.ones(7))
    assert torch.equal(p.weights[:6], torch.full((6, 8), 1 / 8))
    assert torch.equal(p.weights[6], torch.tensor([0.5, 0.5] + [0.0] * 6))
    assert not p.flips[6, 2:].any() and p.rows.max() < 50
    tiny = plan(n=3, batch_size=8)  # padding longer than the split
    assert tiny.rows.shape == (1, 8) and tiny.rows.max() < 3


def test_epoch_plan_shards_every_batch_between_processes():
    whole = plan(n=50, batch_size=8, seed=3, epoch=1)
    shards = [plan(n=50, batch_size=8, seed=3, epoch=1, rank=r, world=4) for r in range(4)]
    for name in ("rows", "flips", "weights"):
        assert torch.equal(torch.cat([getattr(s, name) for s in shards], 1), getattr(whole, name))


def test_host_split_flips_training_images_as_the_plan_says():
    data = datalib.synthetic(1, 8, 3, sizes=(16, 8))
    p = datalib.EpochPlan(16, 16, shuffle=True, hflip=True, seed=0, epoch=1)
    ((x, y, weight),) = list(datalib.HostSplit(data.train, torch.device("cpu")).batches(p, range(1)))
    for row, (i, flip) in enumerate(keys(p)[0]):
        image, label = data.train[i]
        assert torch.equal(x[row], image.flip(-1) if flip else image) and y[row] == label
    assert torch.equal(weight, p.weights[0])
    test = datalib.EpochPlan(8, 8, shuffle=False, hflip=False)
    ((x_test, _, _),) = list(datalib.HostSplit(data.test, torch.device("cpu")).batches(test, range(1)))
    assert torch.equal(x_test, data.test.images), "the test set in order, never flipped"


def batches_of(split, p):
    return [tuple(t.clone() for t in batch) for batch in split.batches(p, range(len(p)))]


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist", "synthetic"])
def test_resident_split_makes_the_batches_of_torchvisions_transforms(
    dataset, tiny_cifar10, tiny_fashion_mnist_gz, monkeypatch
):
    """The same rows and flips give the same tensors: torchvision's ToTensor, Normalize and flip per
    image in a DataLoader, and the gather, flip and normalization on the device."""
    monkeypatch.setattr(datalib, "SYSTEM_FASHION_MNIST", tiny_fashion_mnist_gz)
    root = tiny_cifar10 if dataset == "cifar10" else tiny_fashion_mnist_gz.parent / "fm"
    data = datalib.load(dataset, root, download=False, seed=0)
    cpu = torch.device("cpu")
    host, resident = (datalib.splits(data, cpu, resident=r) for r in (False, True))
    for name in ("train", "test"):
        p = datalib.EpochPlan(len(host[name]), 3, shuffle=True, hflip=name == "train", seed=5)
        assert p.flips.any() == (name == "train")
        for (x, y, w), (x_dev, y_dev, w_dev) in zip(batches_of(host[name], p), batches_of(resident[name], p)):
            assert x_dev.shape == x.shape and x_dev.dtype == torch.float32
            assert torch.equal(x_dev, x) and torch.equal(y_dev, y) and torch.equal(w_dev, w)


def test_fits_on_device_is_off_without_a_gpu():
    assert not datalib.fits_on_device(datalib.synthetic(sizes=(4, 4)), torch.device("cpu"))


def test_cifar10_constants_are_the_seed_notebooks():
    """Literals by design: the seed notebook's transforms.Normalize, which train.py reproduces, not
    statistics of the data."""
    assert datalib.CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert datalib.CIFAR10_STD == (0.2023, 0.1994, 0.2010)


@pytest.mark.skipif(
    not (datalib.SYSTEM_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="the real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_mean_and_std_are_those_of_the_real_training_set():
    """Derived from the 60,000 real training images: mean and population std of pixel / 255."""
    raw = gzip.decompress((datalib.SYSTEM_FASHION_MNIST / "train-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">IIII", raw[:16]) == (2051, 60000, 28, 28)
    counts = np.bincount(np.frombuffer(raw, np.uint8, offset=16), minlength=256).astype(np.float64)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert datalib.FASHION_MNIST_MEAN == (round(mean, 4),) and datalib.FASHION_MNIST_STD == (round(std, 4),)
