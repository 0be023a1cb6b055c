"""Evaluation metrics as pure functions of predictions and targets (docs/protocol.md §6).

Each family is a count accumulator (updated batch by batch, mergeable, kept on any device) plus a
function turning the counts of a whole split into a flat ``dict[str, float]`` — the shape DVC
reads as metrics JSON. Updates never read a device tensor on the host (no ``.item()``, ``bool()``,
boolean indexing or ``bincount``, which all wait for the device): a batch's counts stay on the
accumulator's device and invalid inputs are counted there, to be reported by the metric function
at the end of the split. The CelebA binary-attribute family comes first; segmentation, depth,
normals and Δm follow below in the same pattern (their decisions are listed there).

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

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

THRESHOLD = 0.5
EPS = 1e-7
Counts = TypeVar("Counts")


def counts_state(counts: Any) -> dict[str, Any]:
    """A count accumulator's fields, tensors on the CPU: how a checkpoint taken in the middle of
    a split keeps it (plain values and tensors only, ``weights_only`` safe)."""
    return {
        field.name: value.detach().cpu() if isinstance(value, Tensor) else value
        for field in dataclasses.fields(counts)
        for value in [getattr(counts, field.name)]
    }


def counts_from_state(kind: type[Counts], state: dict[str, Any], device: torch.device) -> Counts:
    """The accumulator :func:`counts_state` saved, counting on ``device``."""
    return kind(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in state.items()})


@dataclass
class BinaryCounts:
    """Per-attribute int64 counts (shape (K,)) accumulated over a split, and the number of target
    values that were neither 0 nor 1 (``invalid``, reported by :func:`binary_metrics`)."""

    true_positives: Tensor
    predicted_positives: Tensor
    actual_positives: Tensor
    correct: Tensor
    total: Tensor
    invalid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.invalid is None:
            self.invalid = torch.zeros((), dtype=torch.int64, device=self.total.device)

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
        predicted = probabilities >= THRESHOLD
        actual = targets == 1
        device = self.total.device
        self.invalid += ((targets != 0) & ~actual).sum().to(device)
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
            self.invalid + other.invalid.to(device),
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
    if int(counts.invalid):
        raise ValueError(f"targets must be 0 or 1; {int(counts.invalid)} values were not")
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


# --------------------------------------------------------------------------------------------------
# Dense tasks (CityScapes / NYUv2): segmentation, depth, normals; and Δm across tasks.
#
# Decisions (docs/protocol.md §6 and §9), stated once here and in each docstring:
# * Standard segmentation: confusion matrix over the whole split, pixels whose target equals
#   ``ignore_index`` excluded. mIoU averages the classes whose union (TP + FP + FN) is non-empty;
#   a class that never occurs and is never predicted has no defined IoU, so it is left out of the
#   mean and has no ``iou/<name>`` key (NaN would not survive strict JSON).
# * Paper-protocol binary IoU: per image and per class, images with an empty union skipped, then
#   averaged over all counted images of the split (the reference averages per batch). Ignored
#   pixels count as negatives by default, exactly as the reference's one-hot truth does.
# * Depth: errors pooled over every valid pixel of the split (the reference averages per batch).
# * Normals: angles from both vectors L2-normalised, in float64; the median comes from a histogram
#   of 0.01° bins, so it is within 0.005° of the exact (numpy) median; mean and the "within"
#   percentages are exact.
# --------------------------------------------------------------------------------------------------


def _check_names(names: Sequence[str], count: int, what: str) -> None:
    if len(names) != count:
        raise ValueError(f"{len(names)} names for {count} {what}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names are not unique: {list(names)}")


@dataclass
class ConfusionMatrix:
    """Standard segmentation counts: ``matrix[t, p]`` = pixels of true class t predicted as p.

    ``invalid`` counts the (target, predicted) labels outside [0, C) (targets other than
    ``ignore_index``); :func:`segmentation_metrics` reports them.
    """

    matrix: Tensor
    ignore_index: int = -1
    invalid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.invalid is None:
            self.invalid = torch.zeros(2, dtype=torch.int64, device=self.matrix.device)

    @classmethod
    def zeros(
        cls, num_classes: int, ignore_index: int = -1, device: torch.device | str | None = None
    ) -> ConfusionMatrix:
        """Empty (C, C) int64 counts kept on ``device``."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a valid class id")
        matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        return cls(matrix, ignore_index)

    @property
    def num_classes(self) -> int:
        return self.matrix.shape[0]

    def update(self, pred_labels: Tensor, target: Tensor) -> None:
        """Add a batch of (B, H, W) integer label maps; target pixels == ignore_index are skipped.

        Any other label outside [0, C) is counted as invalid rather than silently dropped: it
        means the data and the class count disagree.
        """
        if pred_labels.shape != target.shape or target.dim() != 3:
            raise ValueError(
                "pred_labels and target must both have shape (B, H, W), got "
                f"{tuple(pred_labels.shape)} and {tuple(target.shape)}"
            )
        if pred_labels.is_floating_point() or target.is_floating_point():
            raise ValueError("pred_labels and target must be integer label maps")
        c = self.num_classes
        truth, pred = target.long().flatten(), pred_labels.long().flatten()
        kept = truth != self.ignore_index
        bad_truth = kept & ((truth < 0) | (truth >= c))
        bad_pred = kept & ((pred < 0) | (pred >= c))
        # Ignored and invalid pixels go to one extra bin, dropped below.
        cell = torch.where(kept & ~bad_truth & ~bad_pred, truth * c + pred, c * c)
        counts = torch.zeros(c * c + 1, dtype=torch.int64, device=cell.device)
        counts.index_add_(0, cell, torch.ones_like(cell))
        device = self.matrix.device
        self.matrix += counts[: c * c].view(c, c).to(device)
        self.invalid += torch.stack([bad_truth.sum(), bad_pred.sum()]).to(device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Counts of the union of both (disjoint) pixel sets, e.g. across workers."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError("cannot merge confusion matrices of different classes/ignore_index")
        device = self.matrix.device
        return ConfusionMatrix(
            self.matrix + other.matrix.to(device),
            self.ignore_index,
            self.invalid + other.invalid.to(device),
        )


def segmentation_metrics(cm: ConfusionMatrix, class_names: Sequence[str]) -> dict[str, float]:
    """``miou``, ``pixel_accuracy`` and ``iou/<name>`` from a split's confusion matrix.

    IoU_c = TP / (TP + FP + FN). mIoU averages only the classes with a non-empty union; the
    others have no IoU and no ``iou/<name>`` key. Pixel accuracy = trace / sum.
    """
    _check_names(class_names, cm.num_classes, "class")
    bad_truth, bad_pred = cm.invalid.tolist()
    c = cm.num_classes
    if bad_truth:
        raise ValueError(f"{bad_truth} target labels outside [0, {c}) other than {cm.ignore_index}")
    if bad_pred:
        raise ValueError(f"{bad_pred} predicted labels outside [0, {c})")
    matrix = cm.matrix.detach().to("cpu", torch.float64)
    total = matrix.sum()
    if total == 0:
        raise ValueError("no pixels counted")
    tp = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    iou = tp / union.clamp(min=1)
    result = {
        "miou": float(iou[present].mean()),
        "pixel_accuracy": float(tp.sum() / total),
    }
    for name, value, ok in zip(class_names, iou.tolist(), present.tolist(), strict=True):
        if ok:
            result[f"iou/{name}"] = value
    return result


@dataclass
class BinaryIoU:
    """Paper protocol: per-image IoU of each binary per-class task, summed over the split.

    Class k is the binary task "pixel is k": prediction = probability of channel k ≥ 0.5, truth =
    (target == k). ``ignore_as_negative=True`` (default, the reference's behaviour) leaves pixels
    with target == ignore_index in the image as negatives, so a positive prediction there is a
    false positive; ``False`` drops them from both prediction and truth.
    """

    iou_sum: Tensor
    image_count: Tensor
    ignore_index: int = -1
    ignore_as_negative: bool = True

    @classmethod
    def zeros(
        cls,
        num_classes: int,
        ignore_index: int = -1,
        ignore_as_negative: bool = True,
        device: torch.device | str | None = None,
    ) -> BinaryIoU:
        """Empty per-class sums (float64) and image counts (int64) kept on ``device``."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a valid class id")
        return cls(
            torch.zeros(num_classes, dtype=torch.float64, device=device),
            torch.zeros(num_classes, dtype=torch.int64, device=device),
            ignore_index,
            ignore_as_negative,
        )

    @property
    def num_classes(self) -> int:
        return self.iou_sum.numel()

    def update(self, probabilities: Tensor, target: Tensor) -> None:
        """Add a batch: class ``probabilities`` (B, C, H, W) and integer ``target`` (B, H, W)."""
        if probabilities.dim() != 4 or target.dim() != 3:
            raise ValueError(
                "probabilities must be (B, C, H, W) and target (B, H, W), got "
                f"{tuple(probabilities.shape)} and {tuple(target.shape)}"
            )
        b, c, h, w = probabilities.shape
        if c != self.num_classes or tuple(target.shape) != (b, h, w):
            raise ValueError(
                f"expected {self.num_classes} channels and target {(b, h, w)}, got "
                f"{c} and {tuple(target.shape)}"
            )
        classes = torch.arange(c, device=target.device).view(1, c, 1, 1)
        truth = target.unsqueeze(1) == classes
        pred = probabilities >= THRESHOLD
        if not self.ignore_as_negative:
            pred = pred & (target != self.ignore_index).unsqueeze(1)
        intersection = (pred & truth).sum((2, 3))
        union = (pred | truth).sum((2, 3))
        counted = union > 0
        iou = intersection.double() / union.clamp(min=1).double()
        device = self.iou_sum.device
        self.iou_sum += torch.where(counted, iou, 0.0).sum(0).to(device)
        self.image_count += counted.sum(0).to(device)

    def merge(self, other: BinaryIoU) -> BinaryIoU:
        """Sums over the union of both (disjoint) image sets."""
        if (
            other.num_classes != self.num_classes
            or other.ignore_index != self.ignore_index
            or other.ignore_as_negative != self.ignore_as_negative
        ):
            raise ValueError("cannot merge binary IoU accumulators with different settings")
        device = self.iou_sum.device
        return BinaryIoU(
            self.iou_sum + other.iou_sum.to(device),
            self.image_count + other.image_count.to(device),
            self.ignore_index,
            self.ignore_as_negative,
        )


def binary_iou_metrics(acc: BinaryIoU, class_names: Sequence[str]) -> dict[str, float]:
    """``binary_iou`` (mean over classes) and ``binary_iou/<name>`` (mean over counted images).

    A class with no counted image (empty union everywhere) has no key and is left out of the
    mean, as for the standard mIoU.
    """
    _check_names(class_names, acc.num_classes, "class")
    sums = acc.iou_sum.detach().to("cpu", torch.float64)
    counts = acc.image_count.detach().to("cpu", torch.float64)
    present = counts > 0
    if not bool(present.any()):
        raise ValueError("no image with a non-empty union counted")
    per_class = sums / counts.clamp(min=1)
    result = {"binary_iou": float(per_class[present].mean())}
    for name, value, ok in zip(class_names, per_class.tolist(), present.tolist(), strict=True):
        if ok:
            result[f"binary_iou/{name}"] = value
    return result


@dataclass
class DepthErrors:
    """Depth error sums over the valid pixels (gt ≠ 0) of a split, in float64."""

    abs_sum: Tensor
    rel_sum: Tensor
    valid: Tensor

    @classmethod
    def zeros(cls, device: torch.device | str | None = None) -> DepthErrors:
        """Empty sums kept on ``device``."""

        def zero(dtype: torch.dtype) -> Tensor:
            return torch.zeros((), dtype=dtype, device=device)

        return cls(zero(torch.float64), zero(torch.float64), zero(torch.int64))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true depths of the same shape, e.g. (B, 1, H, W)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        valid = target != 0
        gt = torch.where(valid, target.double(), 1.0)
        err = torch.where(valid, (pred.double() - gt).abs(), 0.0)
        device = self.valid.device
        self.abs_sum += err.sum().to(device)
        self.rel_sum += (err / gt).sum().to(device)
        self.valid += valid.sum().to(device)

    def merge(self, other: DepthErrors) -> DepthErrors:
        """Sums over the union of both (disjoint) pixel sets."""
        device = self.valid.device
        return DepthErrors(
            self.abs_sum + other.abs_sum.to(device),
            self.rel_sum + other.rel_sum.to(device),
            self.valid + other.valid.to(device),
        )


def depth_metrics(errors: DepthErrors) -> dict[str, float]:
    """``abs_err`` = Σ|pred−gt|/#valid and ``rel_err`` = Σ(|pred−gt|/gt)/#valid over the split.

    Pooled over all valid pixels of the split *(decision: the reference averages per-batch values,
    which weights batches with few valid pixels like full ones)*.
    """
    n = int(errors.valid)
    if n == 0:
        raise ValueError("no valid depth pixels counted")
    return {"abs_err": float(errors.abs_sum) / n, "rel_err": float(errors.rel_sum) / n}


NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)
NORMAL_BIN_DEG = 0.01
_NORMAL_BINS = round(180.0 / NORMAL_BIN_DEG)


def normal_angles(pred: Tensor, target: Tensor) -> Tensor:
    """Angles in degrees (float64) at the valid pixels (gt vector ≠ 0) of (B, 3, H, W) maps.

    Both vectors are L2-normalised (a zero prediction gives 90°) and the dot product clamped to
    [−1, 1]; float64 keeps arccos accurate near 0°, where float32 loses ~0.03°.
    """
    angles, valid = _angles_and_validity(pred, target)
    return angles[valid]


def _angles_and_validity(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`normal_angles` at every pixel, (B, H, W), and which pixels are valid."""
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(
            "pred and target must both have shape (B, 3, H, W), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    valid = (target != 0).any(1)
    p = torch.nn.functional.normalize(pred.double(), dim=1)
    g = torch.nn.functional.normalize(target.double(), dim=1)
    dot = (p * g).sum(1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(dot)), valid


@dataclass
class NormalErrors:
    """Angular-error statistics over the valid normal pixels of a split.

    Keeps the exact sum, count and threshold counts, plus a histogram of 0.01° bins from which the
    median is read (within 0.005° of the exact median) without storing every angle.
    """

    angle_sum: Tensor
    count: Tensor
    within: Tensor
    histogram: Tensor

    @classmethod
    def zeros(cls, device: torch.device | str | None = None) -> NormalErrors:
        """Empty statistics kept on ``device``."""
        return cls(
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
            torch.zeros(len(NORMAL_THRESHOLDS), dtype=torch.int64, device=device),
            torch.zeros(_NORMAL_BINS, dtype=torch.int64, device=device),
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true normal maps, both (B, 3, H, W)."""
        angles, valid = _angles_and_validity(pred, target)
        self._add(angles.flatten(), valid.flatten())

    def add_angles(self, angles: Tensor) -> None:
        """Add already-computed angles in degrees (any shape)."""
        angles = angles.detach().double().flatten()
        self._add(angles, torch.ones_like(angles, dtype=torch.bool))

    def _add(self, angles: Tensor, valid: Tensor) -> None:
        """Add the ``valid`` ones of ``angles`` (flat), without reading them on the host."""
        device = self.count.device
        bins = (angles / NORMAL_BIN_DEG).floor().long().clamp(0, _NORMAL_BINS - 1)
        bins = torch.where(valid, bins, _NORMAL_BINS)  # one extra bin for invalid pixels
        counts = torch.zeros(_NORMAL_BINS + 1, dtype=torch.int64, device=angles.device)
        counts.index_add_(0, bins, torch.ones_like(bins))
        self.histogram += counts[:_NORMAL_BINS].to(device)
        self.angle_sum += torch.where(valid, angles, 0.0).sum().to(device)
        self.count += valid.sum().to(device)
        # Compared with Python numbers: a tensor of the thresholds would be a copy to the
        # device, which waits for it, every batch.
        within = torch.stack([angles < t for t in NORMAL_THRESHOLDS], 1) & valid.unsqueeze(1)
        self.within += within.sum(0).to(device)

    def merge(self, other: NormalErrors) -> NormalErrors:
        """Statistics of the union of both (disjoint) pixel sets."""
        device = self.count.device
        return NormalErrors(
            self.angle_sum + other.angle_sum.to(device),
            self.count + other.count.to(device),
            self.within + other.within.to(device),
            self.histogram + other.histogram.to(device),
        )


def normal_metrics(errors: NormalErrors) -> dict[str, float]:
    """``mean``, ``median`` (degrees) and ``within_<t>`` (percent of pixels with angle < t).

    The median is numpy's (mean of the two middle angles for an even count), each middle angle
    taken as the centre of its 0.01° bin: at most 0.005° off.
    """
    n = int(errors.count)
    if n == 0:
        raise ValueError("no valid normal pixels counted")
    cumulative = errors.histogram.detach().cpu().cumsum(0)
    ranks = torch.tensor([(n + 1) // 2, n // 2 + 1])  # 1-based middle ranks; equal when n is odd
    centres = (torch.searchsorted(cumulative, ranks).double() + 0.5) * NORMAL_BIN_DEG
    result = {
        "mean": float(errors.angle_sum) / n,
        "median": float(centres.mean()),
    }
    for threshold, k in zip(NORMAL_THRESHOLDS, errors.within.tolist(), strict=True):
        result[f"within_{threshold:g}"] = 100.0 * k / n
    return result


# Δm (docs/protocol.md §7). All three return percent. With s_k = +1 if metric k is
# higher-is-better else −1 and r_k = s_k (m_k − b_k) / b_k (the signed relative *improvement*
# of MTL value m over the STL baseline b):
#   (a) delta_m_metrics = −100 · mean_k r_k               lower = better (CAGrad/Nash-MTL/FAMO)
#   (b) delta_m_tasks   = 100 · mean_t mean_{k∈t} r_k     higher = better (LibMTL Δp)
#   (c) delta_m_single  = 100 · mean_t r_{k(t)}           higher = better (Maninis/Vandenhende)


def _relative_improvement(
    metric: str,
    mtl: Mapping[str, float],
    stl: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    for source, values in (("MTL", mtl), ("STL", stl), ("higher_is_better", higher_is_better)):
        if metric not in values:
            raise ValueError(f"metric {metric!r} missing from the {source} values")
    base = float(stl[metric])
    if base == 0 or not math.isfinite(base):
        raise ValueError(f"STL baseline of {metric!r} is {base}: relative change undefined")
    sign = 1.0 if higher_is_better[metric] else -1.0
    return sign * (float(mtl[metric]) - base) / base


def delta_m_metrics(
    mtl: Mapping[str, float],
    stl: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Convention (a): flat mean over every metric in ``higher_is_better``; lower = better.

    E.g. NYUv2 has 9 metrics, 5 of them normals, so normals carry 5/9 of the weight.
    """
    if not higher_is_better:
        raise ValueError("no metrics given")
    terms = [_relative_improvement(k, mtl, stl, higher_is_better) for k in higher_is_better]
    return -100.0 * sum(terms) / len(terms)


def delta_m_tasks(
    mtl: Mapping[str, float],
    stl: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
    task_metrics: Mapping[str, Sequence[str]],
) -> float:
    """Convention (b): mean within each task of ``task_metrics``, then over tasks; higher better."""
    if not task_metrics:
        raise ValueError("no tasks given")
    per_task = []
    for task, metrics in task_metrics.items():
        if isinstance(metrics, str) or not metrics:
            raise ValueError(f"task {task!r} needs a non-empty sequence of metric names")
        terms = [_relative_improvement(k, mtl, stl, higher_is_better) for k in metrics]
        per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task)


def delta_m_single(
    mtl: Mapping[str, float],
    stl: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
    task_metric: Mapping[str, str],
) -> float:
    """Convention (c): mean over tasks of their one metric in ``task_metric``; higher = better."""
    if not task_metric:
        raise ValueError("no tasks given")
    terms = [_relative_improvement(k, mtl, stl, higher_is_better) for k in task_metric.values()]
    return 100.0 * sum(terms) / len(terms)
