"""The CityScapes / NYUv2 SegNet of the reference code (MTAN's), a channel slot after every conv.

Layout (docs/protocol.md §3): five encoder levels of 2, 2, 3, 3, 3 ConvBlocks, each followed by
a 2×2 max pool that keeps its indices, and a mirrored decoder whose levels start with a 2×2 max
unpool using those indices. Every block is Conv3×3 (pad 1, with bias) → BN → slot → ReLU, 26 in
all, so a mask model has 26 masked layers (13 encoder then 13 decoder, in forward order). One head
per task: Conv3×3 C→C then Conv1×1 C→k, never slotted, raw outputs (losses apply sigmoid /
normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from roaming.models import skip
from roaming.models.blocks import ConvBlock, MultiTaskModel, TaskArg
from roaming.models.skip import Layout

_BASE_WIDTHS = (64, 128, 256, 512, 512)
_ENCODER_DEPTHS = (2, 2, 3, 3, 3)
_DOWNSAMPLING = 2 ** len(_BASE_WIDTHS)  # five 2×2 pools: H and W must divide by 32


def _level(
    in_channels: int,
    channels: Sequence[int],
    *,
    num_tasks: int,
    slot: str,
    bn_running_stats: bool,
) -> nn.ModuleList:
    """One encoder/decoder level: 3×3 ConvBlocks with bias, chained through ``channels``."""
    blocks = []
    for out_channels in channels:
        blocks.append(
            ConvBlock(
                in_channels,
                out_channels,
                3,
                padding=1,
                bias=True,
                num_tasks=num_tasks,
                slot=slot,
                bn_running_stats=bn_running_stats,
            )
        )
        in_channels = out_channels
    return nn.ModuleList(blocks)


class SegNet(MultiTaskModel):
    """Multi-task SegNet (MTAN): shared encoder-decoder, one two-conv dense head per task.

    ``width`` scales the filters 64-128-256-512-512 (rounded, at least 1) so tests and demos run on
    a CPU. ``slot`` is "none", "mask" or "se". ``bn_running_stats=False`` is the reference MR / TR /
    SE setting (batch statistics at eval too); the reference MTL / GradNorm / MGDA / STL SegNets use
    running statistics. Inputs must have H and W divisible by 32 so every unpool restores the size.
    ``options``: ``compute``, ``precision``, ``channels_last``
    (:class:`~roaming.models.blocks.MultiTaskModel`); skipping skips the input channels of every
    conv and of the heads that the previous layer's mask drops.
    """

    def __init__(
        self,
        head_sizes: Sequence[int],
        slot: str = "none",
        width: float = 1.0,
        bn_running_stats: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(head_sizes, slot, width, bn_running_stats=bn_running_stats, **options)
        f = self.scaled(_BASE_WIDTHS)
        common = {"num_tasks": self.num_tasks, "slot": slot, "bn_running_stats": bn_running_stats}

        # Encoder: (3→f0, f0→f0), (f0→f1, f1→f1), (f1→f2, f2→f2 ×2), (f2→f3, ×2), (f3→f4, ×2).
        encoder = []
        in_channels = 3
        for channels, depth in zip(f, _ENCODER_DEPTHS, strict=True):
            encoder.append(_level(in_channels, [channels] * depth, **common))
            in_channels = channels
        self.encoder = nn.ModuleList(encoder)

        # Decoder, in forward order (MTAN's decoder_block[j] + conv_block_dec[j] for j = 4..0):
        # (f4→f3, f3→f3 ×2), (f3→f2, ×2), (f2→f1, ×2), (f1→f0, f0→f0), (f0→f0, f0→f0); at the
        # reference width: (512→512 ×3), (512→256, 256→256 ×2), (256→128, ×2), (128→64, 64→64),
        # (64→64 ×2). Level k unpools with the indices of encoder level 4 − k (same channels).
        self.decoder = nn.ModuleList(
            [
                _level(f[4], [f[3]] * 3, **common),
                _level(f[3], [f[2]] * 3, **common),
                _level(f[2], [f[1]] * 3, **common),
                _level(f[1], [f[0]] * 2, **common),
                _level(f[0], [f[0]] * 2, **common),
            ]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self._pairings = [skip.Memo() for _ in self.decoder]
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(f[0], f[0], kernel_size=3, padding=1),
                nn.Conv2d(f[0], size, kernel_size=1),
            )
            for size in head_sizes
        )

        # MTAN init, applied to every module (so also the SE slots' Linear layers).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def last_shared_conv(self) -> nn.Conv2d:
        return self.decoder[-1][-1].conv

    def _features(self, x: Tensor, task: TaskArg) -> Tensor:
        """The last decoder map (B, C, H, W): the shared representation MGDA-UB differentiates."""
        _check_size(x)
        indices = []
        for level in self.encoder:
            for block in level:
                x = F.relu(block(x, task), inplace=True)
            x, level_indices = self.pool(x)
            indices.append(level_indices)
        for level, level_indices in zip(self.decoder, reversed(indices), strict=True):
            x = self.unpool(x, level_indices)
            for block in level:
                x = F.relu(block(x, task), inplace=True)
        return x

    def _features_skip(self, x: Tensor, layout: Layout, task: TaskArg) -> tuple[Tensor, Layout]:
        """:meth:`_features` on compact activations: every conv reads only the channels the
        previous layer's mask keeps; each unpool pairs a channel with the encoder's indices of
        the same channel (:func:`roaming.models.skip.unpool`)."""
        _check_size(x)
        encoded = []
        for level in self.encoder:
            for block in level:
                x, layout = block.forward_skip(x, layout, task)
                x = F.relu(x, inplace=True)
            size = x.shape[-2:]
            x, level_indices = self.pool(x)
            encoded.append((level_indices, layout, size))
        for level, memo, (level_indices, pooled, size) in zip(
            self.decoder, self._pairings, reversed(encoded), strict=True
        ):
            pairing = memo.get(task, (layout, pooled), skip.pair)
            x = skip.unpool(x, level_indices, pairing, size)
            for block in level:
                x, layout = block.forward_skip(x, layout, task)
                x = F.relu(x, inplace=True)
        return x, layout

    def _head(self, z: Tensor, task: int) -> Tensor:
        """Task ``task``'s raw dense prediction (B, head_sizes[task], H, W)."""
        return self.heads[task](z)

    def _head_skip(self, z: Tensor, channels: Tensor, task: int) -> Tensor:
        first, second = self.heads[task]
        weight = first.weight.index_select(1, channels)
        return second(F.conv2d(z, weight, first.bias, first.stride, first.padding))


def _check_size(x: Tensor) -> None:
    height, width = x.shape[-2:]
    if height % _DOWNSAMPLING or width % _DOWNSAMPLING:
        raise ValueError(
            f"SegNet needs input height and width divisible by {_DOWNSAMPLING} "
            f"(five 2×2 max pools), got {height}×{width}"
        )
