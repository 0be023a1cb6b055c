"""Masked-channel skipping: a mask model's pass computed on the active channels only, exactly.

In a dense masked pass, channel c of a masked layer is computed for every task and then multiplied
by ``mask[task, c]``. Skipping computes only the channels a task keeps: a *compact* activation
(B, G·K, H, W) holds, for each of G groups (one per task: G = 1 for a task's pass, T for a fused
pass), K channels of the full width, named by a :class:`Layout`. Every other channel of the dense
activation is exactly zero, so leaving it out changes no value:

- a conv reads only its input's channels and computes only its mask's active channels (the weight
  rows and columns gathered per group; grouped convolution when G > 1); the gradients of the
  weights it skips are exactly zero, as in the dense pass, where they are multiplied by 0;
- BatchNorm with batch statistics and ReLU are per channel, so the kept channels are unchanged
  (running statistics are not: a dense pass updates them for masked channels too, so skipping
  refuses them; see :func:`check_skippable`);
- a residual add takes the union of its inputs' channels (:func:`add`);
- SegNet's max-unpool pairs channel c of the decoder input with channel c of the encoder's pooling
  indices; an encoder channel a task does not use is an all-zero map, whose pooling indices are the
  first element of each window (:func:`unpool`).

Groups of a fused pass may keep different numbers of channels; they are padded to the largest
count with inactive channels, which are computed and multiplied by 0 as in the dense pass.
Layouts are cached by the slot until its mask changes (``Tensor._version``), so a pass on a GPU
does not synchronise with the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from roaming.config import COMPUTE_MODES

T = TypeVar("T")


def check_skippable(compute: str, slot: str, bn_running_stats: bool) -> None:
    """Reject a ``compute`` mode that is unknown or would not be exact for this model."""
    if compute not in COMPUTE_MODES:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE_MODES)}, got {compute!r}")
    if compute == "dense":
        return
    if slot != "mask":
        raise ValueError(f"compute='skip' needs mask slots (tr, mr); slot {slot!r} masks nothing")
    if bn_running_stats:
        raise ValueError(
            "compute='skip' is not exact with running BatchNorm statistics: a dense pass updates "
            "the running statistics of masked channels too; use compute='dense'"
        )


@dataclass(frozen=True, eq=False)
class Layout:
    """The full-width channels a compact activation (B, G·K, …) holds, K per group.

    ``index[g, k]`` is the full channel of compact channel g·K + k; ``flat`` is ``g·C + index``
    (its position in a (B, G·C, …) activation); ``scale`` is None, or 0 for the padding channels
    that are computed but inactive and 1 elsewhere; ``full`` says every group holds every channel
    in order. ``cpu`` is ``index`` on the CPU, for building derived layouts without reading the
    device.
    """

    index: Tensor
    flat: Tensor
    scale: Tensor | None
    cpu: Tensor
    channels: int
    full: bool

    @property
    def groups(self) -> int:
        return self.cpu.shape[0]

    @property
    def width(self) -> int:
        return self.cpu.shape[1]


def make_layout(rows: Sequence[Tensor], channels: int, device: torch.device) -> Layout:
    """The layout of G groups keeping channels ``rows[g]`` (sorted CPU index tensors).

    Groups with fewer channels than the largest are padded with their lowest unused channels,
    marked 0 in ``scale``; a group keeps at least one channel so shapes never reach zero.
    """
    width = max(1, max(len(row) for row in rows))
    index = torch.empty(len(rows), width, dtype=torch.long)
    scale = torch.ones(len(rows), width)
    for g, row in enumerate(rows):
        unused = torch.ones(channels, dtype=torch.bool)
        unused[row] = False
        padding = torch.nonzero(unused).squeeze(1)[: width - len(row)]
        index[g] = torch.cat([row, padding])
        scale[g, len(row) :] = 0.0
    flat = (index + channels * torch.arange(len(rows)).unsqueeze(1)).flatten()
    padded = bool((scale == 0).any())
    return Layout(
        index=index.to(device),
        flat=flat.to(device),
        scale=scale.flatten().to(device) if padded else None,
        cpu=index,
        channels=channels,
        full=width == channels and not padded and bool((index == torch.arange(channels)).all()),
    )


def mask_layout(mask: Tensor, task: int | None) -> Layout:
    """The layout of the active channels of ``mask`` (T, C) for one task, or all (``None``)."""
    cpu = mask.cpu()
    tasks = range(len(cpu)) if task is None else [task]
    rows = [torch.nonzero(cpu[t]).squeeze(1) for t in tasks]
    return make_layout(rows, cpu.shape[1], mask.device)


def full_layout(groups: int, channels: int, device: torch.device) -> Layout:
    """Every channel in every group (a network's input)."""
    rows = [torch.arange(channels)] * groups
    return make_layout(rows, channels, device)


def gather_weight(weight: Tensor, out: Layout, inp: Layout) -> Tensor:
    """The conv weight of each group's kept output and input channels, (G·K_out, K_in, kh, kw).

    Gathered as rows of the flattened (C_out·C_in, kh, kw) weight, whose backward is one
    index_add: the gradient of every weight not gathered is exactly zero.
    """
    c_out, c_in, *kernel = weight.shape
    if out.full and inp.full and out.groups == 1:
        return weight
    if inp.full:
        return weight.index_select(0, out.index.flatten())
    if out.groups == 1:  # rows then columns: a cheaper backward than one flat gather
        return weight.index_select(0, out.index[0]).index_select(1, inp.index[0])
    flat = (out.index.unsqueeze(2) * c_in + inp.index.unsqueeze(1)).flatten()
    return weight.reshape(c_out * c_in, *kernel).index_select(0, flat).view(-1, inp.width, *kernel)


@dataclass(frozen=True, eq=False)
class Join:
    """The union layout of a residual add's two inputs and where each input's channels sit in it
    (flat positions); ``a_is_union`` when the first input already has the union layout."""

    layout: Layout
    pos_a: Tensor
    pos_b: Tensor
    a_is_union: bool


def union(a: Layout, b: Layout) -> Join:
    """Each group's channels of ``a`` or ``b``: the layout of the sum of two compact activations."""
    rows = [torch.unique(torch.cat([a.cpu[g], b.cpu[g]])) for g in range(a.groups)]
    joined = make_layout(rows, a.channels, a.index.device)
    pos_a = _positions(a, joined)
    a_is_union = a.width == joined.width and bool((pos_a == torch.arange(pos_a.numel())).all())
    device = a.index.device
    return Join(joined, pos_a.to(device), _positions(b, joined).to(device), a_is_union)


def _positions(part: Layout, whole: Layout) -> Tensor:
    """Flat positions in ``whole`` of ``part``'s compact channels, -1 where ``whole`` lacks one
    (on the CPU)."""
    where = torch.full((whole.groups, whole.channels), -1, dtype=torch.long)
    for g in range(whole.groups):
        where[g, whole.cpu[g]] = torch.arange(whole.width) + g * whole.width
    return torch.gather(where, 1, part.cpu).flatten()


def add(a: Tensor, b: Tensor, join: Join) -> Tensor:
    """``a + b`` of two compact activations, in their union layout (``join``).

    Each entry is ``a + b``, ``a`` or ``b``, exactly as in the dense sum, where the missing term
    is a zero.
    """
    if join.a_is_union:  # in place: a's value is not needed by the backward pass
        return a.index_add_(1, join.pos_b, b)
    shape = (a.shape[0], join.layout.groups * join.layout.width, *a.shape[2:])
    total = torch.empty(shape, dtype=a.dtype, device=a.device, memory_format=_memory_format(a))
    return total.zero_().index_add_(1, join.pos_a, a).index_add_(1, join.pos_b, b)


def first_in_window(size: Sequence[int], device: torch.device) -> Tensor:
    """The 2×2 max-pool index of an all-zero (H, W) map: each window's first element,
    (1, 1, H/2, W/2).

    Max pooling replaces its running maximum only on a strictly greater value (or NaN), so of
    equal values it keeps the first, on the CPU and on CUDA; the tests check both (CUDA where
    a GPU is available).
    """
    height, width = size[-2:]
    rows = torch.arange(0, height, 2, device=device) * width
    cols = torch.arange(0, width, 2, device=device)
    return (rows.unsqueeze(1) + cols).view(1, 1, height // 2, width // 2)


@dataclass(frozen=True, eq=False)
class Pairing:
    """For each compact channel of a decoder input, the encoder's compact channel holding the
    same full channel in the same group (flat), or -1 where the encoder skipped it."""

    sources: Tensor
    complete: bool


def pair(values: Layout, indices: Layout) -> Pairing:
    """How the compact decoder input ``values`` finds its pooling indices in ``indices``."""
    sources = _positions(values, indices)
    complete = bool((sources >= 0).all())
    return Pairing(sources.to(values.index.device), complete)


def unpool(x: Tensor, indices: Tensor, pairing: Pairing, size: Sequence[int]) -> Tensor:
    """2×2 max-unpool of compact ``x`` to ``size`` with the encoder's compact pooling ``indices``.

    A channel the encoder skipped was an all-zero map there, so it takes
    :func:`first_in_window`, the index the dense pass pooled.
    """
    paired = indices.index_select(1, pairing.sources.clamp(min=0))
    if not pairing.complete:
        found = (pairing.sources >= 0).view(1, -1, 1, 1)
        paired = torch.where(found, paired, first_in_window(size, x.device).expand_as(paired))
    return F.max_unpool2d(x, paired, kernel_size=2, stride=2, output_size=tuple(size[-2:]))


def to_full(x: Tensor, layout: Layout) -> Tensor:
    """A compact (B, G·K, …) activation as the dense (B·G, C, …) one, zeros where skipped.

    Rows are sample-major (row b·G + g), the order of a fused batch.
    """
    batch, rest = x.shape[0], x.shape[2:]
    full = torch.zeros(
        batch, layout.groups * layout.channels, *rest, dtype=x.dtype, device=x.device
    ).index_copy(1, layout.flat, x)
    return full.view(batch * layout.groups, layout.channels, *rest)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class Memo:
    """Derived layouts (unions, pairings) cached per task argument while their inputs are the
    same layout objects, which the slots keep until a mask changes."""

    def __init__(self) -> None:
        self._entries: dict[object, tuple[tuple[Layout, ...], object]] = {}

    def get(self, key: object, inputs: tuple[Layout, ...], build: Callable[..., T]) -> T:
        entry = self._entries.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], inputs, strict=True)):
            entry = (inputs, build(*inputs))
            self._entries[key] = entry
        return entry[1]  # type: ignore[return-value]
