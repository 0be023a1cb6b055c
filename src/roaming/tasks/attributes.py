"""CelebA's task set: one binary-classification head per group of attributes (docs/protocol.md §4).

Each head outputs one logit per attribute of its group; the loss is the binary cross-entropy
averaged over the batch and the group's attributes (the reference's sigmoid + ``BCELoss``, computed
from logits for numerical stability). Metrics are counted per attribute and reported in the
file's attribute order, so a single-task run reports only its group's attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from roaming.atomic import atomic_h5
from roaming.data.celeba import TASK_GROUP_NAMES
from roaming.errors import ConfigError
from roaming.metrics import BinaryCounts, binary_metrics, counts_from_state, counts_state


class AttributeMeter:
    """Per-attribute counts of one pass over a split, kept on the outputs' device (created at the
    first update), so a batch adds to them without waiting for the device."""

    def __init__(self, tasks: AttributeTasks) -> None:
        self.tasks = tasks
        self.counts: list[BinaryCounts] | None = None

    def update(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add head ``task``'s logits on ``batch``."""
        if self.counts is None:
            self.counts = [
                BinaryCounts.zeros(len(group), device=output.device) for group in self.tasks.groups
            ]
        targets = batch["attributes"][:, self.tasks.group_index(task, output.device)]
        self.counts[task].update(torch.sigmoid(output.detach()), targets)

    def state_dict(self) -> dict[str, Any]:
        """The counts so far (``None`` before the first update), tensors on the CPU."""
        if self.counts is None:
            return {"counts": None}
        return {"counts": [counts_state(counts) for counts in self.counts]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        saved = state["counts"]
        self.counts = (
            None if saved is None else [counts_from_state(BinaryCounts, s, device) for s in saved]
        )

    def compute(self) -> dict[str, float]:
        """Macro means and per-attribute values over the attributes of the run's groups."""
        if self.counts is None:
            raise ValueError("no samples counted")
        order = torch.from_numpy(np.argsort(self.tasks.columns, kind="stable"))
        merged = [
            torch.cat([getattr(c, f).cpu() for c in self.counts])[order] for f in _COUNT_FIELDS
        ]
        invalid = sum(int(c.invalid) for c in self.counts)
        names = [self.tasks.attribute_names[i] for i in sorted(self.tasks.columns)]
        return binary_metrics(BinaryCounts(*merged, torch.tensor(invalid)), names)


_COUNT_FIELDS = ("true_positives", "predicted_positives", "actual_positives", "correct", "total")


class AttributeTasks:
    """The attribute groups a run trains, in head order."""

    fields = ("attributes",)

    def __init__(
        self,
        attribute_names: Sequence[str],
        groups: Sequence[Sequence[int]],
        names: Sequence[str],
    ) -> None:
        self.attribute_names = list(attribute_names)
        self.groups = [tuple(group) for group in groups]
        self.names = list(names)
        self.head_sizes = [len(group) for group in self.groups]
        self.columns = [index for group in self.groups for index in group]
        self._group_index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def group_index(self, task: int, device: torch.device) -> torch.Tensor:
        """Group ``task``'s attribute columns as an index tensor on ``device``, made once: a list
        index would be copied to the device (and waited for) on every batch."""
        key = (task, device)
        if key not in self._group_index:
            self._group_index[key] = torch.tensor(self.groups[task], device=device)
        return self._group_index[key]

    def loss(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of head ``task``, mean over samples and attributes."""
        targets = batch["attributes"][:, self.group_index(task, output.device)]
        return F.binary_cross_entropy_with_logits(output, targets.to(output.dtype))

    def meter(self) -> AttributeMeter:
        """A fresh accumulator."""
        return AttributeMeter(self)

    def save_predictions(
        self, path: str | Path, outputs: list[torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> None:
        """Write per-sample ``probabilities`` (N, 40; NaN where no head predicts) and labels."""
        attributes = targets["attributes"].cpu().numpy().astype(np.uint8)
        probabilities = np.full(attributes.shape, np.nan, dtype=np.float32)
        for group, output in zip(self.groups, outputs, strict=True):
            probabilities[:, list(group)] = torch.sigmoid(output).cpu().numpy()
        nbytes = sum(output.numel() * 4 for output in outputs)
        with atomic_h5(path, nbytes) as file:
            file.create_dataset("probabilities", data=probabilities)
            file.create_dataset("attributes", data=attributes)
            file.attrs["attribute_names"] = self.attribute_names
            file.attrs["predicted"] = sorted(self.columns)


def celeba_tasks(attrs: dict[str, Any], task: int | None, task_set: str) -> AttributeTasks:
    """The 8 attribute groups of a prepared CelebA file, or only group ``task`` (STL)."""
    if task_set != "paper":
        raise ConfigError(f"CelebA has only the 'paper' task set, got --task-set {task_set!r}")
    groups = attrs["task_groups"]
    names = (
        list(TASK_GROUP_NAMES)
        if len(groups) == len(TASK_GROUP_NAMES)
        else [f"group{i}" for i in range(len(groups))]
    )
    if task is not None:
        if not 0 <= task < len(groups):
            raise ConfigError(f"--task must be in 0..{len(groups) - 1}, got {task}")
        groups, names = [groups[task]], [names[task]]
    return AttributeTasks(attrs["attribute_names"], groups, names)
