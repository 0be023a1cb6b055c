"""What a dataset's report shows: metric directions, table columns and the tasks of Δm.

One home for these facts, so that the tables' arrows, Δm's signs, the figures and the claims all
agree. A metric key is a family (``fscore``, ``binary_iou``, ``depth_abs_err``, …) optionally
followed by ``/<attribute or class>``; its direction is its family's.
"""

from __future__ import annotations

from dataclasses import dataclass

from roaming import grid
from roaming.data.celeba import ATTRIBUTE_NAMES, TASK_GROUP_NAMES, TASK_GROUPS
from roaming.data.dense import CITYSCAPES_CLASSES, NYUV2_CLASSES
from roaming.protocol import DATASET_LABELS

# Whether a larger value is better, per metric family (the Δm columns included).
HIGHER_IS_BETTER: dict[str, bool] = {
    "loss": False,
    "precision": True,
    "recall": True,
    "fscore": True,
    "accuracy": True,
    "group_fscore": True,
    "miou": True,
    "pixel_accuracy": True,
    "iou": True,
    "binary_iou": True,
    "depth_abs_err": False,
    "depth_rel_err": False,
    "normal_mean": False,
    "normal_median": False,
    "normal_within_11.25": True,
    "normal_within_22.5": True,
    "normal_within_30": True,
    "delta_m_metrics": False,
    "delta_m_tasks": True,
    "delta_m_single": True,
}
# The three Δm conventions of roaming.metrics, in column order.
DELTA_M = ("delta_m_metrics", "delta_m_tasks", "delta_m_single")
# The macro F-score of each CelebA task group, derived from the per-attribute F-scores.
GROUP_FSCORE = "group_fscore"
DEPTH = ("depth_abs_err", "depth_rel_err")
NORMALS = (
    "normal_mean",
    "normal_median",
    "normal_within_11.25",
    "normal_within_22.5",
    "normal_within_30",
)
METHOD_LABELS = {
    "stl": "STL",
    "mtl": "MTL",
    "gradnorm": "GradNorm",
    "mgda": "MGDA-UB",
    "se": "SE-MTL",
    "tr": "TR",
    "mr": "MR",
}
# The paper's order of the datasets (the page shows them in it).
PAPER_ORDER = ("celeba", "cityscapes", "nyuv2")
_CLASSES = {"cityscapes": CITYSCAPES_CLASSES, "nyuv2": NYUV2_CLASSES}


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric`` (``loss/<task>`` like ``loss``); ValueError if unknown."""
    family = metric.split("/", 1)[0]
    if family not in HIGHER_IS_BETTER:
        raise ValueError(f"no direction known for metric {metric!r}")
    return HIGHER_IS_BETTER[family]


def arrow(metric: str) -> str:
    """↑ for a higher-is-better metric, ↓ otherwise."""
    return "↑" if higher_is_better(metric) else "↓"


@dataclass(frozen=True)
class Layout:
    """One dataset's report: which metrics its tables show and how Δm combines them.

    ``main`` and ``detail`` are the columns of the two tables (macro metrics; per group or
    class). ``tasks`` maps each task of the task set (the names STL runs are known by) to its
    metrics for Δm: convention (b) averages within a task, then over tasks; (c) takes each task's
    first metric; (a) averages the metrics of ``flat``. ``segmentation`` is the metric of the
    claim "best on segmentation".
    """

    dataset: str
    task_set: str
    headline: str
    main: tuple[str, ...]
    detail: tuple[str, ...]
    tasks: dict[str, tuple[str, ...]]
    flat: tuple[str, ...]
    segmentation: str | None

    @property
    def label(self) -> str:
        """The dataset's name as the paper writes it, with a non-default task set."""
        name = DATASET_LABELS.get(self.dataset, self.dataset)
        return name if self.task_set == grid.DEFAULT_TASK_SET else f"{name} ({self.task_set})"


def layout(dataset: str, task_set: str = grid.DEFAULT_TASK_SET) -> Layout:
    """The report layout of ``dataset`` trained with ``task_set``.

    CelebA: precision, recall, F-score and accuracy (macro over the 40 attributes) and the
    F-score of each task group; Δm (b) and (c) over the 8 groups' F-scores, (a) over the 40
    attributes' F-scores. Dense paper task set: binary IoU per class and their mean, mIoU, pixel
    accuracy, depth and normal errors; Δm per task over the class's binary IoU, depth's two
    errors and normals' five metrics ((c): IoU, absolute error, mean angle). Standard task set:
    mIoU, pixel accuracy, depth, normals; segmentation's Δm metric is mIoU.
    """
    names = grid.task_names(dataset, task_set)
    if dataset == "celeba":
        groups = {name: (f"{GROUP_FSCORE}/{name}",) for name in names}
        return Layout(
            dataset,
            task_set,
            headline="fscore",
            main=("precision", "recall", "fscore", "accuracy"),
            detail=tuple(metrics[0] for metrics in groups.values()),
            tasks=groups,
            flat=tuple(f"fscore/{name}" for name in ATTRIBUTE_NAMES),
            segmentation=None,
        )
    normals = "normals" in names
    tail = (*DEPTH, *(NORMALS if normals else ()))
    if task_set == "paper":
        classes = _CLASSES[dataset]
        main = ("binary_iou", "miou", "pixel_accuracy", *tail)
        detail = tuple(f"binary_iou/{name}" for name in classes)
        segmentation = "binary_iou"
    else:
        main, detail, segmentation = ("miou", "pixel_accuracy", *tail), (), "miou"

    def metrics_of(task: str) -> tuple[str, ...]:
        if task == "depth":
            return DEPTH
        if task == "normals":
            return NORMALS
        return (f"binary_iou/{task.removeprefix('seg_')}",) if task_set == "paper" else ("miou",)

    tasks = {name: metrics_of(name) for name in names}
    flat = tuple(metric for metrics in tasks.values() for metric in metrics)
    return Layout(dataset, task_set, "miou", main, detail, tasks, flat, segmentation)


def group_fscores(values: dict[str, float]) -> dict[str, float]:
    """Each CelebA task group's macro F-score from per-attribute ``fscore/<attr>`` values.

    Only groups whose every attribute has a value (a single-task run has its own group's).
    """
    result = {}
    for name, group in zip(TASK_GROUP_NAMES, TASK_GROUPS, strict=True):
        keys = [f"fscore/{ATTRIBUTE_NAMES[index]}" for index in group]
        if all(key in values for key in keys):
            result[f"{GROUP_FSCORE}/{name}"] = sum(values[key] for key in keys) / len(keys)
    return result
