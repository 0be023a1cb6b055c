"""Evaluation metrics as pure functions of predictions and targets (SPEC §6).

Each family is a count accumulator (updated batch by batch, mergeable, kept on any device) plus a
function turning the counts of a whole split into a flat ``dict[str, float]`` — the shape DVC
reads as metrics JSON. Only the CelebA binary-attribute family lives here for now; segmentation,
depth, normals and Δm follow the same pattern.

CelebA binary attributes
------------------------
Per attribute, at threshold 0.5 (positive iff probability ≥ 0.5), over the whole split:
``P = TP / (PP + 1e-7)``, ``R = TP / (AP + 1e-7)``, ``F = 2PR / (P + R + 1e-7)`` with PP the
predicted and AP the actual positives. The epsilons are the reference's: they make an attribute
with no (predicted) positives score 0 instead of NaN, and bias the others by < 1e-7 relative.
Accuracy is correct / total over the split *(decision: the reference averages per-batch
accuracies, which weights a short last batch like a full one)*. Reported values are macro means
over the attributes given plus every per-attribute value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

THRESHOLD = 0.5
EPS = 1e-7


@dataclass
class BinaryCounts:
    """Per-attribute int64 counts (shape (K,)) accumulated over a split."""

    true_positives: Tensor
    predicted_positives: Tensor
    actual_positives: Tensor
    correct: Tensor
    total: Tensor

    @classmethod
    def zeros(cls, num_attributes: int, device: torch.device | str | None = None) -> BinaryCounts:
        """Empty counts for ``num_attributes`` attributes, kept on ``device``."""

        def zero() -> Tensor:
            return torch.zeros(num_attributes, dtype=torch.int64, device=device)

        return cls(zero(), zero(), zero(), zero(), zero())

    @property
    def num_attributes(self) -> int:
        return self.total.numel()

    def update(self, probabilities: Tensor, targets: Tensor) -> None:
        """Add a batch: ``probabilities`` and 0/1 ``targets`` of shape (B, K), any device."""
        if probabilities.shape != targets.shape or probabilities.dim() != 2:
            raise ValueError(
                "probabilities and targets must both have shape (B, K), got "
                f"{tuple(probabilities.shape)} and {tuple(targets.shape)}"
            )
        if probabilities.shape[1] != self.num_attributes:
            raise ValueError(
                f"expected {self.num_attributes} attributes, got {probabilities.shape[1]}"
            )
        if not ((targets == 0) | (targets == 1)).all():
            raise ValueError("targets must be 0 or 1")
        predicted = probabilities >= THRESHOLD
        actual = targets == 1
        device = self.total.device
        self.true_positives += (predicted & actual).sum(0).to(device)
        self.predicted_positives += predicted.sum(0).to(device)
        self.actual_positives += actual.sum(0).to(device)
        self.correct += (predicted == actual).sum(0).to(device)
        self.total += actual.shape[0]

    def merge(self, other: BinaryCounts) -> BinaryCounts:
        """Counts of the union of both (disjoint) sample sets, e.g. across workers."""
        if other.num_attributes != self.num_attributes:
            raise ValueError(
                f"cannot merge counts over {self.num_attributes} and {other.num_attributes} "
                "attributes"
            )
        device = self.total.device
        return BinaryCounts(
            self.true_positives + other.true_positives.to(device),
            self.predicted_positives + other.predicted_positives.to(device),
            self.actual_positives + other.actual_positives.to(device),
            self.correct + other.correct.to(device),
            self.total + other.total.to(device),
        )


def binary_metrics(counts: BinaryCounts, names: Sequence[str]) -> dict[str, float]:
    """Macro-mean and per-attribute precision, recall, F-score and accuracy.

    Keys: ``precision``, ``recall``, ``fscore``, ``accuracy`` (means over the attributes) and
    ``<metric>/<name>`` for each attribute, ``names`` giving the attributes in count order.
    """
    if len(names) != counts.num_attributes:
        raise ValueError(f"{len(names)} names for {counts.num_attributes} attributes")
    if len(set(names)) != len(names):
        raise ValueError(f"attribute names are not unique: {list(names)}")
    if counts.num_attributes == 0 or bool((counts.total == 0).any()):
        raise ValueError("no samples counted")
    tp, pp, ap, correct, total = (
        t.detach().to("cpu", torch.float64)
        for t in (
            counts.true_positives,
            counts.predicted_positives,
            counts.actual_positives,
            counts.correct,
            counts.total,
        )
    )
    precision = tp / (pp + EPS)
    recall = tp / (ap + EPS)
    per_attribute = {
        "precision": precision,
        "recall": recall,
        "fscore": 2 * precision * recall / (precision + recall + EPS),
        "accuracy": correct / total,
    }
    result = {metric: float(values.mean()) for metric, values in per_attribute.items()}
    for metric, values in per_attribute.items():
        result.update(
            {f"{metric}/{name}": v for name, v in zip(names, values.tolist(), strict=True)}
        )
    return result
