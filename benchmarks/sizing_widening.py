"""Compare memory and step-time estimates with measurements while widening the MLP.

Prints one row per width w of the MLP 784-w-(w/2)-10. Each row puts the
estimate (16 bytes per parameter for fp32 Adam, plus saved activations)
next to the tensor accounting and the measured peak: CUDA
max_memory_allocated, or peak RSS growth on CPU. It also puts the step time
next to its FLOP-based lower bound. The mixed-precision and
activation-checkpointing ratios of the same run follow.

    python benchmarks/sizing_widening.py            # CPU defaults
    python benchmarks/sizing_widening.py --batch 1024 --steps 10 --widths 512 2048 8192 16384
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from helpers import memory, sizing, training
from helpers.data import mnist_tensors, normalize_images
from helpers.device import describe_device, pick_device, seed_everything
from helpers.models import MLP


def _batch(images, labels, size, device):
    return normalize_images(images[:size]).to(device), labels[:size].clone().to(device)


def widening(images, labels, widths, steps, device_flops):
    print(f"{'width':>6} {'params':>11} {'est MB':>9} {'acct MB':>9} {'peak MB':>9} "
          f"{'peak/est':>8} {'est ms':>8} {'meas ms':>8}")
    for width in widths:
        hidden = (width, width // 2)
        n_params = sizing.mlp_parameters(hidden)
        estimate = (
            sizing.training_state_bytes(n_params, "fp32", "adam")["total"]
            + sizing.mlp_activation_bytes(len(images), hidden)
        )
        flops = sizing.training_flops_per_sample(sizing.mlp_forward_flops(hidden)) * len(images)
        result = memory.measure_training_step(lambda: MLP(hidden=hidden), images, labels, steps=steps)
        peak = result.peak_bytes if result.peak_bytes is not None else float("nan")
        print(f"{width:>6} {n_params:>11,} {estimate / 1e6:>9.1f} {result.accounted_bytes / 1e6:>9.1f} "
              f"{peak / 1e6:>9.1f} {peak / estimate:>8.2f} "
              f"{1e3 * sizing.compute_seconds(flops, device_flops, 1.0):>8.1f} "
              f"{1e3 * result.seconds_per_step:>8.1f}")
    print(f"peak method: {result.peak_method}")


def mixed_precision(images, labels, steps, device):
    amp = training.amp_dtype(device) or torch.bfloat16
    def build():
        return MLP(hidden=(2048, 1024))

    fp32 = memory.measure_training_step(build, images, labels, steps=steps)
    low = memory.measure_training_step(build, images, labels, steps=steps, autocast_dtype=amp)
    print(f"autocast {amp}: saved activations x{low.activation_bytes / fp32.activation_bytes:.2f}, "
          f"step time x{low.seconds_per_step / fp32.seconds_per_step:.2f} (vs fp32)")


def checkpointing(images, labels, steps, segments=4, depth=16):
    def build():
        return MLP(hidden=(256,) * depth, dropout=0.0)

    def forward(model, x):
        layers = [nn.Flatten()]
        for layer in model.hidden:
            layers += [layer, nn.ReLU()]
        return checkpoint_sequential(nn.Sequential(*layers, model.output), segments, x, use_reentrant=False)

    plain = memory.measure_training_step(build, images, labels, steps=steps)
    checkpointed = memory.measure_training_step(build, images, labels, steps=steps, forward=forward)
    if plain.peak_bytes and checkpointed.peak_bytes:
        print(f"checkpointing ({segments} segments): peak x{checkpointed.peak_bytes / plain.peak_bytes:.2f}, "
              f"step time x{checkpointed.seconds_per_step / plain.seconds_per_step:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192],
                        help="first hidden width of each MLP (the second is half)")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the widening run")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement, after one warm-up")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu; default: the best available")
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or min(args.widths) < 2:
        parser.error("--batch and --steps must be positive and every width at least 2")

    device = pick_device(args.device)
    seed_everything(0)
    images, labels = mnist_tensors(train=True)
    device_flops = memory.matmul_flops_per_second(device)
    print(f"device: {describe_device(device)}, fp32 matmul {device_flops / 1e9:.0f} GFLOP/s")

    batch_images, batch_labels = _batch(images, labels, args.batch, device)
    memory.measure_training_step(lambda: MLP(hidden=(64, 32)), batch_images, batch_labels, steps=1)
    widening(batch_images, batch_labels, args.widths, args.steps, device_flops)
    mixed_precision(*_batch(images, labels, 1024, device), args.steps, device)
    checkpointing(*_batch(images, labels, 4096, device), args.steps)


if __name__ == "__main__":
    main()
