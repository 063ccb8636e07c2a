import shutil

import pytest
import torch
from torchvision import datasets

from helpers import data

ARCHIVES = [url.rsplit("/", 1)[-1] for url, _ in datasets.MNIST.resources]


def copy_archives(source, destination):
    destination.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVES:
        shutil.copyfile(source / name, destination / name)
    return destination


def test_fetch_from_folder_mirror(tmp_path, mirror_folder):
    root = data.fetch_mnist(tmp_path / "root", mirror=str(mirror_folder))
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.glob("*.gz")) == sorted(ARCHIVES)
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 47040016


def test_fetch_from_file_url_mirror(tmp_path, mirror_folder):
    root = data.fetch_mnist(tmp_path / "root", mirror=mirror_folder.as_uri())
    images, labels = data.mnist_tensors(False, root)
    assert len(images) == 10000


def test_corrupted_mirror_archive_rejected(tmp_path, mirror_folder):
    mirror = copy_archives(mirror_folder, tmp_path / "mirror")
    broken = mirror / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(broken.read_bytes())
    payload[100] ^= 0xFF
    broken.write_bytes(bytes(payload))
    root = tmp_path / "root"

    with pytest.raises(data.ChecksumError) as caught:
        data.fetch_mnist(root, mirror=str(mirror))

    message = str(caught.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message
    assert not (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()


def test_corrupted_local_archive_kept_and_named(tmp_path, mirror_folder):
    raw = copy_archives(mirror_folder, tmp_path / "root" / "MNIST" / "raw")
    broken = raw / "train-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:1000])

    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte.gz") as caught:
        data.fetch_mnist(tmp_path / "root", mirror=str(mirror_folder))

    assert "d53e105ee54ea40749a09fcbcd1e9432" in str(caught.value)
    assert broken.stat().st_size == 1000, "the user's file must not be deleted"
    assert not (raw / "train-labels-idx1-ubyte").exists()


def test_label_counts(mnist_root):
    _, train_labels = data.mnist_tensors(True, mnist_root)
    _, test_labels = data.mnist_tensors(False, mnist_root)
    assert torch.bincount(train_labels).tolist() == data.TRAIN_LABEL_COUNTS
    assert torch.bincount(test_labels).tolist() == data.TEST_LABEL_COUNTS


def test_tensor_shapes_and_dtypes(mnist_root):
    images, labels = data.mnist_tensors(True, mnist_root)
    assert images.shape == (60000, 28, 28)
    assert images.dtype == torch.uint8
    assert labels.dtype == torch.int64


def test_normalized_range(mnist_root):
    images, _ = data.mnist_tensors(False, mnist_root)
    normalized = data.normalize_images(images)
    assert normalized.shape == (10000, 1, 28, 28)
    assert normalized.min().item() == pytest.approx(-data.MNIST_MEAN / data.MNIST_STD, abs=1e-5)
    assert normalized.max().item() == pytest.approx((1 - data.MNIST_MEAN) / data.MNIST_STD, abs=1e-5)
    assert abs(normalized.mean().item()) < 0.05


def test_normalize_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        data.normalize_images(torch.zeros(2, 28, 28))


def test_classic_loaders_shapes(mnist_root):
    train, test = data.classic_loaders(batch_size=64, root=mnist_root)
    images, labels = next(iter(train))
    assert len(train) == 938
    assert images.shape == (64, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (64,)


def test_classic_test_loader_not_shuffled(mnist_root):
    _, test = data.classic_loaders(root=mnist_root)
    _, labels = next(iter(test))
    _, all_labels = data.mnist_tensors(False, mnist_root)
    assert torch.equal(labels, all_labels[:1000])


def test_classic_and_device_pixels_match(mnist_root):
    dataset = data.mnist_dataset(False, mnist_root, data.classic_transform())
    images, _ = data.mnist_tensors(False, mnist_root)
    fast = data.normalize_images(images[:3])
    for index in range(3):
        assert torch.allclose(dataset[index][0], fast[index], atol=1e-6)


def test_device_loader_epoch_covers_all_once():
    images = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    labels = torch.arange(10)
    loader = data.DeviceLoader(images, labels, batch_size=4, shuffle=True, seed=1)
    seen = torch.cat([batch_labels for _, batch_labels in loader])
    assert len(loader) == 3
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))


def test_device_loader_drop_last():
    loader = data.DeviceLoader(torch.zeros(10, 1), torch.zeros(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [len(y) for _, y in loader] == [4, 4]


def test_device_loader_seed_repeats():
    images, labels = torch.zeros(100, 1), torch.arange(100)
    first = [y.tolist() for _, y in data.DeviceLoader(images, labels, 10, shuffle=True, seed=3)]
    second = [y.tolist() for _, y in data.DeviceLoader(images, labels, 10, shuffle=True, seed=3)]
    assert first == second


@pytest.mark.parametrize("bad", [0, -1, 2.5, None, True])
def test_device_loader_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        data.DeviceLoader(torch.zeros(4, 1), torch.zeros(4), batch_size=bad)


def test_device_loader_rejects_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        data.DeviceLoader(torch.zeros(4, 1), torch.zeros(3), batch_size=2)


def test_device_loaders_full_mnist(mnist_root):
    train, test = data.device_loaders("cpu", batch_size=512, root=mnist_root)
    images, labels = next(iter(train))
    assert images.shape == (512, 1, 28, 28)
    assert len(train) == 118
    assert test.dataset_size == 10000
