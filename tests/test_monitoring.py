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


NAN = float("nan")


def test_drift_alarm_nan_scores_raise():
    alarm = monitoring.DriftAlarm(torch.linspace(0.9, 1.0, 100), window=5)
    with pytest.raises(ValueError, match="NaN"):
        alarm.update(torch.full((5,), NAN))
    assert alarm.z_score() == 0.0


@pytest.mark.parametrize(
    "reference, window, z_threshold",
    [(torch.tensor([1.0, NAN, 0.5]), 5, 5.0), (torch.linspace(0, 1, 10), 5, NAN), (torch.linspace(0, 1, 10), 5, -1.0)],
)
def test_drift_alarm_rejects_bad_parameters(reference, window, z_threshold):
    with pytest.raises(ValueError):
        monitoring.DriftAlarm(reference, window=window, z_threshold=z_threshold)


def test_drift_alarm_rejects_float_window():
    with pytest.raises(TypeError, match="window"):
        monitoring.DriftAlarm(torch.ones(10), window=NAN)


@pytest.mark.parametrize("inside, outside", [([NAN, NAN], [0.1, 0.2]), ([0.5], [float("inf")])])
def test_auroc_rejects_non_finite(inside, outside):
    with pytest.raises(ValueError, match="NaN or infinite"):
        monitoring.auroc(torch.tensor(inside), torch.tensor(outside))


def test_mahalanobis_rejects_nan_features():
    features = torch.randn(10, 3)
    features[2, 1] = NAN
    with pytest.raises(ValueError, match="features"):
        monitoring.MahalanobisScorer.fit(features, torch.arange(10) % 2)


@pytest.mark.parametrize("ridge", [-1e-3, NAN])
def test_mahalanobis_rejects_bad_ridge(ridge):
    with pytest.raises(ValueError, match="ridge"):
        monitoring.MahalanobisScorer.fit(torch.randn(10, 3), torch.arange(10) % 2, ridge=ridge)


@pytest.mark.parametrize("temperature", [NAN, float("inf"), 0.0])
def test_energy_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        monitoring.energy_score(torch.randn(4, 10), temperature=temperature)
