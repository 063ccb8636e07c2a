"""Compare the classic DataLoader pipeline with the device-resident one.

Both train the same 784-512-256-10 MLP in one process on one device:
* classic: DataLoader + ToTensor/Normalize, batch 64, Adam lr 1e-3;
* resident: whole set on the device, batch 512, Adam with OneCycle (peak 4e-3).
Each runs until 98% test accuracy (or its epoch cap). Prints a table and the
ratios of throughput and of time to 98%; with --json, also writes the figures.

Usage: python benchmarks/pipeline_speed.py [--device auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from helpers import data, models, training
from helpers.device import describe_device, pick_device, seed_everything

TARGET = 0.98


def run_classic(device, max_epochs):
    seed_everything(0)
    train, test = data.classic_loaders(batch_size=64)
    return training.fit(
        models.MLP(), train, test, max_epochs, lr=1e-3, device=device,
        stop_at_accuracy=TARGET, progress=False, log=None,
    )


def run_resident(device, max_epochs, epochs=4, batch_size=512, max_lr=4e-3):
    seed_everything(0)
    train, test = data.device_loaders(device, batch_size=batch_size)
    model = models.MLP().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=len(train) * epochs, pct_start=0.25
    )
    return training.fit(
        model, train, test, min(epochs, max_epochs), optimizer=optimizer, scheduler=scheduler,
        device=device, stop_at_accuracy=TARGET, progress=False, log=None,
    )


def summarize(name, history):
    # The first epoch includes warm-up (allocations, caches), so report medians.
    return {
        "pipeline": name,
        "epochs_run": len(history),
        "median_samples_per_s": statistics.median(history.column("samples_per_s")),
        "median_epoch_s": statistics.median(history.column("seconds")),
        "epochs_to_98": history.epochs_to_accuracy(TARGET),
        "seconds_to_98": history.time_to_accuracy(TARGET),
        "final_test_acc": history.last.test_acc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--max-epochs", type=int, default=15, help="epoch cap for each pipeline")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()

    device = pick_device(args.device)
    data.fetch_mnist()
    print(f"device: {describe_device(device)}; torch {torch.__version__}; {platform.processor() or platform.machine()}")
    # Warm-up so that neither pipeline pays for first-use costs alone.
    run_resident(device, 1, epochs=1)

    rows = [
        summarize("classic DataLoader", run_classic(device, args.max_epochs)),
        summarize("device-resident", run_resident(device, args.max_epochs)),
    ]
    print(f"{'pipeline':20} {'samples/s':>10} {'epoch s':>8} {'epochs→98%':>11} {'s→98%':>7} {'final acc':>9}")
    for row in rows:
        seconds = f"{row['seconds_to_98']:.1f}" if row["seconds_to_98"] else "n/a"
        print(
            f"{row['pipeline']:20} {row['median_samples_per_s']:>10,.0f} {row['median_epoch_s']:>8.2f} "
            f"{str(row['epochs_to_98']):>11} {seconds:>7} {row['final_test_acc']:>9.2%}"
        )
    classic, resident = rows
    throughput_ratio = resident["median_samples_per_s"] / classic["median_samples_per_s"]
    print(f"throughput ratio (resident / classic): {throughput_ratio:.1f}x")
    if classic["seconds_to_98"] and resident["seconds_to_98"]:
        print(f"time-to-98% ratio (classic / resident): {classic['seconds_to_98'] / resident['seconds_to_98']:.1f}x")
    else:
        print("time-to-98% ratio: n/a (a pipeline did not reach 98% within its epoch cap)")

    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": describe_device(device), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
