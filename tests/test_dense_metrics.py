"""Tests of the dense-task metrics (segmentation, depth, normals) and the three Δm conventions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roaming.metrics import (
    NORMAL_BIN_DEG,
    BinaryIoU,
    ConfusionMatrix,
    DepthErrors,
    NormalErrors,
    binary_iou_metrics,
    delta_m_metrics,
    delta_m_single,
    delta_m_tasks,
    depth_metrics,
    normal_angles,
    normal_metrics,
    segmentation_metrics,
)

MEDIAN_TOL = NORMAL_BIN_DEG / 2 + 1e-9

# ---------------------------------------------------------------------------- segmentation


def test_confusion_matrix_hand_computed_with_ignore() -> None:
    target = torch.tensor([[[0, 0, 1], [2, -1, 1]]])
    pred = torch.tensor([[[0, 1, 1], [2, 0, 0]]])  # the ignored pixel is predicted 0: not counted
    cm = ConfusionMatrix.zeros(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    m = segmentation_metrics(cm, ["a", "b", "c"])
    # IoU_a = 1/(2+2-1), IoU_b = 1/3, IoU_c = 1/1; pixel accuracy = 3 of 5 counted pixels.
    assert m == pytest.approx(
        {"miou": 5 / 9, "pixel_accuracy": 3 / 5, "iou/a": 1 / 3, "iou/b": 1 / 3, "iou/c": 1.0}
    )
    assert all(type(v) is float for v in m.values())


def test_confusion_matrix_class_with_empty_union_left_out() -> None:
    target = torch.tensor([[[0, 0, 1], [2, -1, 1]]])
    pred = torch.tensor([[[0, 1, 1], [2, 0, 0]]])
    cm = ConfusionMatrix.zeros(4)
    cm.update(pred, target)
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    assert "iou/d" not in m
    assert m["miou"] == pytest.approx(5 / 9)


def test_confusion_matrix_rejects_bad_labels_and_empty() -> None:
    # Bad labels are counted where the data is and reported with the split's metrics.
    bad_target, bad_pred = ConfusionMatrix.zeros(3), ConfusionMatrix.zeros(3)
    bad_target.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[3, 0], [-1, 1]]]))
    bad_pred.update(torch.full((1, 2, 2), -2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="1 target labels outside"):
        segmentation_metrics(bad_target, ["a", "b", "c"])
    with pytest.raises(ValueError, match="4 predicted labels outside"):
        segmentation_metrics(ConfusionMatrix.zeros(3).merge(bad_pred), ["a", "b", "c"])
    assert bad_target.matrix.sum() == 2  # the valid pixels still count; the ignored one not
    cm = ConfusionMatrix.zeros(3)
    with pytest.raises(ValueError, match="valid class id"):
        ConfusionMatrix.zeros(3, ignore_index=1)
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match="no pixels"):
        segmentation_metrics(cm, ["a", "b", "c"])


def test_miou_matches_torchmetrics() -> None:
    import torchmetrics as tm

    gen = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (4, 16, 16), generator=gen)
    pred = torch.randint(0, 5, (4, 16, 16), generator=gen)
    cm = ConfusionMatrix.zeros(5)
    cm.update(pred, target)
    ours = segmentation_metrics(cm, list("abcde"))
    ref = tm.classification.MulticlassJaccardIndex(num_classes=5, ignore_index=-1, average="none")
    per_class = ref(pred, target)
    assert [ours[f"iou/{c}"] for c in "abcde"] == pytest.approx(per_class.tolist(), abs=1e-6)
    assert ours["miou"] == pytest.approx(float(per_class.mean()), abs=1e-6)
    accuracy = tm.classification.MulticlassAccuracy(
        num_classes=5, ignore_index=-1, average="micro"
    )(pred, target)
    assert ours["pixel_accuracy"] == pytest.approx(float(accuracy), abs=1e-6)


# ---------------------------------------------------------------------------- binary IoU


def binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.tensor([[[0, 0, 1, -1]], [[0, 0, 0, 0]]])
    probabilities = torch.tensor(
        [
            [[[0.9, 0.2, 0.6, 0.7]], [[0.1, 0.1, 0.5, 0.0]]],
            [[[0.9, 0.9, 0.1, 0.1]], [[0.1, 0.1, 0.1, 0.1]]],
        ]
    )
    return probabilities, target


def test_binary_iou_hand_computed() -> None:
    probabilities, target = binary_case()
    acc = BinaryIoU.zeros(2)
    acc.update(probabilities, target)
    # class 0: image 0 pred {0,2,3} (3 = ignored, counted as a false positive), truth {0,1}:
    # 1/4; image 1 pred {0,1}, truth all: 2/4. class 1: image 0 is 1/1 (0.5 counts as positive);
    # image 1 has an empty union and is skipped, so class 1 averages over one image.
    assert acc.image_count.tolist() == [2, 1]
    m = binary_iou_metrics(acc, ["a", "b"])
    assert m == pytest.approx({"binary_iou": 0.6875, "binary_iou/a": 0.375, "binary_iou/b": 1.0})


def test_binary_iou_ignore_excluded_option() -> None:
    probabilities, target = binary_case()
    acc = BinaryIoU.zeros(2, ignore_as_negative=False)
    acc.update(probabilities, target)
    m = binary_iou_metrics(acc, ["a", "b"])
    assert m["binary_iou/a"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_binary_iou_class_never_counted_left_out() -> None:
    target = torch.zeros(2, 2, 2, dtype=torch.long)
    probabilities = torch.stack([torch.ones(2, 2, 2), torch.zeros(2, 2, 2)], dim=1)
    acc = BinaryIoU.zeros(2)
    acc.update(probabilities, target)
    assert binary_iou_metrics(acc, ["a", "b"]) == {"binary_iou": 1.0, "binary_iou/a": 1.0}
    empty = BinaryIoU.zeros(2)
    empty.update(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match="non-empty union"):
        binary_iou_metrics(empty, ["a", "b"])


# ---------------------------------------------------------------------------- depth


def test_depth_hand_computed_invalid_pixels_and_pooling() -> None:
    errors = DepthErrors.zeros()
    errors.update(
        torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]]), torch.tensor([[[[2.0, 0.0, 1.0, 4.0]]]])
    )
    # valid: gt 2, 1, 4 with errors 1, 2, 0; the gt = 0 pixel (error 2) is not counted.
    assert depth_metrics(errors) == pytest.approx({"abs_err": 1.0, "rel_err": 2.5 / 3})
    errors.update(torch.tensor([[[[5.0, 9.0]]]]), torch.tensor([[[[1.0, 0.0]]]]))
    # pooled over 4 valid pixels, not the mean of the two batch values (1 and 4).
    assert depth_metrics(errors) == pytest.approx({"abs_err": 7 / 4, "rel_err": 6.5 / 4})


def test_depth_no_valid_pixels_raises() -> None:
    errors = DepthErrors.zeros()
    errors.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="no valid depth"):
        depth_metrics(errors)


# ---------------------------------------------------------------------------- normals


def normals_at(degrees: list[float], scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, N) maps: gt = 3·z (not unit, so both must be normalised), pred at each angle."""
    theta = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    pred = scale * torch.stack([torch.sin(theta), torch.zeros_like(theta), torch.cos(theta)])
    gt = torch.zeros_like(pred)
    gt[2] = 3.0
    return pred.view(1, 3, 1, -1), gt.view(1, 3, 1, -1)


def test_normals_hand_computed_with_invalid_pixel() -> None:
    pred, gt = normals_at([0.0, 10.0, 20.0, 45.0, 90.0, 180.0])
    gt[..., -1] = 0.0  # the 180° pixel has no ground truth
    errors = NormalErrors.zeros()
    errors.update(pred.float(), gt.float())
    assert int(errors.count) == 5
    m = normal_metrics(errors)
    assert m["mean"] == pytest.approx(33.0, abs=1e-4)
    assert m["median"] == pytest.approx(20.0, abs=MEDIAN_TOL + 1e-4)
    assert m["within_11.25"] == pytest.approx(40.0)
    assert m["within_22.5"] == pytest.approx(60.0)
    assert m["within_30"] == pytest.approx(60.0)


def test_normals_zero_prediction_is_90_degrees_and_even_median() -> None:
    pred, gt = normals_at([0.0, 30.0, 60.0, 90.0])
    pred[..., 1] = 0.0  # a zero prediction at a valid pixel
    angles = normal_angles(pred, gt)
    assert angles.tolist() == pytest.approx([0.0, 90.0, 60.0, 90.0], abs=1e-9)
    errors = NormalErrors.zeros()
    errors.update(pred, gt)
    assert normal_metrics(errors)["median"] == pytest.approx(75.0, abs=MEDIAN_TOL)


def test_normals_no_valid_pixels_raises() -> None:
    errors = NormalErrors.zeros()
    errors.update(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="no valid normal"):
        normal_metrics(errors)


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        st.floats(0.0, 180.0, allow_nan=False) | st.sampled_from([0.0, 11.25, 22.5, 180.0]),
        min_size=1,
        max_size=60,
    )
)
def test_histogram_median_within_half_bin(angles: list[float]) -> None:
    errors = NormalErrors.zeros()
    errors.add_angles(torch.tensor(angles, dtype=torch.float64))
    m = normal_metrics(errors)
    assert abs(m["median"] - float(np.median(angles))) <= MEDIAN_TOL
    assert m["mean"] == pytest.approx(float(np.mean(angles)))
    assert m["within_11.25"] == pytest.approx(100 * float(np.mean(np.array(angles) < 11.25)))


# ---------------------------------------------------------------------------- batch splits


@st.composite
def splits(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A seed for random data of 8 images and sorted cut points splitting them into batches."""
    seed = draw(st.integers(0, 2**31 - 1))
    cuts = sorted(draw(st.lists(st.integers(1, 7), max_size=4, unique=True)))
    return seed, cuts


def batches(n: int, cuts: list[int]) -> list[slice]:
    edges = [0, *cuts, n]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def dense_data(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (8, 5, 6)
    depth_gt = torch.rand(shape, generator=gen) * 5
    depth_gt[torch.rand(shape, generator=gen) < 0.3] = 0.0
    normal_gt = torch.randn(8, 3, 5, 6, generator=gen)
    normal_gt[:, :, torch.rand(5, 6, generator=gen) < 0.3] = 0.0
    return {
        "labels": torch.randint(-1, 4, shape, generator=gen),
        "pred_labels": torch.randint(0, 4, shape, generator=gen),
        "probabilities": torch.rand(8, 4, 5, 6, generator=gen),
        "depth_gt": depth_gt,
        "depth_pred": torch.rand(shape, generator=gen) * 5,
        "normal_gt": normal_gt,
        "normal_pred": torch.randn(8, 3, 5, 6, generator=gen),
    }


def all_metrics(data: dict[str, torch.Tensor], parts: list[slice]) -> dict[str, float]:
    cm, biou = ConfusionMatrix.zeros(4), BinaryIoU.zeros(4)
    depth, normals = DepthErrors.zeros(), NormalErrors.zeros()
    for s in parts:
        cm.update(data["pred_labels"][s], data["labels"][s])
        biou.update(data["probabilities"][s], data["labels"][s])
        depth.update(data["depth_pred"][s], data["depth_gt"][s])
        normals.update(data["normal_pred"][s], data["normal_gt"][s])
    names = list("abcd")
    return {
        **{f"seg/{k}": v for k, v in segmentation_metrics(cm, names).items()},
        **{f"bin/{k}": v for k, v in binary_iou_metrics(biou, names).items()},
        **{f"depth/{k}": v for k, v in depth_metrics(depth).items()},
        **{f"normal/{k}": v for k, v in normal_metrics(normals).items()},
    }


@settings(deadline=None, max_examples=40)
@given(splits())
def test_batch_split_invariance(case: tuple[int, list[int]]) -> None:
    seed, cuts = case
    data = dense_data(seed)
    one_shot = all_metrics(data, [slice(0, 8)])
    assert all_metrics(data, batches(8, cuts)) == pytest.approx(one_shot, rel=1e-12, abs=1e-12)


@settings(deadline=None, max_examples=20)
@given(splits())
def test_merge_equals_one_shot(case: tuple[int, list[int]]) -> None:
    seed, cuts = case
    data = dense_data(seed)
    cut = cuts[0] if cuts else 4
    halves = []
    for s in (slice(0, cut), slice(cut, 8)):
        accs = (ConfusionMatrix.zeros(4), BinaryIoU.zeros(4), DepthErrors.zeros())
        accs[0].update(data["pred_labels"][s], data["labels"][s])
        accs[1].update(data["probabilities"][s], data["labels"][s])
        accs[2].update(data["depth_pred"][s], data["depth_gt"][s])
        normals = NormalErrors.zeros()
        normals.update(data["normal_pred"][s], data["normal_gt"][s])
        halves.append((*accs, normals))
    (cm, biou, depth, normals), (cm2, biou2, depth2, normals2) = halves
    names = list("abcd")
    merged = {
        **{f"seg/{k}": v for k, v in segmentation_metrics(cm.merge(cm2), names).items()},
        **{f"bin/{k}": v for k, v in binary_iou_metrics(biou.merge(biou2), names).items()},
        **{f"depth/{k}": v for k, v in depth_metrics(depth.merge(depth2)).items()},
        **{f"normal/{k}": v for k, v in normal_metrics(normals.merge(normals2)).items()},
    }
    assert merged == pytest.approx(all_metrics(data, [slice(0, 8)]), rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------- Δm

MTL = {"miou": 0.55, "pix": 0.72, "abs_err": 0.30, "rel_err": 0.25, "mean": 22.0, "loss": 1.0}
STL = {"miou": 0.50, "pix": 0.80, "abs_err": 0.40, "rel_err": 0.20, "mean": 20.0}
HIGHER = {"miou": True, "pix": True, "abs_err": False, "rel_err": False, "mean": False}
TASKS = {"seg": ["miou", "pix"], "depth": ["abs_err", "rel_err"], "normal": ["mean"]}
PRIMARY = {"seg": "miou", "depth": "abs_err", "normal": "mean"}


def test_delta_m_hand_computed_signs() -> None:
    # signed relative improvements: miou +0.1, pix -0.1, abs_err +0.25, rel_err -0.25, mean -0.1
    # (a) flat mean -0.02 -> +2.0 (a drop: worse); (b) tasks 0, 0, -0.1 -> -3.33 (worse);
    # (c) +0.1, +0.25, -0.1 -> +8.33 (better). The extra "loss" key in MTL is ignored.
    assert delta_m_metrics(MTL, STL, HIGHER) == pytest.approx(2.0)
    assert delta_m_tasks(MTL, STL, HIGHER, TASKS) == pytest.approx(-10 / 3)
    assert delta_m_single(MTL, STL, HIGHER, PRIMARY) == pytest.approx(25 / 3)


def test_delta_m_identical_runs_are_zero() -> None:
    assert delta_m_metrics(STL, STL, HIGHER) == 0.0
    assert delta_m_tasks(STL, STL, HIGHER, TASKS) == 0.0
    assert delta_m_single(STL, STL, HIGHER, PRIMARY) == 0.0


def test_delta_m_errors() -> None:
    with pytest.raises(ValueError, match="missing from the MTL"):
        delta_m_metrics({k: v for k, v in MTL.items() if k != "pix"}, STL, HIGHER)
    with pytest.raises(ValueError, match="missing from the STL"):
        delta_m_tasks(MTL, {k: v for k, v in STL.items() if k != "mean"}, HIGHER, TASKS)
    with pytest.raises(ValueError, match="missing from the higher_is_better"):
        delta_m_single(MTL, STL, {"miou": True}, PRIMARY)
    with pytest.raises(ValueError, match="baseline"):
        delta_m_metrics(MTL, {**STL, "abs_err": 0.0}, HIGHER)
    with pytest.raises(ValueError, match="baseline"):
        delta_m_single(MTL, {**STL, "mean": math.nan}, HIGHER, PRIMARY)
    with pytest.raises(ValueError, match="non-empty"):
        delta_m_tasks(MTL, STL, HIGHER, {**TASKS, "normal": []})
    with pytest.raises(ValueError, match="no metrics"):
        delta_m_metrics(MTL, STL, {})
