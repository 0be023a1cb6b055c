"""A model's metrics, and optionally its outputs, on one split: what evaluation computes.

With batch-statistics BatchNorm (the reference) outputs depend on the batch, so the evaluation
batches are the training batch size, in file order. Task-specific models evaluate all tasks in
one fused pass per batch (the same outputs as T passes). A non-finite output is an error, never a
row of metrics: a diverged model has no score.
"""

from __future__ import annotations

import math

import torch

from roaming.data.splits import Split
from roaming.errors import NonFiniteError
from roaming.models import MultiTaskModel
from roaming.tasks import TaskSet
from roaming.tracker import Tracker


@torch.no_grad()
def predict(
    model: MultiTaskModel,
    tasks: TaskSet,
    split: Split,
    batch_size: int,
    *,
    keep_outputs: bool = False,
) -> tuple[dict[str, float], list[torch.Tensor] | None]:
    """Metrics of ``model`` on ``split`` (in file order) and, with ``keep_outputs``, every
    head's outputs on the CPU; the model is left in training mode."""
    model.eval()
    device = split.images.device
    tracker = Tracker(tasks, device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    outputs: list[list[torch.Tensor]] = [[] for _ in tasks.names]
    for index in torch.arange(len(split), device=device).split(batch_size):
        batch = split.batch(index)
        heads = model.forward_all(batch["images"])
        losses = [tasks.loss(t, out, batch) for t, out in enumerate(heads)]
        for out in heads:
            finite &= torch.isfinite(out).all()
        tracker.add(batch, list(zip(heads, losses, strict=True)))
        if keep_outputs:
            for store, out in zip(outputs, heads, strict=True):
                store.append(out.cpu())
    model.train()
    if not bool(finite):
        raise NonFiniteError("the model's outputs hold NaN or infinite values (it diverged)")
    metrics = tracker.compute()
    bad = [key for key, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"non-finite metric(s) {', '.join(bad)}")
    return metrics, [torch.cat(store) for store in outputs] if keep_outputs else None
