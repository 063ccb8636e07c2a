import pytest
import torch

from helpers import data, models, training
from helpers.device import seed_everything


@pytest.fixture(scope="module")
def small_mnist(mnist_root):
    """Return (train, test) tensors: 4096 training and 1000 test digits."""
    train_images, train_labels = data.mnist_tensors(True, mnist_root)
    test_images, test_labels = data.mnist_tensors(False, mnist_root)
    return (
        (data.normalize_images(train_images[:4096]), train_labels[:4096]),
        (data.normalize_images(test_images[:1000]), test_labels[:1000]),
    )


def make_loaders(small_mnist, seed=0):
    (train_x, train_y), (test_x, test_y) = small_mnist
    return (
        data.DeviceLoader(train_x, train_y, 256, shuffle=True, seed=seed),
        data.DeviceLoader(test_x, test_y, 1000),
    )


def train_small(small_mnist, epochs, checkpoint=None, seed=0):
    seed_everything(seed)
    model = models.MLP()
    train, test = make_loaders(small_mnist, seed)
    history = training.fit(model, train, test, epochs, lr=1e-3, checkpoint=checkpoint, log=None)
    return model, history


def assert_same_weights(first, second):
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_seeded_runs_identical(small_mnist):
    first, first_history = train_small(small_mnist, 1)
    second, second_history = train_small(small_mnist, 1)
    assert_same_weights(first, second)
    assert first_history.last.test_acc == second_history.last.test_acc


def test_other_seed_differs(small_mnist):
    first, _ = train_small(small_mnist, 1, seed=0)
    second, _ = train_small(small_mnist, 1, seed=1)
    assert not torch.equal(first.output.weight, second.output.weight)


def test_resume_matches_uninterrupted(small_mnist, tmp_path):
    uninterrupted, full_history = train_small(small_mnist, 3)

    checkpoint = tmp_path / "run.pt"
    train_small(small_mnist, 1, checkpoint=checkpoint)
    # A new process would start here: fresh model, optimizer and loaders,
    # and a global RNG that has moved on.
    torch.manual_seed(12345)
    resumed, resumed_history = train_small(small_mnist, 3, checkpoint=checkpoint, seed=0)

    assert_same_weights(uninterrupted, resumed)
    assert len(resumed_history) == 3
    assert resumed_history.column("test_acc") == full_history.column("test_acc")


def test_checkpoint_write_failure_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(path, {"epoch": 1})

    def failing_save(state, file):
        with open(file, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()

    assert training.load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_history_time_to_accuracy():
    rows = [
        training.EpochRecord(epoch, 0.1, 0.9, 0.1, acc, 2.0, 100.0)
        for epoch, acc in [(1, 0.95), (2, 0.981), (3, 0.985)]
    ]
    history = training.History(rows)
    assert history.time_to_accuracy(0.98) == pytest.approx(4.0)
    assert history.epochs_to_accuracy(0.98) == 2
    assert history.time_to_accuracy(0.99) is None


def test_stop_at_accuracy(small_mnist):
    seed_everything(0)
    train, test = make_loaders(small_mnist)
    history = training.fit(models.MLP(), train, test, 5, lr=1e-3, stop_at_accuracy=0.5, log=None)
    assert len(history) == 1


def test_fit_rejects_zero_epochs(small_mnist):
    train, test = make_loaders(small_mnist)
    with pytest.raises(ValueError, match="epochs"):
        training.fit(models.MLP(), train, test, 0)


def test_evaluate_rejects_empty_loader():
    with pytest.raises(ValueError, match="no samples"):
        training.evaluate(models.MLP(), [])


def test_amp_off_on_cpu():
    assert training.amp_dtype("cpu") is None


def test_short_training_beats_floor(mnist_root):
    seed_everything(0)
    train, test = data.device_loaders("cpu", batch_size=512, root=mnist_root)
    model = models.MLP()
    history = training.fit(model, train, test, 1, lr=2e-3, log=None)
    assert history.last.test_acc >= 0.95
    assert history.last.train_loss < 0.5


def test_predict_matches_evaluate(small_mnist):
    model, _ = train_small(small_mnist, 1)
    _, test = make_loaders(small_mnist)
    predictions, targets = training.predict(model, test)
    _, accuracy = training.evaluate(model, test)
    assert (predictions == targets).float().mean().item() == pytest.approx(accuracy)


def test_fit_rejects_empty_training_loader(small_mnist):
    _, test = make_loaders(small_mnist)
    with pytest.raises(ValueError, match="no batches"):
        training.fit(models.MLP(), [], test, 1)


def test_resume_from_other_model_explains(small_mnist, tmp_path):
    checkpoint = tmp_path / "cnn.pt"
    train, test = make_loaders(small_mnist)
    training.save_checkpoint(checkpoint, {"model": models.SmallCNN().state_dict(), "optimizer": {}})
    with pytest.raises(ValueError, match="cannot resume from"):
        training.fit(models.MLP(), train, test, 1, checkpoint=checkpoint, log=None)


def test_save_checkpoint_rejects_non_dict(tmp_path):
    with pytest.raises(TypeError, match="dict"):
        training.save_checkpoint(tmp_path / "x.pt", [1, 2])
