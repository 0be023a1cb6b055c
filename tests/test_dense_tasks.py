"""Dense task sets: head layout, losses on hand-built cases, and metrics from head outputs."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from host_copies import NoHostToDevice

from roaming.data.dense import CITYSCAPES_CLASSES, NYUV2_CLASSES
from roaming.errors import ConfigError
from roaming.tasks.dense import DenseTasks, dense_tasks

CLASSES = ["a", "b", "c"]


def _batch() -> dict[str, torch.Tensor]:
    seg = torch.tensor([[[0, 1], [2, -1]]], dtype=torch.int16)
    depth = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]])
    normals = torch.zeros(1, 2, 2, 3)
    normals[..., 2] = 1.0
    normals[0, 1, 1] = 0.0  # invalid pixel
    return {"images": torch.zeros(1, 3, 2, 2), "seg": seg, "depth": depth, "normals": normals}


def test_paper_and_standard_head_layouts():
    paper = dense_tasks({"class_names": CLASSES, "dataset": "nyuv2"}, None, "paper")
    assert paper.names == ["seg_a", "seg_b", "seg_c", "depth", "normals"]
    assert paper.head_sizes == [1, 1, 1, 1, 3]
    standard = dense_tasks({"class_names": CLASSES, "dataset": "cityscapes"}, None, "standard")
    assert standard.names == ["seg", "depth"] and standard.head_sizes == [3, 1]
    assert standard.fields == ("seg", "depth")
    with pytest.raises(ConfigError, match="--task-set must be one of"):
        DenseTasks(CLASSES, "fancy", normals=False)
    with pytest.raises(ConfigError, match=r"--task must be in 0\.\.4"):
        paper.select(5)


def test_depth_loss_is_l1_over_valid_pixels_only():
    tasks = DenseTasks(CLASSES, "standard", normals=True)
    prediction = torch.tensor([[[[2.0, 2.0], [100.0, 1.0]]]])
    # |2-1| + |2-2| + |1-4| over the 3 valid pixels; the invalid one (gt 0) is ignored.
    assert tasks.loss(1, prediction, _batch()).item() == pytest.approx(4 / 3)


def test_normal_loss_is_zero_for_the_true_direction_at_any_scale():
    tasks = DenseTasks(CLASSES, "standard", normals=True)
    prediction = torch.zeros(1, 3, 2, 2)
    prediction[:, 2] = 5.0
    assert tasks.loss(2, prediction, _batch()).item() == pytest.approx(0.0, abs=1e-6)
    prediction[:, 2] = -5.0
    assert tasks.loss(2, prediction, _batch()).item() == pytest.approx(2.0)


def test_paper_class_loss_treats_ignore_as_negative_and_standard_excludes_it():
    paper = DenseTasks(CLASSES, "paper", normals=False)
    logits = torch.zeros(1, 1, 2, 2)
    logits[0, 0, 1, 1] = 50.0  # confident "class a" on the ignored pixel: a paper-protocol error
    loss = paper.loss(0, logits, _batch()).item()
    assert loss > 10  # dominated by the ignored pixel counted as a negative
    standard = DenseTasks(CLASSES, "standard", normals=False)
    perfect = torch.full((1, 3, 2, 2), -50.0)
    perfect[0, 0, 0, 0] = perfect[0, 1, 0, 1] = perfect[0, 2, 1, 0] = 50.0
    assert standard.loss(0, perfect, _batch()).item() == pytest.approx(0.0, abs=1e-6)


def test_meter_stacks_the_per_class_heads_into_segmentation_metrics():
    tasks = DenseTasks(CLASSES, "paper", normals=False)
    meter = tasks.meter()
    batch = _batch()
    for class_index in range(3):
        logits = torch.where(batch["seg"] == class_index, 10.0, -10.0).float().unsqueeze(1)
        meter.update(class_index, logits, batch)
    meter.update(3, batch["depth"].unsqueeze(1) * 2, batch)
    metrics = meter.compute()
    assert metrics["miou"] == pytest.approx(1.0)
    assert metrics["pixel_accuracy"] == pytest.approx(1.0)
    assert metrics["binary_iou"] == pytest.approx(1.0)
    # Prediction 2·gt over the valid pixels: abs error mean(1, 2, 4) and relative error 1.
    assert metrics["depth_abs_err"] == pytest.approx(7 / 3)
    assert metrics["depth_rel_err"] == pytest.approx(1.0)


def test_single_class_run_reports_that_class_binary_iou():
    tasks = DenseTasks(CLASSES, "paper", normals=False).select(1)
    assert tasks.names == ["seg_b"]
    meter = tasks.meter()
    batch = _batch()
    meter.update(0, torch.where(batch["seg"] == 1, 10.0, -10.0).float().unsqueeze(1), batch)
    assert meter.compute() == {"binary_iou": pytest.approx(1.0), "binary_iou/b": pytest.approx(1.0)}


@pytest.mark.parametrize(("dataset", "task_set"), [("nyuv2", "paper"), ("cityscapes", "standard")])
def test_meters_and_losses_never_read_the_device_per_batch(dataset, task_set):
    """On the meta device every host read (``.item()``, ``bool()``, boolean indexing,
    ``bincount``) raises: updating a meter and computing losses must not need one,
    nor, after the first batch, a copy of host data to the device."""
    tasks = DenseTasks(
        list(NYUV2_CLASSES if dataset == "nyuv2" else CITYSCAPES_CLASSES),
        task_set,
        dataset == "nyuv2",
    )
    meta = torch.device("meta")
    batch = {
        "seg": torch.empty(2, 8, 16, dtype=torch.int16, device=meta),
        "depth": torch.empty(2, 8, 16, device=meta),
        "normals": torch.empty(2, 8, 16, 3, device=meta),
    }
    meter = tasks.meter()
    for guard in (nullcontext(), NoHostToDevice()):
        with guard:
            for t, size in enumerate(tasks.head_sizes):
                output = torch.empty(2, size, 8, 16, device=meta)
                assert tasks.loss(t, output, batch).device == meta
                meter.update(t, output, batch)
    assert meter.confusion.matrix.device == meta
