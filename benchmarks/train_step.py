"""Training steps per second of every method, and each one's cost relative to plain MTL.

Every variant runs the real training step (``roaming.train.Trainer.step``) on the same synthetic
batch in one process, so the printed ratios compare like with like on this machine: CelebA's
ResNet-18 with its 8 task groups, or NYUv2's SegNet with its 15 paper tasks.

    python benchmarks/train_step.py                      # CPU, CelebA, small width
    python benchmarks/train_step.py --device cuda --width 1 --batch-size 256
    python benchmarks/train_step.py --dataset nyuv2 --batch-size 2 --height 288 --width-px 384
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from roaming.config import RunConfig, TrainConfig, resolve
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
from roaming.data.dense import NYUV2_CLASSES
from roaming.tasks import TaskSet
from roaming.tasks.attributes import celeba_tasks
from roaming.tasks.dense import dense_tasks
from roaming.train import Trainer

VARIANTS = {
    "mtl": {"method": "mtl", "task_steps": None},
    "gradnorm": {"method": "gradnorm", "task_steps": None},
    "mgda": {"method": "mgda", "task_steps": None},
    "se per_task": {"method": "se", "task_steps": "per_task"},
    "mr per_task": {"method": "mr", "task_steps": "per_task"},
    "mr joint": {"method": "mr", "task_steps": "joint"},
    "mr fused": {"method": "mr", "task_steps": "fused"},
}


def config(method: str, task_steps: str | None, args: argparse.Namespace) -> RunConfig:
    """A resolved training configuration for one variant."""
    roams = method == "mr"
    request = TrainConfig(
        data=Path("benchmark.h5"),
        method=method,
        out=Path("benchmark"),
        sharing=0.8 if roams else None,
        update_interval=0.1 if roams and args.dataset == "celeba" else 1 if roams else None,
        task_steps=task_steps,
        epochs=1,
        batch_size=args.batch_size,
        lr=1e-4,
        width=args.width,
    )
    return resolve(request, args.dataset)


def synthetic(args: argparse.Namespace) -> tuple[TaskSet, dict[str, torch.Tensor]]:
    """The task set and one random batch of ``args.dataset``."""
    generator = torch.Generator().manual_seed(0)
    b = args.batch_size
    if args.dataset == "celeba":
        groups = {
            "attribute_names": list(ATTRIBUTE_NAMES),
            "task_groups": [list(g) for g in TASK_GROUPS],
        }
        batch = {
            "images": torch.rand(b, 3, 78, 64, generator=generator),
            "attributes": torch.randint(0, 2, (b, 40), generator=generator),
        }
        return celeba_tasks(groups, None, "paper"), batch
    h, w = args.height, args.width_px
    normals = torch.randn(b, h, w, 3, generator=generator)
    batch = {
        "images": torch.rand(b, 3, h, w, generator=generator),
        "seg": torch.randint(-1, len(NYUV2_CLASSES), (b, h, w), generator=generator),
        "depth": torch.rand(b, h, w, generator=generator),
        "normals": normals / normals.norm(dim=-1, keepdim=True),
    }
    attrs = {"class_names": list(NYUV2_CLASSES), "dataset": "nyuv2"}
    return dense_tasks(attrs, None, "paper"), batch


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
    parser.add_argument("--dataset", choices=["celeba", "nyuv2"], default="celeba")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=0.25, help="channel width multiplier")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--height", type=int, default=64, help="nyuv2 image height")
    parser.add_argument("--width-px", type=int, default=128, help="nyuv2 image width")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    tasks, batch = synthetic(args)
    batch = {key: value.to(device) for key, value in batch.items()}
    print(
        f"{args.dataset} on {device}, width {args.width}, batch {args.batch_size}, "
        f"{len(tasks.names)} tasks, {args.steps} steps"
    )
    rates = {}
    for name, variant in VARIANTS.items():
        trainer = Trainer(config(variant["method"], variant["task_steps"], args), tasks, device)
        rates[name] = steps_per_second(trainer, batch, args.steps, device)
        print(f"{name:12s} {rates[name]:8.2f} steps/s")
    for name, rate in rates.items():
        print(f"{name:12s} costs {rates['mtl'] / rate:5.2f}x an MTL step")
    print(f"mr joint is {rates['mr joint'] / rates['mr per_task']:.2f}x as fast as mr per_task")
    print(f"mr fused is {rates['mr fused'] / rates['mr joint']:.2f}x as fast as mr joint")


if __name__ == "__main__":
    main()
