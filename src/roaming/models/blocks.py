"""Building blocks shared by every architecture: channel slots, conv blocks, the model interface.

A *slot* sits after conv (+BN) and before the ReLU / residual add (docs/protocol.md §1 "Where
masks sit"). It is where the methods differ: nothing (MTL, GradNorm, MGDA, STL), a per-task
binary channel mask (Maximum Roaming, task routing) or a per-task squeeze-excitation (SE-MTL).
The task index is passed explicitly through ``forward`` so no module holds a "current task".

``task=ALL_TASKS`` runs every task's pass at once: the batch holds T copies of each sample,
sample-major (row b·T + t is sample b for task t), each task's rows go through its task's slot
and get their own BatchNorm statistics, so the result equals T separate passes while every conv
runs once on T·B images. Sample-major, an NCHW activation (T·B, C, H, W) is also (B, T·C, H, W),
so one BatchNorm call normalises every task's rows with their own statistics.

``compute="skip"`` (mask slots only) computes only the channels each task's masks keep
(:mod:`roaming.models.skip`); ``compute="dense"`` computes every channel and multiplies by the
mask, as the reference does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from typing import ClassVar, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from roaming.config import PRECISIONS
from roaming.models.skip import (
    Layout,
    check_skippable,
    full_layout,
    gather_weight,
    mask_layout,
    to_full,
)

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
    """A fused batch (B·T, …) viewed as (B, T, …); an uneven split is an error."""
    if x.shape[0] % num_tasks:
        raise ValueError(f"a fused batch of {x.shape[0]} is not {num_tasks} equal task slices")
    return x.view(x.shape[0] // num_tasks, num_tasks, *x.shape[1:])


def _contiguous_like(part: Tensor, whole: Tensor) -> Tensor:
    """``part`` laid out as one pass would hold it: contiguous in ``whole``'s memory format."""
    if whole.dim() == 4 and whole.is_contiguous(memory_format=torch.channels_last):
        return part.contiguous(memory_format=torch.channels_last)
    return part.contiguous()


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
        self._layouts: dict[int | None, tuple[tuple[int, int, torch.device], Layout]] = {}

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        """Multiply channel c by ``mask[task, c]``, the same for every sample and pixel."""
        if task == ALL_TASKS:
            masks = self.mask.to(x.dtype).view(*self.mask.shape, 1, 1)
            return (_slices(x, len(self.mask)) * masks).view_as(x)
        row = self.mask[_require_task(self, task)]
        return x * row.to(x.dtype).view(1, -1, 1, 1)

    def layout(self, task: TaskArg) -> Layout:
        """The active channels of ``task`` (or of every task, one group each, for ALL_TASKS).

        Cached until the mask changes (any in-place write bumps its version), so a pass reads the
        mask from the device only after an update event.
        """
        key = None if task == ALL_TASKS else _require_task(self, task)
        version = (self.mask._version, self.mask.data_ptr(), self.mask.device)
        cached = self._layouts.get(key)
        if cached is None or cached[0] != version:
            cached = (version, mask_layout(self.mask, key))
            self._layouts[key] = cached
        return cached[1]


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
            slices = _slices(squeezed, len(self.excitations)).unbind(1)
            scale = torch.stack(
                [excite(s) for excite, s in zip(self.excitations, slices, strict=True)], 1
            ).view_as(squeezed)
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
    own batch statistics; the affine parameters are shared (docs/protocol.md §1 "BatchNorm").
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
        """BatchNorm; a fused batch gets each task's own statistics.

        With batch statistics, an NCHW fused batch (B·T, C, H, W) is normalised in one call as
        (B, T·C, H, W) with the affine parameters repeated. Running statistics in training keep
        one call per task, in task order: T sequential updates of the running averages are not
        one update with the T batches' statistics. Fixed running statistics (evaluation) are the
        same affine map for every sample: one call.
        """
        assert self.bn is not None
        if task != ALL_TASKS or not (self.bn.training or not self.bn.track_running_stats):
            return self.bn(x)
        slices = _slices(x, self.num_tasks)
        if self.bn.track_running_stats or not x.is_contiguous():
            out = torch.empty_like(x)  # keeps x's memory format
            parts = _slices(out, self.num_tasks)
            for t in range(self.num_tasks):
                parts[:, t] = self.bn(_contiguous_like(slices[:, t], x))
            return out
        grouped = slices.view(slices.shape[0], -1, *x.shape[2:])
        weight, bias = (p.repeat(self.num_tasks) for p in (self.bn.weight, self.bn.bias))
        return F.batch_norm(grouped, None, None, weight, bias, True, 0.0, self.bn.eps).view_as(x)

    def forward_skip(self, x: Tensor, inp: Layout, task: TaskArg) -> tuple[Tensor, Layout]:
        """The block on a compact activation (:mod:`roaming.models.skip`): only the output
        channels ``task``'s mask keeps, from only the input channels ``inp`` holds."""
        out = self.slot.layout(task)
        conv = self.conv
        weight = gather_weight(conv.weight, out, inp)
        channels = out.index.flatten()

        def kept(parameter: Tensor) -> Tensor:
            return (
                parameter if out.full and out.groups == 1 else parameter.index_select(0, channels)
            )

        bias = None if conv.bias is None else kept(conv.bias)
        x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, out.groups)
        if self.bn is not None:
            weight, bias = kept(self.bn.weight), kept(self.bn.bias)
            x = F.batch_norm(x, None, None, weight, bias, True, 0.0, self.bn.eps)
        if out.scale is not None:
            x = x * out.scale.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        return x, out


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


def fuses_skipping(device: torch.device) -> bool:
    """Whether a fused pass that skips runs as one grouped-convolution pass on ``device``.

    Not on a CPU, where T compact passes were measured as fast (SegNet) or faster (ResNet-18,
    1.6x) with the same outputs; on a GPU one pass launches each kernel once instead of T times.
    """
    return device.type != "cpu"


# The smallest width multiplier at which NHWC is the CPU default: where it was measured faster,
# and clear of a heap corruption in the CPU backward of NHWC strided 1×1 convolutions with fewer
# than 16 input channels (oneDNN's AVX-512 kernel writes past its workspace: uxlfoundation/oneDNN
# issue 6035; seen here with PyTorch 2.14 at width 0.125, ResNet-18's layer2 downsample, 8
# channels, odd batches), which NCHW does not have.
_NHWC_MIN_WIDTH = 0.5


def _float32(x: Tensor) -> Tensor:
    """Autocast's bfloat16 results as float32, so losses and metrics are computed in float32."""
    return x.float() if x.dtype == torch.bfloat16 else x


class MultiTaskModel(nn.Module, ABC):
    """What the training loop needs from an architecture: shared features plus one head per task.

    With slot "none" the features are task-independent, so ``features(x, None)`` is computed once
    and fed to every head; otherwise (``task_specific``) each task needs its own pass.

    How a pass runs, never what it computes (up to float rounding): ``compute`` "dense" or "skip"
    (mask slots with batch statistics only; :mod:`roaming.models.skip`), ``precision`` "fp32" or
    "bf16" (autocast on the input's device, float32 weights and float32 outputs) and
    ``channels_last`` (the NHWC memory format for activations; None: see
    :meth:`uses_channels_last`).
    """

    skips_in_nchw: ClassVar[bool] = False
    """Whether skipping on a CPU runs in NCHW (``channels_last`` left out).

    Measured on a 2-core CPU at the paper's shapes (CPU seconds per training step): NHWC is
    faster for dense passes (ResNet-18 1.06×, SegNet 1.03×), for bf16, and for SegNet's skipping
    (1.21×: oneDNN's NHWC convolutions cost about what their kept channels cost, while NCHW ones
    round every channel count up to a multiple of 16); ResNet-18's skipping is faster in NCHW
    (1.04× at p = 0.8, 1.10× at p = 0.5), whose residual adds scatter along the channels and
    whose BatchNorm runs NHWC kernels slowly at counts that are not multiples of 16; in NCHW
    its compact downsample convolutions also stay clear of the NHWC heap corruption of
    :data:`_NHWC_MIN_WIDTH`, so it skips in NCHW in bf16 too.
    """

    def __init__(
        self,
        head_sizes: Sequence[int],
        slot: str,
        width: float,
        *,
        bn_running_stats: bool = False,
        compute: str = "dense",
        precision: str = "fp32",
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if not head_sizes or min(head_sizes) < 1:
            raise ValueError(f"head_sizes must be non-empty positive sizes, got {list(head_sizes)}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        check_skippable(compute, slot, bn_running_stats)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.num_tasks = len(head_sizes)
        self.slot_kind = slot
        self.width = width
        self.compute = compute
        self.precision = precision
        self.channels_last = channels_last
        self._inputs: dict[tuple[int, int, torch.device], Layout] = {}

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
    def _features(self, x: Tensor, task: TaskArg) -> Tensor:
        """The dense shared representation (see :meth:`features`)."""

    @abstractmethod
    def _features_skip(self, x: Tensor, layout: Layout, task: TaskArg) -> tuple[Tensor, Layout]:
        """The shared representation from a compact input (G groups of its channels), compact,
        with its layout."""

    @abstractmethod
    def _head(self, z: Tensor, task: int) -> Tensor:
        """Task ``task``'s raw outputs (see :meth:`head`)."""

    @abstractmethod
    def _head_skip(self, z: Tensor, channels: Tensor, task: int) -> Tensor:
        """:meth:`_head` on a compact representation holding the full ``channels``."""

    def features(self, x: Tensor, task: TaskArg) -> Tensor:
        """Shared representation of ``x`` as seen by ``task`` (None only if not task_specific;
        ``ALL_TASKS`` for a fused batch of T copies of each sample, sample-major)."""
        with self._autocast(x.device):
            if self.compute == "dense":
                return _float32(self._features(self._formatted(x), task))
            z, layout = self._skip_pass(x, task)
            return _float32(to_full(z, layout))

    def head(self, z: Tensor, task: int) -> Tensor:
        """Task ``task``'s raw outputs (logits) from the shared representation ``z``, float32."""
        with self._autocast(z.device):
            return _float32(self._head(z, task))

    def forward(self, x: Tensor, task: int) -> Tensor:
        if self.compute == "dense":
            return self.head(self.features(x, task), task)
        with self._autocast(x.device):  # the head reads only the kept channels, too
            z, layout = self._skip_pass(x, task)
            return _float32(self._head_skip(z, layout.index[0], task))

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Every task's outputs on the batch ``x``, equal to ``[self(x, t) for t in tasks]``.

        Task-specific models run one fused pass over T copies of each sample (T times the
        activation memory of one pass, every conv launched once); the others compute the shared
        features once.
        """
        if not self.task_specific:
            z = self.features(x, None)
            return [self.head(z, t) for t in range(self.num_tasks)]
        if self.compute == "skip" and not fuses_skipping(x.device):
            return [self(x, t) for t in range(self.num_tasks)]
        copies = x.repeat_interleave(self.num_tasks, dim=0)
        if self.compute == "skip":
            with self._autocast(x.device):
                z, layout = self._skip_pass(copies, ALL_TASKS)
                k = layout.width
                return [
                    _float32(self._head_skip(z[:, t * k : (t + 1) * k], layout.index[t], t))
                    for t in range(self.num_tasks)
                ]
        slices = _slices(self.features(copies, ALL_TASKS), self.num_tasks)
        return [self.head(slices[:, t], t) for t in range(self.num_tasks)]

    def _skip_pass(self, x: Tensor, task: TaskArg) -> tuple[Tensor, Layout]:
        """The compact shared representation of a task's pass (G = 1) or a fused one (G = T)."""
        groups = self.num_tasks if task == ALL_TASKS else 1
        if groups > 1:  # (B·T, C, H, W) sample-major is (B, T·C, H, W): T channel groups
            x = _slices(x, groups).reshape(x.shape[0] // groups, -1, *x.shape[2:])
        layout = self._input_layout(groups, x.shape[1] // groups, x.device)
        return self._features_skip(self._formatted(x), layout, task)

    def _autocast(self, device: torch.device) -> torch.autocast | nullcontext[None]:
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def uses_channels_last(self, device: torch.device) -> bool:
        """``channels_last``, or when left out (None) where it was measured faster: on a CPU
        from width 0.5, everything but the skipping of :attr:`skips_in_nchw` models (whose
        compact strided 1×1 convolutions may read fewer than 16 channels, see
        :data:`_NHWC_MIN_WIDTH`); NCHW on a GPU and at smaller widths."""
        if self.channels_last is not None:
            return self.channels_last
        if device.type != "cpu" or self.width < _NHWC_MIN_WIDTH:
            return False
        return self.compute == "dense" or not self.skips_in_nchw

    def _formatted(self, x: Tensor) -> Tensor:
        """The input in the pass's memory format (a batch of HWC images is NHWC in memory)."""
        if self.uses_channels_last(x.device):
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def _input_layout(self, groups: int, channels: int, device: torch.device) -> Layout:
        """Every input channel in every group, cached (building it copies to the device)."""
        key = (groups, channels, device)
        if key not in self._inputs:
            self._inputs[key] = full_layout(groups, channels, device)
        return self._inputs[key]
