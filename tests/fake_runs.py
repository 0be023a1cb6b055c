"""Hand-written run directories for the report tests: config.json, metrics, history, masks.

Each run directory follows the README's run directory contract, with metric values chosen by the
test, so that tables, Δm and claims can be checked against numbers computed by hand. Masks are
real roaming sequences (``roaming.masks``), so Lemma 1 holds in them as in a trained run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from roaming import grid, masks
from roaming.config import RunConfig
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUPS
from roaming.data.dense import CITYSCAPES_CLASSES

CELEBA_METRICS = ("precision", "recall", "fscore", "accuracy")
ALL_ATTRIBUTES = [index for group in TASK_GROUPS for index in group]
EPOCHS = 3


def config(method: str, seed: int, dataset: str = "celeba", **options: Any) -> dict[str, Any]:
    """A config.json as `roaming train` writes it (options that do not apply are null)."""
    values = {
        "dataset": dataset,
        "data": f"data/processed/demo/{dataset}.h5",
        "data_fingerprint": "abc123def4567890",
        "method": method,
        "model": "resnet18" if dataset == "celeba" else "segnet",
        "sharing": None,
        "update_interval": None,
        "update_clock": None,
        "strategy": None,
        "update_ratio": None,
        "task_steps": None,
        "epochs": EPOCHS,
        "batch_size": 32,
        "lr": 0.001,
        "width": 0.125,
        "seed": seed,
        "task": None,
        "alpha": None,
        "task_set": "paper",
        "bn": "batch",
        "device": "cpu",
        "threads": 1,
        "code": "0123456789abcdef",
        "version": "0.1.0",
        "data_source": None,  # runs from before data sources were recorded
    }
    if method in ("tr", "mr", "se"):
        values["task_steps"] = "per_task"
    if method == "mr":
        values |= {"update_interval": 0.1, "strategy": "random", "update_ratio": 1.0}
        values["update_clock"] = "epoch_fraction" if dataset == "celeba" else "epochs"
    values.update(options)
    return RunConfig.from_dict(values).to_dict()


def celeba_metrics(value: float | Mapping[int, float], loss: float, attributes=None) -> dict:
    """Flat CelebA metrics: every attribute scores ``value`` (or ``value[index]``)."""
    attributes = ALL_ATTRIBUTES if attributes is None else attributes
    per = {i: (value[i] if isinstance(value, Mapping) else value) for i in attributes}
    mean = sum(per.values()) / len(per)
    metrics: dict[str, float] = {"loss": loss, **{m: mean for m in CELEBA_METRICS}}
    for index, v in per.items():
        for m in CELEBA_METRICS:
            metrics[f"{m}/{ATTRIBUTE_NAMES[index]}"] = v
    return metrics


def history(final: Mapping[str, float], eval_split: str, masked: bool, ratio: float = 1.0):
    """EPOCHS epochs of train and evaluation rows ending at ``final``'s headline values."""
    rows = []
    for epoch in range(1, EPOCHS + 1):
        scale = epoch / EPOCHS
        for split in ("train", eval_split):
            row: dict[str, Any] = {"epoch": epoch, "split": split, "iteration": 10 * epoch}
            if masked:
                row["update_progress"] = min(ratio, 0.4 * epoch)
            row |= {
                k: (v * scale if k != "loss" else v / scale)
                for k, v in final.items()
                if "/" not in k
            }
            row["seconds"] = 1.0 if split == "train" else 0.0
            rows.append(row)
    return pd.DataFrame(rows)


def write_masks(path: Path, seed: int, tasks: int = 8) -> None:
    """masks.h5 of two layers that roam until every (task, channel) pair was used."""
    generator = torch.Generator().manual_seed(seed)
    with h5py.File(path, "w") as file:
        for name, channels in (("layer1.0.conv1", 8), ("stem", 4)):
            mask = masks.initial_mask(tasks, channels, 0.5, generator)
            history = mask.clone()
            snapshots = [mask.clone()]
            while masks.can_roam(history):
                mask, history = masks.random_swap(mask, history, generator)
                snapshots.append(mask.clone())
            group = file.create_group(name)
            group.create_dataset("masks", data=torch.stack(snapshots).numpy())
            group.create_dataset("iterations", data=np.arange(len(snapshots)) * 4)


def write_run(root: Path, name: str, cfg: dict[str, Any], metrics: dict[str, float]) -> Path:
    """A run directory ``root/name`` with its config, test metrics, history (and masks)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / grid.CONFIG_FILE).write_text(json.dumps(cfg))
    torch.save({"config": cfg, "model": {}}, run_dir / grid.MODEL_FILE)
    grid.metrics_path(run_dir, "test").parent.mkdir()
    grid.metrics_path(run_dir, "test").write_text(json.dumps(metrics))
    masked = cfg["method"] in ("tr", "mr")
    eval_split = "val" if cfg["dataset"] == "celeba" else "test"
    ratio = cfg["update_ratio"] or 1.0
    history(metrics, eval_split, masked, ratio).to_csv(run_dir / "history.csv", index=False)
    if masked:
        tasks = 8 if cfg["dataset"] == "celeba" else len(grid.task_names(cfg["dataset"]))
        write_masks(run_dir / "masks.h5", cfg["seed"], tasks)
    return run_dir


def celeba_grid(root: Path, seeds=(0, 1), sweeps: bool = True) -> list[Path]:
    """STL for all 8 groups, MTL, GradNorm, MGDA-UB, SE, TR and MR at two sharing ratios and,
    with ``sweeps``, MR interval and progress sweeps at p = 0.5: the values below are what the
    tests check."""
    dirs = []
    for seed in seeds:
        for task, group in enumerate(TASK_GROUPS):
            # group t scores 0.1·(t+1) on seed 0, +0.02 on seed 1; its loss is t
            value = 0.1 * (task + 1) + 0.02 * seed
            metrics = celeba_metrics(value, float(task), list(group))
            dirs.append(
                write_run(root, f"stl/{task}_s{seed}", config("stl", seed, task=task), metrics)
            )
        for method, value in (("mtl", 0.5), ("gradnorm", 0.52), ("mgda", 0.54), ("se", 0.56)):
            options = {"alpha": 0.5} if method == "gradnorm" else {}
            metrics = celeba_metrics(value + 0.1 * seed, 0.3)
            dirs.append(
                write_run(root, f"{method}/s{seed}", config(method, seed, **options), metrics)
            )
        for p in (0.5, 0.9):
            tr = config("tr", seed, sharing=p)
            dirs.append(write_run(root, f"tr/p{p}_s{seed}", tr, celeba_metrics(p / 2, 0.4)))
            mr = config("mr", seed, sharing=p)
            dirs.append(write_run(root, f"mr/p{p}_s{seed}", mr, celeba_metrics(p, 0.2)))
        if sweeps:
            for interval, value in ((0.05, 0.45), (0.5, 0.55)):
                mr = config("mr", seed, sharing=0.5, update_interval=interval)
                dirs.append(
                    write_run(root, f"mr/p0.5_d{interval}_s{seed}", mr, celeba_metrics(value, 0.2))
                )
            for strategy, ratio, value in (
                ("random", 0.5, 0.4),
                ("least_align", 0.5, 0.42),
                ("least_align", 1.0, 0.48),
            ):
                mr = config("mr", seed, sharing=0.5, strategy=strategy, update_ratio=ratio)
                dirs.append(
                    write_run(
                        root, f"mr/p0.5_{strategy}_r{ratio}_s{seed}", mr, celeba_metrics(value, 0.2)
                    )
                )
    return dirs


def dense_metrics(dataset: str, task: str | None, values: Mapping[str, float]) -> dict:
    """Flat dense metrics as `roaming evaluate` writes them: all tasks, or one STL task.

    ``values`` gives the metrics of a multi-task run; an STL run keeps its task's keys (a
    paper-set segmentation task ``seg_<class>`` only ``binary_iou`` and its class's).
    """
    metrics = {"loss": 1.0, **values}
    if task is None:
        return metrics
    if task.startswith("seg_"):
        name = task.removeprefix("seg_")
        value = values[f"binary_iou/{name}"]
        return {"loss": 1.0, "binary_iou": value, f"binary_iou/{name}": value}
    prefix = {
        "seg": ("miou", "pixel_accuracy", "iou/"),
        "depth": ("depth_",),
        "normals": ("normal_",),
    }[task]
    return {"loss": 1.0, **{k: v for k, v in values.items() if k.startswith(prefix)}}


def cityscapes_values(iou: Mapping[str, float], abs_err: float, rel_err: float) -> dict:
    """Paper-set CityScapes metrics with the given per-class binary IoU and depth errors."""
    values = {f"binary_iou/{c}": iou.get(c, 0.5) for c in CITYSCAPES_CLASSES}
    values["binary_iou"] = sum(values.values()) / len(values)
    values["loss"] = 1.0
    values |= {"miou": 0.3, "pixel_accuracy": 0.7, "depth_abs_err": abs_err}
    values["depth_rel_err"] = rel_err
    return values
