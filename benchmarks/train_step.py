"""Training steps per second of every method, and each one's cost relative to plain MTL.

Every variant runs the real training step (``roaming.train.Trainer.step``) on the same synthetic
CelebA batch in one process, so the printed ratios compare like with like on this machine.

    python benchmarks/train_step.py                      # CPU, small width
    python benchmarks/train_step.py --device cuda --width 1 --batch-size 256
"""

from __future__ import annotations

import argparse
import time

import torch

from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
from roaming.tasks.attributes import celeba_tasks
from roaming.train import Trainer

VARIANTS = {
    "mtl": {"method": "mtl", "task_steps": None},
    "gradnorm": {"method": "gradnorm", "task_steps": None},
    "mgda": {"method": "mgda", "task_steps": None},
    "se per_task": {"method": "se", "task_steps": "per_task"},
    "mr per_task": {"method": "mr", "task_steps": "per_task"},
    "mr joint": {"method": "mr", "task_steps": "joint"},
}


def config(method: str, task_steps: str | None, args: argparse.Namespace) -> dict:
    """A resolved training configuration for one variant."""
    roams = method == "mr"
    return {
        "dataset": "celeba",
        "model": "resnet18",
        "method": method,
        "sharing": 0.8 if roams else None,
        "update_interval": 0.1 if roams else None,
        "update_clock": "epoch_fraction" if roams else None,
        "strategy": "random" if roams else None,
        "update_ratio": 1.0 if roams else None,
        "task_steps": task_steps,
        "epochs": 1,
        "batch_size": args.batch_size,
        "lr": 1e-4,
        "width": args.width,
        "seed": 0,
        "task": None,
        "alpha": 0.5 if method == "gradnorm" else None,
        "task_set": "paper",
        "bn": "batch",
    }


def steps_per_second(trainer: Trainer, batch: dict, steps: int, device: torch.device) -> float:
    """Median-free simple rate after warm-up; synchronises the GPU around the timed loop."""
    for _ in range(3):
        trainer.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.rand(args.batch_size, 3, 78, 64, generator=generator).to(device),
        "attributes": torch.randint(0, 2, (args.batch_size, 40), generator=generator).to(device),
    }
    tasks = celeba_tasks(
        {"attribute_names": list(ATTRIBUTE_NAMES), "task_groups": [list(g) for g in TASK_GROUPS]},
        None,
        "paper",
    )
    print(f"device {device}, width {args.width}, batch {args.batch_size}, {args.steps} steps")
    rates = {}
    for name, variant in VARIANTS.items():
        trainer = Trainer(config(variant["method"], variant["task_steps"], args), tasks, device)
        rates[name] = steps_per_second(trainer, batch, args.steps, device)
        print(f"{name:12s} {rates[name]:8.2f} steps/s")
    for name, rate in rates.items():
        print(f"{name:12s} costs {rates['mtl'] / rate:5.2f}x an MTL step")
    print(f"mr joint is {rates['mr joint'] / rates['mr per_task']:.2f}x as fast as mr per_task")


if __name__ == "__main__":
    main()
