"""Training steps per second of every method, and each one's cost relative to plain MTL.

Every variant runs the real training step (``roaming.train.Trainer.step``) on the same synthetic
batch in one process, so the printed ratios compare like with like on this machine: CelebA's
ResNet-18 with its 8 task groups, or NYUv2's SegNet with its 15 paper tasks, at sharing ratio 0.8.
Configurations, task sets and batches come from ``roaming.bench``; ``roaming bench`` measures a
whole preset against the authors' step.

    python benchmarks/train_step.py                      # CPU, CelebA, small width
    python benchmarks/train_step.py --device cuda --width 1 --batch-size 256
    python benchmarks/train_step.py --dataset nyuv2 --batch-size 2 --height 288 --width-px 384
    ROAMING_MALLOC_TUNING=0 python benchmarks/train_step.py --width 1 --batch-size 256 \
        --variants "mr joint" "mr fused" --steps 2      # glibc's defaults: the page-fault storm
"""

from __future__ import annotations

import argparse
import math

import torch

from roaming import allocator
from roaming.bench import Budget, Shape, synthetic_split, task_set, timed, trainer_config
from roaming.config import RunConfig
from roaming.train import Trainer

VARIANTS = {
    "mtl": {"method": "mtl"},
    "gradnorm": {"method": "gradnorm"},
    "mgda": {"method": "mgda"},
    "se per_task": {"method": "se", "task_steps": "per_task"},
    "mr per_task": {"method": "mr", "task_steps": "per_task"},
    "mr joint": {"method": "mr", "task_steps": "joint"},
    "mr fused": {"method": "mr", "task_steps": "fused"},
    "mr per_task skip": {"method": "mr", "task_steps": "per_task", "compute": "skip"},
    "mr fused skip": {"method": "mr", "task_steps": "fused", "compute": "skip"},
}


def config(variant: dict, args: argparse.Namespace) -> RunConfig:
    """A resolved training configuration for one variant (through ``roaming.bench``)."""
    protocol = {"epochs": 1, "batch_size": args.batch_size, "width": args.width, "lr": 1e-4}
    return trainer_config(
        args.dataset,
        variant["method"],
        protocol,
        sharing=0.8,
        task_steps=variant.get("task_steps"),
        compute=variant.get("compute", "dense"),
        channels_last="on" if args.channels_last and "compute" not in variant else "auto",
    )


def synthetic(args: argparse.Namespace, device: torch.device) -> tuple[object, dict]:
    """The task set and one random batch of ``args.dataset``."""
    height, width = (78, 64) if args.dataset == "celeba" else (args.height, args.width_px)
    shape = Shape(height, width, args.batch_size, args.batch_size, ())
    split = synthetic_split(args.dataset, shape, device)
    batch = split.batch(torch.arange(args.batch_size, device=device))
    return task_set(args.dataset, "paper", single=False), batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["celeba", "nyuv2"], default="celeba")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=0.25, help="channel width multiplier")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--height", type=int, default=64, help="nyuv2 image height")
    parser.add_argument("--width-px", type=int, default=128, help="nyuv2 image width")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="NHWC for the dense variants (the skipping ones keep auto: `on` is refused for "
        "ResNet-18's skipping on a CPU)",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME"
    )
    args = parser.parse_args()
    tuned = allocator.tune()
    device = torch.device(args.device)
    tasks, batch = synthetic(args, device)
    print(
        f"{args.dataset} on {device}, width {args.width}, batch {args.batch_size}, "
        f"{len(tasks.names)} tasks, 1 warm-up step then {args.steps} steps, malloc tuned: {tuned}"
    )
    rates, every = {}, Budget(min_seconds=math.inf, max_steps=args.steps)
    for name in args.variants:
        trainer = Trainer(config(VARIANTS[name], args), tasks, device)
        trainer.step(batch)
        timing = timed(lambda trainer=trainer: trainer.step(batch), device, every)
        rates[name] = timing.rate
        print(
            f"{name:16s} {timing.rate:8.3f} steps/s ({timing.count} timed) "
            f"{timing.faults:10.0f} minor page faults/step"
        )
        del trainer
    for name, rate in rates.items():
        if "mtl" in rates:
            print(f"{name:16s} costs {rates['mtl'] / rate:5.2f}x an MTL step")
    for faster, slower in (("mr joint", "mr per_task"), ("mr fused", "mr joint")):
        if faster in rates and slower in rates:
            print(f"{faster} is {rates[faster] / rates[slower]:.2f}x as fast as {slower}")


if __name__ == "__main__":
    main()
