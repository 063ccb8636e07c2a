"""Measure the security chapter's figures in one run and print them side by side.

Tables: accuracy against eps for the undefended MLP and CNN (FGSM and PGD-10),
the adversarially trained MLP before/after (clean, FGSM, PGD-20 at eps 0.1),
compression (size, accuracy, latency, white-box and transfer PGD), and OOD
AUROC against Fashion-MNIST. Run from the repository root:

    python benchmarks/security_figures.py --samples 2000

Timings depend on the machine and its load; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from helpers import attacks, compression, data, monitoring, zoo
from helpers.device import describe_device, pick_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="number of MNIST test images to attack")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (compression always runs on CPU)")
    args = parser.parse_args()
    if args.samples < 100:
        parser.error(f"--samples must be at least 100, got {args.samples}")

    seed_everything(0)
    device = pick_device(args.device)
    print(f"device: {describe_device(device)}; samples: {args.samples}")
    pd.set_option("display.width", 160)
    images, labels = data.mnist_tensors(train=False)
    x, y = attacks.pixel_images(images[: args.samples]).to(device), labels[: args.samples].to(device)
    mlp = attacks.PixelInput(zoo.trained_model("mlp", device)).eval()
    cnn = attacks.PixelInput(zoo.trained_model("cnn", device)).eval()

    started = time.perf_counter()
    sweep = attacks.accuracy_vs_epsilon(
        {"MLP": mlp, "CNN": cnn}, x, y, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], steps=10
    )
    print(f"\naccuracy (%) against eps, PGD-10 ({time.perf_counter() - started:.0f} s)")
    print((sweep * 100).round(1).to_string())

    started = time.perf_counter()
    robust = attacks.robust_mlp(device)
    print(f"\nadversarially trained MLP ready in {time.perf_counter() - started:.1f} s; recipe {attacks.ROBUST_MLP_RECIPE}")
    rows = {}
    for name, model in {"MLP": mlp, "MLP + PGD training": robust}.items():
        rows[name] = {
            "clean": attacks.robust_accuracy(model, x, y, 0.0),
            "FGSM eps 0.1": attacks.robust_accuracy(model, x, y, 0.1, "fgsm"),
            "PGD-20 eps 0.1": attacks.robust_accuracy(model, x, y, 0.1, "pgd", steps=20),
        }
    print("accuracy (%) before and after adversarial training")
    print((pd.DataFrame(rows).T * 100).round(1).to_string())

    x_cpu, y_cpu = x.cpu(), y.cpu()
    mlp_cpu, robust_cpu = mlp.cpu(), robust.cpu()
    transfer = {
        id(source): attacks.pgd(source, x_cpu, y_cpu, 0.1, steps=20, generator=torch.Generator().manual_seed(0))
        for source in (mlp_cpu, robust_cpu)
    }
    variants = {
        "MLP fp32": (mlp_cpu, mlp_cpu),
        "MLP int8": (compression.quantize_int8(mlp_cpu), mlp_cpu),
        "MLP pruned 50%": (compression.prune_global(mlp_cpu, 0.5), mlp_cpu),
        "MLP pruned 80%": (compression.prune_global(mlp_cpu, 0.8), mlp_cpu),
        "robust MLP fp32": (robust_cpu, robust_cpu),
        "robust MLP int8": (compression.quantize_int8(robust_cpu), robust_cpu),
    }
    rows = {}
    for name, (model, source) in variants.items():
        quantized = "int8" in name
        rows[name] = {
            "KB": compression.serialized_bytes(model) / 1024,
            "gzip KB": compression.gzipped_bytes(model) / 1024,
            "accuracy": compression.accuracy(model, x_cpu, y_cpu),
            "latency ms (batch 1)": compression.latency_ms(model, x_cpu[:1], repeats=200),
            "latency ms (batch 256)": compression.latency_ms(model, x_cpu[:256], repeats=50),
            "white-box PGD-20": float("nan") if quantized else attacks.robust_accuracy(model, x_cpu, y_cpu, 0.1, "pgd", 20),
            "transfer PGD-20": compression.accuracy(model, transfer[id(source)], y_cpu),
        }
    print("\ncompression (CPU; PGD at eps 0.1; transfer examples come from the fp32 model of the same row family)")
    print(pd.DataFrame(rows).T.round(3).to_string())

    fashion, _ = monitoring.fashion_mnist_tensors(train=False)
    train_images, train_labels = data.mnist_tensors(train=True)
    x_in, x_out = data.normalize_images(images[:5000]), data.normalize_images(fashion[:5000])
    x_fit, y_fit = data.normalize_images(train_images[:10000]), train_labels[:10000]
    table = {}
    for kind in ("mlp", "cnn"):
        model = zoo.trained_model(kind)
        layer = model.hidden[1] if kind == "mlp" else model.classifier[2]
        logits_in, logits_out = monitoring.logits_of(model, x_in), monitoring.logits_of(model, x_out)
        scorer = monitoring.MahalanobisScorer.fit(monitoring.layer_inputs(model, layer, x_fit).flatten(1), y_fit)
        table[kind.upper()] = {
            "MSP": monitoring.auroc(monitoring.msp_score(logits_in), monitoring.msp_score(logits_out)),
            "energy": monitoring.auroc(monitoring.energy_score(logits_in), monitoring.energy_score(logits_out)),
            "Mahalanobis": monitoring.auroc(
                scorer.score(monitoring.layer_inputs(model, layer, x_in).flatten(1)),
                scorer.score(monitoring.layer_inputs(model, layer, x_out).flatten(1)),
            ),
        }
    print("\nOOD AUROC, MNIST test (5000) against Fashion-MNIST test (5000)")
    print(pd.DataFrame(table).round(4).to_string())


if __name__ == "__main__":
    main()
