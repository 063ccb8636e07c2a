"""FGSM/PGD against the Adversarial Robustness Toolbox, and adversarial training."""

import numpy as np
import pytest
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from torch import nn

from helpers import attacks, data, zoo


@pytest.fixture(scope="module")
def pixel_mlp():
    return attacks.PixelInput(zoo.trained_model("mlp")).eval()


@pytest.fixture(scope="module")
def test_batch():
    images, labels = data.mnist_tensors(train=False)
    return attacks.pixel_images(images[:128]), labels[:128]


def art_classifier(model):
    return PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="cpu",
    )


def test_fgsm_matches_art(pixel_mlp, test_batch):
    x, y = test_batch
    ours = attacks.fgsm(pixel_mlp, x, y, eps=0.1).numpy()
    art = FastGradientMethod(art_classifier(pixel_mlp), eps=0.1).generate(x.numpy(), y=y.numpy())
    mismatched = np.abs(ours - art) > 1e-5
    # A pixel may differ only where the gradient is exactly zero: ART's sign
    # of 0 is 0 as well, so at most a handful of float ties are allowed.
    assert mismatched.mean() < 1e-3, mismatched.mean()


def test_pgd_matches_art_without_random_start(pixel_mlp, test_batch):
    x, y = test_batch
    ours = attacks.pgd(pixel_mlp, x, y, eps=0.1, steps=10, step_size=0.01, random_start=False).numpy()
    art = ProjectedGradientDescent(
        art_classifier(pixel_mlp), eps=0.1, eps_step=0.01, max_iter=10, num_random_init=0, verbose=False,
    ).generate(x.numpy(), y=y.numpy())
    assert np.abs(ours - art).max() <= 0.1 + 1e-5
    assert (np.abs(ours - art) > 1e-4).mean() < 0.01


def test_pgd_stays_in_eps_ball(pixel_mlp, test_batch):
    x, y = test_batch
    x_adv = attacks.pgd(pixel_mlp, x, y, eps=0.05, steps=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0.0
    assert x_adv.max() <= 1.0


def test_pgd_beats_fgsm_on_undefended_mlp(pixel_mlp, test_batch):
    x, y = test_batch
    fgsm_acc = attacks.robust_accuracy(pixel_mlp, x, y, 0.1, "fgsm")
    pgd_acc = attacks.robust_accuracy(pixel_mlp, x, y, 0.1, "pgd", steps=20)
    assert pgd_acc <= fgsm_acc
    assert pgd_acc < 0.5


def test_attack_rejects_bad_eps(pixel_mlp, test_batch):
    x, y = test_batch
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(pixel_mlp, x, y, eps=25)


def test_adversarial_training_beats_floor_on_subset():
    recipe = attacks.AdversarialRecipe(epochs=2, train_samples=6000, batch_size=128)
    model = attacks.train_adversarial_mlp("cpu", recipe)
    images, labels = data.mnist_tensors(train=False)
    x, y = attacks.pixel_images(images[:300]), labels[:300]
    undefended = attacks.PixelInput(zoo.trained_model("mlp")).eval()
    robust_acc = attacks.robust_accuracy(model, x, y, 0.1, "pgd", steps=20)
    undefended_acc = attacks.robust_accuracy(undefended, x, y, 0.1, "pgd", steps=20)
    assert attacks.robust_accuracy(model, x, y, 0.0) >= 0.85
    assert robust_acc >= 0.45, robust_acc
    assert robust_acc >= undefended_acc + 0.2


@pytest.mark.parametrize("step_size", [float("nan"), -0.01, 0.0])
def test_pgd_rejects_bad_step_size(pixel_mlp, test_batch, step_size):
    x, y = test_batch
    with pytest.raises(ValueError, match="step_size"):
        attacks.pgd(pixel_mlp, x[:2], y[:2], 0.1, steps=2, step_size=step_size)


def test_fgsm_rejects_label_out_of_range(pixel_mlp, test_batch):
    x, _ = test_batch
    with pytest.raises(ValueError, match="class indices"):
        attacks.fgsm(pixel_mlp, x[:1], torch.tensor([11]), eps=0.1)


def test_attack_by_name_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        attacks.attack_by_name("pgd", steps=0)


@pytest.mark.parametrize("changes", [{"eps": -1.0}, {"train_steps": 0}, {"batch_size": 0}, {"max_lr": float("nan")}])
def test_recipe_rejects_bad_values(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        attacks.AdversarialRecipe(**changes)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_robust_accuracy_rejects_bad_batch_size(pixel_mlp, test_batch, batch_size):
    x, y = test_batch
    with pytest.raises(ValueError, match="batch_size"):
        attacks.robust_accuracy(pixel_mlp, x[:4], y[:4], 0.0, batch_size=batch_size)


def test_robust_accuracy_rejects_empty(pixel_mlp, test_batch):
    x, y = test_batch
    with pytest.raises(ValueError, match="at least one image"):
        attacks.robust_accuracy(pixel_mlp, x[:0], y[:0], 0.0)
