"""MNIST: verified download from a mirror or torchvision's hosts, and loaders.

Two loaders feed the same tensors to a model:

* ``classic_loaders``: ``torchvision.datasets.MNIST`` with ``ToTensor`` and
  ``Normalize`` inside a ``DataLoader``, as the classic tutorial does it.
  Every sample goes through Python and PIL on every epoch.
* ``device_loaders``: the whole data set is moved to the device once,
  normalised once, and batches are slices taken with shuffled indices.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets.utils import calculate_md5

MIRROR_ENV = "MNIST_MIRROR"
DATA_DIR_ENV = "BOOK_DATA_DIR"

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

_DOWNLOAD_TIMEOUT_S = 60


class ChecksumError(RuntimeError):
    """An archive whose MD5 sum differs from the one torchvision expects."""


def default_data_root() -> Path:
    """Return the data folder: ``$BOOK_DATA_DIR``, else ``data/`` in the checkout.

    Outside a checkout (an installed wheel, for example) the fallback is
    ``~/.cache/mnist-book``.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / "data"
    return Path.home() / ".cache" / "mnist-book"


def _mirror_sources(mirror: str | None) -> list[str]:
    """Return base URLs or folders to try, the configured mirror first."""
    sources = []
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if mirror:
        sources.append(mirror)
    sources.extend(datasets.MNIST.mirrors)
    return sources


def _copy_from_source(source: str, filename: str, destination: Path) -> str:
    """Copy ``filename`` from a folder or URL ``source`` to ``destination``.

    Returns the full location the file came from. Raises ``OSError`` (which
    includes ``urllib.error.URLError``) when the source cannot provide it.
    """
    if "://" not in source:
        location = Path(source).expanduser() / filename
        shutil.copyfile(location, destination)
        return str(location)

    location = source.rstrip("/") + "/" + filename
    request = urllib.request.Request(location, headers={"User-Agent": "mnist-book"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        with open(destination, "wb") as out:
            shutil.copyfileobj(response, out)
    return location


def _check_md5(path: Path, expected: str, origin: str) -> None:
    actual = calculate_md5(str(path))
    if actual != expected:
        raise ChecksumError(
            f"{origin}: MD5 is {actual}, expected {expected}. The archive is "
            "corrupted or incomplete; delete it (or fix the mirror) and run again."
        )


def _fetch_archive(raw: Path, filename: str, md5: str, sources: list[str]) -> None:
    target = raw / filename
    if target.exists():
        _check_md5(target, md5, str(target))
        return

    failures = []
    for source in sources:
        fd, tmp_name = tempfile.mkstemp(dir=raw, prefix=filename, suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            origin = _copy_from_source(source, filename, tmp)
            _check_md5(tmp, md5, origin)
        except OSError as error:
            failures.append(f"{source}: {error}")
            tmp.unlink(missing_ok=True)
            continue
        except ChecksumError:
            tmp.unlink(missing_ok=True)
            raise
        # mkstemp creates the file readable by its owner only.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return

    tried = "\n  ".join(failures)
    raise RuntimeError(
        f"could not fetch {filename}; tried:\n  {tried}\n"
        f"Set {MIRROR_ENV} to a folder or URL that holds the four MNIST "
        "archives (for example a copy of MNIST/raw) and run again."
    )


def _extract(archive: Path) -> None:
    target = archive.with_suffix("")
    if target.exists():
        return
    tmp = target.with_name(target.name + ".part")
    with gzip.open(archive, "rb") as source, open(tmp, "wb") as out:
        shutil.copyfileobj(source, out)
    os.replace(tmp, target)


def fetch_mnist(root: str | Path | None = None, mirror: str | None = None) -> Path:
    """Place verified MNIST archives in ``root/MNIST/raw`` and extract them.

    Sources are tried in order: ``mirror`` (or ``$MNIST_MIRROR``), a local
    folder or URL holding the four archives, then torchvision's own hosts.
    Each archive is checked against the MD5 sum in
    ``torchvision.datasets.MNIST.resources``; a mismatch raises
    ``ChecksumError`` naming the file, and nothing is extracted from it.
    Returns ``root``.
    """
    root = Path(root) if root is not None else default_data_root()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    sources = _mirror_sources(mirror)
    for url, md5 in datasets.MNIST.resources:
        filename = url.rsplit("/", 1)[-1]
        _fetch_archive(raw, filename, md5, sources)
    for url, _ in datasets.MNIST.resources:
        _extract(raw / url.rsplit("/", 1)[-1])
    return root


def mnist_dataset(train: bool, root: str | Path | None = None, transform=None) -> datasets.MNIST:
    """Return ``torchvision.datasets.MNIST`` after ``fetch_mnist`` verified it."""
    root = fetch_mnist(root)
    return datasets.MNIST(str(root), train=train, transform=transform, download=False)


def mnist_tensors(train: bool, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return MNIST images as uint8 ``[N, 28, 28]`` and labels as int64 ``[N]``."""
    dataset = mnist_dataset(train, root)
    return dataset.data, dataset.targets.long()


def classic_transform() -> transforms.Compose:
    """Return the tutorial's per-sample transform: ``ToTensor`` then ``Normalize``."""
    return transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )


def classic_loaders(
    batch_size: int = 64,
    test_batch_size: int = 1000,
    root: str | Path | None = None,
    seed: int = 0,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) ``DataLoader``s with per-sample transforms.

    The training loader shuffles with its own seeded generator; the test
    loader does not shuffle, because the order cannot change accuracy.
    """
    _check_batch_size(batch_size, "batch_size")
    _check_batch_size(test_batch_size, "test_batch_size")
    transform = classic_transform()
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        mnist_dataset(True, root, transform),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    test = DataLoader(
        mnist_dataset(False, root, transform),
        batch_size=test_batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    return train, test


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Scale uint8 images ``[N, 28, 28]`` to normalised float ``[N, 1, 28, 28]``."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}; pass the raw MNIST tensors")
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


class DeviceLoader:
    """Batches from tensors that already sit on the device.

    Each epoch draws one permutation from a seeded generator and slices it
    into batches, so there is no per-sample Python work. The generator state
    is part of ``state_dict`` so that a resumed run sees the same batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ):
        _check_batch_size(batch_size, "batch_size")
        if len(labels) == 0:
            raise ValueError("DeviceLoader needs at least one sample, got empty tensors")
        if len(images) != len(labels):
            raise ValueError(
                f"images and labels differ in length ({len(images)} vs {len(labels)})"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def dataset_size(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        if self.drop_last:
            return self.dataset_size // self.batch_size
        return -(-self.dataset_size // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.dataset_size
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
        else:
            order = None
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = min(start + self.batch_size, n)
            if order is None:
                yield self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                yield self.images[index], self.labels[index]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" not in state:
            raise ValueError("loader state has no 'generator' entry; pass a dict from state_dict()")
        self.generator.set_state(state["generator"])


def device_loaders(
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    test_batch_size: int = 2000,
    root: str | Path | None = None,
    seed: int = 0,
) -> tuple[DeviceLoader, DeviceLoader]:
    """Return (train, test) ``DeviceLoader``s over all of MNIST on ``device``."""
    train_images, train_labels = mnist_tensors(True, root)
    test_images, test_labels = mnist_tensors(False, root)
    train = DeviceLoader(
        normalize_images(train_images).to(device),
        train_labels.to(device),
        batch_size,
        shuffle=True,
        seed=seed,
    )
    test = DeviceLoader(
        normalize_images(test_images).to(device),
        test_labels.to(device),
        test_batch_size,
    )
    return train, test


def _check_batch_size(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


if __name__ == "__main__":
    print(f"MNIST ready in {fetch_mnist()}")
