"""OOD scores, AUROC against scikit-learn, Fashion-MNIST and the drift alarm."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import data, monitoring, zoo


def test_auroc_matches_sklearn():
    generator = torch.Generator().manual_seed(0)
    inside = torch.randn(300, generator=generator) + 1.0
    outside = torch.randn(200, generator=generator).round()
    labels = [1] * 300 + [0] * 200
    expected = roc_auc_score(labels, torch.cat([inside, outside]).numpy())
    assert monitoring.auroc(inside, outside) == pytest.approx(expected, abs=1e-12)


def test_auroc_extremes():
    assert monitoring.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert monitoring.auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5


def test_fashion_mnist_loads():
    images, labels = monitoring.fashion_mnist_tensors(train=False)
    assert images.shape == (10000, 28, 28)
    assert images.dtype == torch.uint8
    assert labels.bincount().tolist() == [1000] * 10


@pytest.fixture(scope="module")
def scores():
    model = zoo.trained_model("mlp")
    mnist, _ = data.mnist_tensors(train=False)
    fashion, _ = monitoring.fashion_mnist_tensors(train=False)
    return (
        monitoring.logits_of(model, data.normalize_images(mnist[:2000])),
        monitoring.logits_of(model, data.normalize_images(fashion[:2000])),
    )


def test_msp_separates_fashion(scores):
    inside, outside = scores
    assert monitoring.auroc(monitoring.msp_score(inside), monitoring.msp_score(outside)) > 0.8


def test_energy_separates_fashion(scores):
    inside, outside = scores
    assert monitoring.auroc(monitoring.energy_score(inside), monitoring.energy_score(outside)) > 0.8


def test_mahalanobis_beats_msp():
    model = zoo.trained_model("mlp")
    train, train_labels = data.mnist_tensors(train=True)
    mnist, _ = data.mnist_tensors(train=False)
    fashion, _ = monitoring.fashion_mnist_tensors(train=False)
    features = monitoring.layer_inputs(model, model.hidden[1], data.normalize_images(train[:5000]))
    scorer = monitoring.MahalanobisScorer.fit(features, train_labels[:5000])
    inside = monitoring.layer_inputs(model, model.hidden[1], data.normalize_images(mnist[:2000]))
    outside = monitoring.layer_inputs(model, model.hidden[1], data.normalize_images(fashion[:2000]))
    mahalanobis = monitoring.auroc(scorer.score(inside), scorer.score(outside))
    msp = monitoring.auroc(
        monitoring.msp_score(monitoring.logits_of(model, data.normalize_images(mnist[:2000]))),
        monitoring.msp_score(monitoring.logits_of(model, data.normalize_images(fashion[:2000]))),
    )
    assert mahalanobis > msp


def test_drift_alarm_quiet_then_fires(scores):
    inside, outside = scores
    msp_in, msp_out = monitoring.msp_score(inside), monitoring.msp_score(outside)
    alarm = monitoring.DriftAlarm(msp_in[:1000], window=200)
    quiet = [alarm.update(msp_in[i : i + 50]) for i in range(1000, 2000, 50)]
    fired = [alarm.update(msp_out[i : i + 50]) for i in range(0, 400, 50)]
    assert not any(quiet)
    assert any(fired)


def test_drift_alarm_rejects_tiny_window():
    with pytest.raises(ValueError, match="window"):
        monitoring.DriftAlarm(torch.ones(10), window=1)
