"""Scene-understanding task sets for CityScapes and NYUv2: segmentation, depth, normals.

Two task sets over the same prepared data (docs/protocol.md §4):

- ``paper``: one binary sigmoid task per class (BCE over every pixel; ignore pixels count as
  negatives, as the reference), plus depth (and NYUv2 normals) — 8 tasks on CityScapes, 15 on
  NYUv2;
- ``standard``: one softmax segmentation task (cross-entropy, ignore pixels excluded) plus depth
  (and normals), as in the wider MTL literature.

Depth is trained with L1 over valid pixels (gt ≠ 0); normals with 1 − mean cosine over valid
pixels (gt ≠ 0) of the L2-normalised prediction *(decision: the reference's MR scripts take the
normals mask from depth)*. Metrics always include standard mIoU and pixel accuracy (from the
argmax over the class outputs), depth and normal errors, and for ``paper`` the per-image binary IoU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from roaming.atomic import atomic_h5
from roaming.errors import ConfigError
from roaming.metrics import (
    BinaryIoU,
    ConfusionMatrix,
    DepthErrors,
    NormalErrors,
    binary_iou_metrics,
    counts_from_state,
    counts_state,
    depth_metrics,
    normal_metrics,
    segmentation_metrics,
)
from roaming.protocol import dense_task_names


def _valid(target: torch.Tensor) -> torch.Tensor:
    return target != 0


class DenseMeter:
    """Split-level segmentation, depth and normal metrics of one pass, counted on the outputs'
    device (accumulators made at the first update), without waiting for it per batch."""

    def __init__(self, tasks: DenseTasks) -> None:
        self.tasks = tasks
        classes = len(tasks.class_names)
        # A single-class run (STL on one binary task) only has that class's binary IoU.
        self.partial = 0 < len(tasks.class_heads) < classes
        self.seen: dict[str, bool] = {}
        self._class_outputs: dict[int, torch.Tensor] = {}
        self._device: torch.device | None = None

    def _start(self, device: torch.device) -> None:
        classes = len(self.tasks.class_names)
        self.confusion = ConfusionMatrix.zeros(classes, device=device)
        binary_classes = len(self.tasks.class_heads) if self.partial else classes
        paper = self.tasks.task_set == "paper"
        self.binary = BinaryIoU.zeros(binary_classes, device=device) if paper else None
        self.depth = DepthErrors.zeros(device)
        self.normals = NormalErrors.zeros(device)
        self._device = device

    def update(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add head ``task``'s output; per-class heads are stacked once all are in."""
        if self._device is None:
            self._start(output.device)
        kind = self.tasks.kinds[task]
        output = output.detach()
        if kind == "class":
            self._class_outputs[self.tasks.classes_of[task]] = output[:, 0]
            if len(self._class_outputs) == len(self.tasks.class_heads):
                self._segmentation(
                    batch,
                    torch.stack([self._class_outputs[c] for c in sorted(self._class_outputs)], 1),
                )
                self._class_outputs = {}
        elif kind == "segmentation":
            self._segmentation(batch, output)
        elif kind == "depth":
            self.depth.update(output[:, 0], batch["depth"])
            self.seen["depth"] = True
        else:
            self.normals.update(output, batch["normals"].permute(0, 3, 1, 2))
            self.seen["normals"] = True

    def _segmentation(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> None:
        seg = batch["seg"].long()
        if self.partial:
            (only,) = self.tasks.classes_of.values()
            # Class 0 of a one-class accumulator is "pixel is `only`"; ignore stays negative.
            self.binary.update(torch.sigmoid(logits), (seg != only).long())
            self.seen["seg"] = True
            return
        self.confusion.update(logits.argmax(1), seg)
        if self.binary is not None:
            self.binary.update(torch.sigmoid(logits), seg)
        self.seen["seg"] = True

    def state_dict(self) -> dict[str, Any]:
        """The counts so far (``None`` before the first update), tensors on the CPU."""
        if self._device is None:
            return {"counts": None, "seen": {}}
        accumulators = {
            "confusion": self.confusion,
            "binary": self.binary,
            "depth": self.depth,
            "normals": self.normals,
        }
        counts = {k: None if acc is None else counts_state(acc) for k, acc in accumulators.items()}
        return {"counts": counts, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.seen = dict(state["seen"])
        counts = state["counts"]
        if counts is None:
            self._device = None
            return
        self._start(device)
        self.confusion = counts_from_state(ConfusionMatrix, counts["confusion"], device)
        if counts["binary"] is not None:
            self.binary = counts_from_state(BinaryIoU, counts["binary"], device)
        self.depth = counts_from_state(DepthErrors, counts["depth"], device)
        self.normals = counts_from_state(NormalErrors, counts["normals"], device)

    def compute(self) -> dict[str, float]:
        """Flat metrics over everything added."""
        names = self.tasks.class_names
        result: dict[str, float] = {}
        if self.seen.get("seg") and self.partial:
            (only,) = self.tasks.classes_of.values()
            result |= binary_iou_metrics(self.binary, [names[only]])
        elif self.seen.get("seg"):
            result |= segmentation_metrics(self.confusion, names)
            if self.binary is not None:
                result |= binary_iou_metrics(self.binary, names)
        if self.seen.get("depth"):
            result |= {f"depth_{k}": v for k, v in depth_metrics(self.depth).items()}
        if self.seen.get("normals"):
            result |= {f"normal_{k}": v for k, v in normal_metrics(self.normals).items()}
        return result


class DenseTasks:
    """The dense tasks of a run, in head order; ``kinds`` says what each head predicts."""

    def __init__(self, class_names: list[str], task_set: str, normals: bool) -> None:
        self.class_names = class_names
        self.task_set = task_set
        self.names = dense_task_names(class_names, task_set, normals)
        if task_set == "paper":
            self.kinds = ["class"] * len(class_names)
            self.head_sizes = [1] * len(class_names)
        else:
            self.kinds, self.head_sizes = ["segmentation"], [len(class_names)]
        self.kinds.append("depth")
        self.head_sizes.append(1)
        if normals:
            self.kinds.append("normals")
            self.head_sizes.append(3)
        self.classes_of = {t: t for t, kind in enumerate(self.kinds) if kind == "class"}
        self.class_heads = list(self.classes_of)
        self.fields = ("seg", "depth", "normals") if normals else ("seg", "depth")

    def select(self, task: int) -> DenseTasks:
        """Only task ``task`` (single-task learning)."""
        if not 0 <= task < len(self.names):
            raise ConfigError(f"--task must be in 0..{len(self.names) - 1}, got {task}")
        single = DenseTasks(self.class_names, self.task_set, "normals" in self.kinds)
        for attribute in ("kinds", "names", "head_sizes"):
            setattr(single, attribute, [getattr(self, attribute)[task]])
        single.classes_of = {0: self.classes_of[task]} if task in self.classes_of else {}
        single.class_heads = list(single.classes_of)
        return single

    def loss(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's loss of head ``task`` (module docstring)."""
        kind = self.kinds[task]
        if kind == "class":
            target = (batch["seg"] == self.classes_of[task]).to(output.dtype)
            return F.binary_cross_entropy_with_logits(output[:, 0], target)
        if kind == "segmentation":
            return F.cross_entropy(output, batch["seg"].long(), ignore_index=-1)
        # Sums over the valid pixels as masked sums, not boolean indexing, which would wait for
        # the device to learn how many there are.
        if kind == "depth":
            target = batch["depth"]
            valid = _valid(target)
            error = torch.where(valid, (output[:, 0] - target).abs(), 0.0)
            return error.sum() / valid.sum().clamp(min=1)
        target = batch["normals"].permute(0, 3, 1, 2)
        valid = (target != 0).any(1)
        cosine = torch.where(valid, (F.normalize(output, dim=1) * target).sum(1), 0.0)
        return 1 - cosine.sum() / valid.sum().clamp(min=1)

    def meter(self) -> DenseMeter:
        """A fresh accumulator."""
        return DenseMeter(self)

    def save_predictions(
        self, path: str | Path, outputs: list[torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> None:
        """Write each head's raw outputs (float16 to keep files small) and the targets."""
        nbytes = sum(output.numel() * 4 for output in outputs)
        with atomic_h5(path, nbytes) as file:
            for name, output in zip(self.names, outputs, strict=True):
                file.create_dataset(f"outputs/{name}", data=output.numpy().astype(np.float16))
            for name, target in targets.items():
                file.create_dataset(f"targets/{name}", data=target.cpu().numpy())
            file.attrs["class_names"] = self.class_names


def dense_tasks(attrs: dict[str, Any], task: int | None, task_set: str) -> DenseTasks:
    """The ``task_set`` tasks of a prepared CityScapes / NYUv2 file, or only task ``task``."""
    tasks = DenseTasks(list(attrs["class_names"]), task_set, attrs["dataset"] == "nyuv2")
    return tasks if task is None else tasks.select(task)
