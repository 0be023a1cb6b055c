"""Building blocks shared by every architecture: channel slots, conv blocks, the model interface.

A *slot* sits after conv (+BN) and before the ReLU / residual add (SPEC §1 "Where masks sit"). It is
where the methods differ: nothing (MTL, GradNorm, MGDA, STL), a per-task binary channel mask
(Maximum Roaming, task routing) or a per-task squeeze-excitation (SE-MTL). The task index is passed
explicitly through ``forward`` so no module holds a "current task".

``task=ALL_TASKS`` runs every task's pass at once: the batch holds T equal slices, task-major
(slice t is rows t·B … (t+1)·B − 1), each slice goes through its task's slot and gets its own
BatchNorm statistics, so the result equals T separate passes while every conv runs once on T·B
images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Final, Literal

import torch
from torch import Tensor, nn

SLOT_KINDS = ("none", "mask", "se")
ALL_TASKS: Final = "all"
"""The ``task`` of a fused pass: one slice of the batch per task (see the module docstring)."""
TaskArg = int | Literal["all"] | None


def _require_task(slot: nn.Module, task: TaskArg) -> int:
    """Task-specific slots cannot pick a mask / SE module without a task index."""
    if task is None:
        raise ValueError(
            f"{type(slot).__name__} is task-specific: forward needs a task index, got None"
        )
    return task


def _slices(x: Tensor, num_tasks: int) -> Tensor:
    """A fused batch (T·B, …) viewed as (T, B, …); an uneven split is an error."""
    if x.shape[0] % num_tasks:
        raise ValueError(f"a fused batch of {x.shape[0]} is not {num_tasks} equal task slices")
    return x.view(num_tasks, x.shape[0] // num_tasks, *x.shape[1:])


class NoSlot(nn.Module):
    """Identity slot (hard sharing): the output is the same for every task."""

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        return x


class MaskSlot(nn.Module):
    """Per-task binary channel mask (Maximum Roaming / task routing).

    ``mask[t, c]`` says whether task t uses output channel c; ``history[t, c]`` whether it ever
    has. Both are bool buffers (saved in the state_dict, not trained), initialised all True (full
    sharing); the roaming code assigns them.
    """

    mask: Tensor
    history: Tensor

    def __init__(self, num_tasks: int, num_channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(num_tasks, num_channels, dtype=torch.bool))
        self.register_buffer("history", torch.ones(num_tasks, num_channels, dtype=torch.bool))

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        """Multiply channel c by ``mask[task, c]``, the same for every sample and pixel."""
        if task == ALL_TASKS:
            masks = self.mask.to(x.dtype).view(*self.mask.shape, 1, 1).unsqueeze(1)
            return (_slices(x, len(self.mask)) * masks).view_as(x)
        row = self.mask[_require_task(self, task)]
        return x * row.to(x.dtype).view(1, -1, 1, 1)


class SESlot(nn.Module):
    """Per-task squeeze-excitation (SE-MTL): task-specific channel rescaling of shared features.

    Per task: global average pool → Linear(C, max(1, C // reduction)) → ReLU → Linear → sigmoid.
    The ``max(1, ·)`` only matters for the narrow test/demo widths (the reference has C ≥ 64).
    """

    def __init__(self, num_tasks: int, num_channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, num_channels // reduction)
        self.excitations = nn.ModuleList(
            nn.Sequential(
                nn.Linear(num_channels, hidden),
                nn.ReLU(),
                nn.Linear(hidden, num_channels),
                nn.Sigmoid(),
            )
            for _ in range(num_tasks)
        )

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        squeezed = x.mean(dim=(2, 3))
        if task == ALL_TASKS:
            slices = _slices(squeezed, len(self.excitations)).unbind(0)
            scale = torch.cat(
                [excite(s) for excite, s in zip(self.excitations, slices, strict=True)]
            )
        else:
            scale = self.excitations[_require_task(self, task)](squeezed)
        return x * scale[:, :, None, None]


def make_slot(kind: str, num_tasks: int, num_channels: int) -> nn.Module:
    """Build the slot named ``kind`` ("none", "mask" or "se") for a layer of ``num_channels``."""
    if kind == "none":
        return NoSlot()
    if kind == "mask":
        return MaskSlot(num_tasks, num_channels)
    if kind == "se":
        return SESlot(num_tasks, num_channels)
    raise ValueError(f"unknown slot kind {kind!r}; expected one of {', '.join(SLOT_KINDS)}")


def make_norm(num_channels: int, running_stats: bool) -> nn.BatchNorm2d:
    """BatchNorm in the reference mode (batch statistics at train and eval) or the standard one.

    With ``running_stats=False`` each forward pass, hence each task's pass, normalises with its
    own batch statistics; the affine parameters are shared (SPEC §1 "BatchNorm").
    """
    return nn.BatchNorm2d(num_channels, track_running_stats=running_stats)


class ConvBlock(nn.Module):
    """conv → optional BN → slot, without activation (a BasicBlock applies ReLU after its add).

    Every shared conv is built as a ConvBlock so :func:`masked_layers` can enumerate masks with
    their conv weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        num_tasks: int,
        slot: str = "none",
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        batch_norm: bool = True,
        bn_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.bn = make_norm(out_channels, bn_running_stats) if batch_norm else None
        self.slot = make_slot(slot, num_tasks, out_channels)
        self.num_tasks = num_tasks

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self._normalise(x, task)
        return self.slot(x, task)

    def _normalise(self, x: Tensor, task: TaskArg) -> Tensor:
        """BatchNorm; a fused batch gets one call per task slice (each task's own statistics,
        running statistics updated in task order, as by T separate passes) unless fixed running
        statistics make it the same affine map for every sample."""
        assert self.bn is not None
        if task == ALL_TASKS and (self.bn.training or not self.bn.track_running_stats):
            return torch.cat([self.bn(part) for part in _slices(x, self.num_tasks).unbind(0)])
        return self.bn(x)


def masked_layers(model: nn.Module) -> list[tuple[str, MaskSlot, nn.Conv2d]]:
    """(module path, mask slot, conv) of every masked ConvBlock, in ``named_modules`` order.

    The order and names are stable for a given architecture: they index the masks.h5 groups and
    give least-align the conv filters behind each mask.
    """
    return [
        (name, module.slot, module.conv)
        for name, module in model.named_modules()
        if isinstance(module, ConvBlock) and isinstance(module.slot, MaskSlot)
    ]


class MultiTaskModel(nn.Module, ABC):
    """What the training loop needs from an architecture: shared features plus one head per task.

    With slot "none" the features are task-independent, so ``features(x, None)`` is computed once
    and fed to every head; otherwise (``task_specific``) each task needs its own pass.
    """

    def __init__(self, head_sizes: Sequence[int], slot: str, width: float) -> None:
        super().__init__()
        if not head_sizes or min(head_sizes) < 1:
            raise ValueError(f"head_sizes must be non-empty positive sizes, got {list(head_sizes)}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.num_tasks = len(head_sizes)
        self.slot_kind = slot
        self.width = width

    def scaled(self, channels: Sequence[int]) -> list[int]:
        """Reference channel counts times the width multiplier (at least one channel each)."""
        return [max(1, round(base * self.width)) for base in channels]

    @property
    def task_specific(self) -> bool:
        """True when the shared network differs per task (mask or SE slots)."""
        return self.slot_kind != "none"

    @property
    @abstractmethod
    def last_shared_conv(self) -> nn.Conv2d:
        """The last shared conv layer, whose weight GradNorm measures gradient norms on."""

    @abstractmethod
    def features(self, x: Tensor, task: TaskArg) -> Tensor:
        """Shared representation of ``x`` as seen by ``task`` (None only if not task_specific;
        ``ALL_TASKS`` for a fused batch of one slice per task)."""

    @abstractmethod
    def head(self, z: Tensor, task: int) -> Tensor:
        """Task ``task``'s raw outputs (logits) from the shared representation ``z``."""

    def forward(self, x: Tensor, task: int) -> Tensor:
        return self.head(self.features(x, task), task)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Every task's outputs on the batch ``x``, equal to ``[self(x, t) for t in tasks]``.

        Task-specific models run one fused pass over T copies of ``x`` (T times the activation
        memory of one pass, every conv launched once); the others compute the shared features
        once.
        """
        if not self.task_specific:
            z = self.features(x, None)
            return [self.head(z, t) for t in range(self.num_tasks)]
        copies = x.repeat(self.num_tasks, *([1] * (x.ndim - 1)))
        slices = self.features(copies, ALL_TASKS).chunk(self.num_tasks)
        return [self.head(z, t) for t, z in enumerate(slices)]
