"""Shared fixtures: MNIST comes from $MNIST_MIRROR or the project's data folder."""

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def mnist_root():
    """Return the data root with verified, extracted MNIST."""
    from helpers import data

    return data.fetch_mnist()


@pytest.fixture(scope="session")
def mirror_folder(mnist_root):
    """Return a folder holding the four official MNIST archives."""
    return mnist_root / "MNIST" / "raw"
