"""Task routing and Maximum Roaming over the masked layers of a model.

The pure mask arithmetic lives in :mod:`roaming.masks`; this module applies it to the
:class:`~roaming.models.blocks.MaskSlot` buffers of a network, counts the update events of each
layer, and keeps every layer's mask after each event so ``masks.h5`` can show how masks roamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from roaming import masks
from roaming.atomic import atomic_h5
from roaming.models.blocks import MaskSlot


class Roaming:
    """The masks of every masked layer of one model, and their update events.

    With ``roams=False`` this is task routing: masks are drawn once and never move.
    """

    def __init__(
        self,
        layers: list[tuple[str, MaskSlot, nn.Conv2d]],
        *,
        roams: bool,
        strategy: str,
        update_ratio: float,
        generator: torch.Generator,
    ) -> None:
        if strategy not in ("random", "least_align"):
            raise ValueError(f"unknown roaming strategy {strategy!r}")
        self.layers = layers
        self.roams = roams
        self.strategy = strategy
        self.update_ratio = update_ratio
        self.generator = generator
        self.budget: dict[str, int] = {}
        self.allowed: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.snapshots: dict[str, list[torch.Tensor]] = {}
        self.iterations: dict[str, list[int]] = {}

    def initialise(self, sharing: float) -> None:
        """Draw every layer's initial mask at sharing ratio ``sharing``; history = mask."""
        for name, slot, _ in self.layers:
            num_tasks, num_channels = slot.mask.shape
            mask = masks.initial_mask(num_tasks, num_channels, sharing, self.generator)
            slot.mask.copy_(mask)
            slot.history.copy_(mask)
            self.budget[name] = masks.roaming_budget(mask)
            limit = masks.event_limit(self.budget[name], self.update_ratio)
            self.allowed[name] = limit if self.roams else 0
            self.events[name] = 0
            self.snapshots[name] = [mask.clone()]
            self.iterations[name] = [0]

    def update(self, iteration: int) -> int:
        """One update event on every layer that may still roam; returns how many moved."""
        moved = 0
        for name, slot, conv in self.layers:
            if self.events[name] >= self.allowed[name]:
                continue
            mask, history = slot.mask.cpu(), slot.history.cpu()
            if self.strategy == "random":
                mask, history = masks.random_swap(mask, history, self.generator)
            else:
                mask, history = masks.least_align_swap(mask, history, conv.weight.detach().cpu())
            slot.mask.copy_(mask)
            slot.history.copy_(history)
            self.events[name] += 1
            self.snapshots[name].append(mask.clone())
            self.iterations[name].append(iteration)
            moved += 1
        return moved

    def progress(self) -> float:
        """Update progress r(c) of the whole network: events done over z, pooled over layers."""
        return masks.update_progress(sum(self.events.values()), sum(self.budget.values()))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain values (``weights_only`` safe)."""
        return {
            "budget": dict(self.budget),
            "allowed": dict(self.allowed),
            "events": dict(self.events),
            "snapshots": {name: torch.stack(s) for name, s in self.snapshots.items()},
            "iterations": {name: list(i) for name, i in self.iterations.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the masks themselves are model buffers)."""
        self.budget = dict(state["budget"])
        self.allowed = dict(state["allowed"])
        self.events = dict(state["events"])
        self.snapshots = {name: list(s.unbind(0)) for name, s in state["snapshots"].items()}
        self.iterations = {name: list(i) for name, i in state["iterations"].items()}
        self.generator.set_state(state["generator"])

    def write(self, path: str | Path) -> None:
        """Write ``masks.h5``: per layer, ``masks`` (U+1, T, N) and ``iterations`` (U+1,)."""
        nbytes = sum(t.numel() for snapshots in self.snapshots.values() for t in snapshots)
        with atomic_h5(path, nbytes) as file:
            for name, _, _ in self.layers:
                group = file.create_group(name)
                group.create_dataset("masks", data=torch.stack(self.snapshots[name]).numpy())
                group.create_dataset(
                    "iterations", data=np.asarray(self.iterations[name], dtype=np.int64)
                )
                group.attrs["budget"] = self.budget[name]
                group.attrs["allowed_events"] = self.allowed[name]
