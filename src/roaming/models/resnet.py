"""The CelebA ResNet-18 of the reference code (docs/protocol.md §3), a channel slot after each conv.

Differences from torchvision's ResNet-18, all taken from the reference: BatchNorm with batch
statistics by default, a 1×1 strided downsample conv *without* BN (but with a slot), a slot after
every conv(+BN), one linear head per task, no pretraining. Child modules are registered in the
reference's order (conv1, conv2, downsample) so masked layers enumerate in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from roaming.models import skip
from roaming.models.blocks import ConvBlock, MultiTaskModel, TaskArg
from roaming.models.skip import Layout

_BASE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3×3 ConvBlocks plus an identity or 1×1 (no-BN) shortcut; ReLU after the add."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int,
        *,
        num_tasks: int,
        slot: str,
        bn_running_stats: bool,
    ) -> None:
        super().__init__()
        common = {"num_tasks": num_tasks, "slot": slot, "bn_running_stats": bn_running_stats}
        self.conv1 = ConvBlock(in_channels, channels, 3, stride=stride, padding=1, **common)
        self.conv2 = ConvBlock(channels, channels, 3, padding=1, **common)
        self.downsample = (
            ConvBlock(in_channels, channels, 1, stride=stride, batch_norm=False, **common)
            if stride != 1 or in_channels != channels
            else None
        )
        self._joins = skip.Memo()

    def forward(self, x: Tensor, task: TaskArg) -> Tensor:
        out = F.relu(self.conv1(x, task), inplace=True)
        out = self.conv2(out, task)
        identity = x if self.downsample is None else self.downsample(x, task)
        return F.relu(out + identity, inplace=True)

    def forward_skip(self, x: Tensor, layout: Layout, task: TaskArg) -> tuple[Tensor, Layout]:
        """:meth:`forward` on a compact stream: conv2 reads only conv1's kept channels; the sum
        holds the union of conv2's and the shortcut's channels."""
        out, kept = self.conv1.forward_skip(x, layout, task)
        out, kept = self.conv2.forward_skip(F.relu(out, inplace=True), kept, task)
        if self.downsample is not None:
            x, layout = self.downsample.forward_skip(x, layout, task)
        join = self._joins.get(task, (kept, layout), skip.union)
        return F.relu(skip.add(out, x, join), inplace=True), join.layout


class ResNet18(MultiTaskModel):
    """Multi-task ResNet-18: shared trunk, one ``Linear(C_last, head_sizes[t])`` head per task.

    ``width`` scales the channel widths 64-128-256-512 (rounded, at least 1) so tests and demos run
    on a CPU. ``slot`` is "none", "mask" or "se"; heads are never slotted. The global average pool
    accepts non-square inputs (CelebA reference: 3×78×64). ``options``: ``compute``,
    ``precision``, ``channels_last`` (:class:`~roaming.models.blocks.MultiTaskModel`); skipping
    also skips conv2's input channels that conv1's mask drops and, through the residual stream,
    the channels no mask of the add keeps.
    """

    skips_in_nchw = True  # measured: see MultiTaskModel.skips_in_nchw

    def __init__(
        self,
        head_sizes: Sequence[int],
        slot: str = "none",
        width: float = 1.0,
        bn_running_stats: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(head_sizes, slot, width, bn_running_stats=bn_running_stats, **options)
        widths = self.scaled(_BASE_WIDTHS)
        common = {"num_tasks": self.num_tasks, "slot": slot, "bn_running_stats": bn_running_stats}

        self.stem = ConvBlock(3, widths[0], 7, stride=2, padding=3, **common)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = widths[0]
        layers = []
        for index, channels in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers.append(
                nn.ModuleList(
                    [
                        BasicBlock(in_channels, channels, stride, **common),
                        BasicBlock(channels, channels, 1, **common),
                    ]
                )
            )
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.heads = nn.ModuleList(nn.Linear(in_channels, size) for size in head_sizes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def last_shared_conv(self) -> nn.Conv2d:
        return self.layer4[1].conv2.conv

    def _features(self, x: Tensor, task: TaskArg) -> Tensor:
        """The pooled (B, C_last) vector: the shared representation MGDA-UB differentiates."""
        x = self.maxpool(F.relu(self.stem(x, task), inplace=True))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x, task)
        return x.mean(dim=(2, 3))

    def _features_skip(self, x: Tensor, layout: Layout, task: TaskArg) -> tuple[Tensor, Layout]:
        x, layout = self.stem.forward_skip(x, layout, task)
        x = self.maxpool(F.relu(x, inplace=True))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x, layout = block.forward_skip(x, layout, task)
        return x.mean(dim=(2, 3)), layout

    def _head(self, z: Tensor, task: int) -> Tensor:
        return self.heads[task](z)

    def _head_skip(self, z: Tensor, channels: Tensor, task: int) -> Tensor:
        head = self.heads[task]
        return F.linear(z, head.weight.index_select(1, channels), head.bias)
