"""Training and evaluation on the synthetic CityScapes and NYUv2 (SegNet, dense task sets)."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from roaming.evaluate import evaluate
from roaming.train import TrainConfig, train

TINY = {"batch_size": 8, "width": 0.125, "lr": 5e-3, "device": "cpu"}


def _run(data, out, method, **options):
    train(TrainConfig(data=data, method=method, out=out, **(TINY | options)), progress=False)
    return evaluate(out, data, "test", out / "test.json", device="cpu")


def _majority_share(data) -> float:
    with h5py.File(data) as file:
        seg = file["test/seg"][()]
    labels = seg[seg >= 0]
    return np.bincount(labels).max() / labels.size


@pytest.mark.parametrize("dataset", ["cityscapes", "nyuv2"])
@pytest.mark.parametrize("task_set", ["paper", "standard"])
def test_mtl_learns_segmentation_and_depth(request, tmp_path, dataset, task_set):
    data = request.getfixturevalue(f"{dataset}_h5")
    metrics = _run(data, tmp_path / "run", "mtl", epochs=8, task_set=task_set)
    assert metrics["pixel_accuracy"] > _majority_share(data) + 0.2
    assert ("binary_iou" in metrics) == (task_set == "paper")
    assert ("normal_mean" in metrics) == (dataset == "nyuv2")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert set(history.split) == {"train", "test"}
    train_loss = history[history.split == "train"].loss
    assert train_loss.iloc[-1] < 0.5 * train_loss.iloc[0]


@pytest.mark.parametrize(("interval", "evaluated"), [(None, [5, 6]), (2, [2, 4, 6])])
def test_dense_runs_are_evaluated_every_five_epochs_and_after_the_last(
    cityscapes_h5, tmp_path, interval, evaluated
):
    """The reference evaluates CityScapes and NYUv2 every 5 epochs; the last epoch always."""
    options = {} if interval is None else {"eval_interval": interval}
    train(
        TrainConfig(data=cityscapes_h5, method="mtl", out=tmp_path, epochs=6, **TINY, **options),
        progress=False,
    )
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history[history.split == "train"].epoch) == [1, 2, 3, 4, 5, 6]
    assert list(history[history.split == "test"].epoch) == evaluated


@pytest.mark.parametrize(("method", "steps"), [("tr", "joint"), ("mr", "joint"), ("mr", "fused")])
def test_masked_segnet_runs_and_roams_at_epoch_ends(nyuv2_h5, tmp_path, method, steps):
    metrics = _run(nyuv2_h5, tmp_path / method, method, epochs=3, sharing=0.5, task_steps=steps)
    assert {"miou", "depth_abs_err", "normal_mean"} <= set(metrics)
    with h5py.File(tmp_path / method / "masks.h5") as file:
        assert len(file) == 26
        iterations = file["encoder.0.0/iterations"][()]
    batches = 64 // 8
    # Δ = 1 epoch: an event at the end of epochs 1 and 2 (0-based), none after epoch 0.
    expected = [0, 2 * batches, 3 * batches] if method == "mr" else [0]
    assert list(iterations) == expected


@pytest.mark.parametrize("method", ["gradnorm", "mgda", "se"])
def test_baselines_train_on_segnet(nyuv2_h5, tmp_path, method):
    """GradNorm measures the last decoder conv, MGDA-UB differentiates the last decoder map,
    SE-MTL excites every SegNet block; all learn segmentation on the standard task set."""
    metrics = _run(nyuv2_h5, tmp_path / method, method, epochs=4, task_set="standard")
    assert metrics["pixel_accuracy"] > _majority_share(nyuv2_h5) + 0.1
    history = pd.read_csv(tmp_path / method / "history.csv")
    weights = history[history.split == "train"].filter(like="weight/")
    assert list(weights.columns) == (
        [] if method == "se" else ["weight/seg", "weight/depth", "weight/normals"]
    )
    if method == "mgda":  # mean α over each epoch: on the simplex
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    if method == "gradnorm":
        np.testing.assert_allclose(weights.sum(axis=1), 3.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("dataset", "task_set", "task", "key"),
    [("cityscapes", "paper", k, "binary_iou") for k in range(7)]
    + [
        ("cityscapes", "paper", 7, "depth_abs_err"),
        ("nyuv2", "standard", 0, "miou"),
        ("nyuv2", "standard", 1, "depth_rel_err"),
        ("nyuv2", "standard", 2, "normal_median"),
    ],
)
def test_single_task_runs_cover_every_task_of_the_set(
    request, tmp_path, dataset, task_set, task, key
):
    data = request.getfixturevalue(f"{dataset}_h5")
    metrics = _run(data, tmp_path / "stl", "stl", epochs=1, task=task, task_set=task_set)
    assert key in metrics


def test_cli_writes_and_prepares_dense_fixtures(tmp_path, capsys):
    from roaming.cli import main

    main(["fixtures", "cityscapes", "--out", str(tmp_path / "raw"), "--n-train", "4"])
    main(["prepare", "cityscapes", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "c.h5"),
          "--size", "64", "128", "--quiet"])  # fmt: skip
    with h5py.File(tmp_path / "c.h5") as file:
        assert file["train/seg"].shape == (4, 64, 128)
        assert file["test/depth"].shape == (16, 64, 128)
    for arguments, message in [
        (["prepare", "celeba", "--raw", str(tmp_path / "raw"), "--out", "x.h5", "--depth", "raw"],
         "--depth applies to cityscapes and nyuv2 only"),
        (["prepare", "nyuv2", "--raw", str(tmp_path / "raw"), "--out", "x.h5", "--size", "32"],
         "--size H W"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(arguments)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
