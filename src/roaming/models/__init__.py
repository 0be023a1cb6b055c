"""Multi-task architectures behind one interface (:class:`MultiTaskModel`) and a name registry.

The registry lets configuration files name an architecture; every entry builds a
:class:`MultiTaskModel`, so the training loop never branches on the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from roaming.models.blocks import (
    PRECISIONS,
    SLOT_KINDS,
    ConvBlock,
    MaskSlot,
    MultiTaskModel,
    NoSlot,
    SESlot,
    make_norm,
    make_slot,
    masked_layers,
)
from roaming.models.resnet import ResNet18
from roaming.models.segnet import SegNet
from roaming.models.skip import COMPUTE_MODES

MODELS: dict[str, Callable[..., MultiTaskModel]] = {"resnet18": ResNet18, "segnet": SegNet}


def build_model(name: str, **kwargs: Any) -> MultiTaskModel:
    """Build the architecture registered as ``name`` with its constructor's keyword arguments,
    e.g. ``compute="dense"|"skip"``, ``precision="fp32"|"bf16"``, ``channels_last``."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(sorted(MODELS))}"
        ) from None
    return factory(**kwargs)


__all__ = [
    "COMPUTE_MODES",
    "MODELS",
    "PRECISIONS",
    "SLOT_KINDS",
    "ConvBlock",
    "MaskSlot",
    "MultiTaskModel",
    "NoSlot",
    "ResNet18",
    "SESlot",
    "SegNet",
    "build_model",
    "make_norm",
    "make_slot",
    "masked_layers",
]
