"""Task sets: what each head predicts, its loss, and how predictions become metrics.

The training loop only talks to a :class:`TaskSet`; CelebA's attribute groups and the dense
scene-understanding tasks implement the same small interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Meter(Protocol):
    """Accumulates one split's predictions into metrics."""

    def update(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add the output of head ``task`` on ``batch``."""

    def compute(self) -> dict[str, float]:
        """Flat metric name → value over everything added so far."""

    def state_dict(self) -> dict[str, Any]:
        """The counts so far, as CPU tensors and plain values (a checkpoint mid-epoch)."""

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue from :meth:`state_dict`, counting on ``device``."""


class TaskSet(Protocol):
    """The tasks of one run, in head order."""

    names: list[str]
    head_sizes: list[int]
    fields: tuple[str, ...]

    def loss(self, task: int, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of head ``task``."""

    def meter(self) -> Meter:
        """A fresh accumulator for one pass over a split."""

    def predictions(self, task: int, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample predictions of head ``task``, keyed by the array they fill."""
