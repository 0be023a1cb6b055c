"""A guard against copies of host data to a device, for tests of what runs every batch."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

_FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray)


class NoHostToDevice(TorchFunctionMode):
    """Fails any call that brings host data to another device: a tensor made from Python data
    there (``torch.tensor(..., device=...)``), or a result off the CPU from a CPU tensor of one
    element or more (a 0-dim one is a scalar argument). On a GPU such a copy from pageable
    memory waits for the device; on the ``meta`` device it would pass unnoticed."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        results = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not any(t.device.type != "cpu" for t in results):
            return out
        if func in _FROM_DATA:
            raise AssertionError(f"torch.{func.__name__} makes host data into a device tensor")
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host = [t for t in inputs if t.device.type == "cpu" and t.dim() > 0]
        if host:
            name = getattr(func, "__name__", func)
            raise AssertionError(f"{name} brings a host tensor {tuple(host[0].shape)} to a device")
        return out
