"""Δm of a multi-task run against the single-task baseline, in the three conventions.

The formulas are :mod:`roaming.metrics`' (``delta_m_metrics`` ↓, ``delta_m_tasks`` ↑,
``delta_m_single`` ↑, all in percent); which metrics each task contributes is the dataset's
:class:`~roaming.report.catalog.Layout`.
"""

from __future__ import annotations

from collections.abc import Mapping

from roaming import metrics
from roaming.report import catalog


def delta_m(
    values: Mapping[str, float], stl: Mapping[str, float], layout: catalog.Layout
) -> dict[str, float]:
    """The three Δm of a run's ``values`` against the STL baseline ``stl``, in percent.

    (a) the flat mean over ``layout.flat``; (b) the mean within each task of ``layout.tasks``,
    then over tasks; (c) each task's first metric. A ValueError names a metric either side
    lacks, or an STL value of zero.
    """
    directions = {
        metric: catalog.higher_is_better(metric)
        for metric in (*layout.flat, *(m for ms in layout.tasks.values() for m in ms))
    }
    flat = {metric: directions[metric] for metric in layout.flat}
    single = {task: task_metrics[0] for task, task_metrics in layout.tasks.items()}
    return {
        "delta_m_metrics": metrics.delta_m_metrics(values, stl, flat),
        "delta_m_tasks": metrics.delta_m_tasks(values, stl, directions, layout.tasks),
        "delta_m_single": metrics.delta_m_single(values, stl, directions, single),
    }
