"""The paper's results from run directories: tables, Δm, Figure 1, curves, masks, claims.

``roaming report`` (:func:`write_report`) writes one dataset's report, every file of
:data:`roaming.grid.REPORT_FILES`; ``roaming index`` (:func:`write_index`) the page of a preset.
Modules: :mod:`~roaming.report.runs` reads run directories and provenance,
:mod:`~roaming.report.catalog` says what each dataset's report shows, :mod:`~.tables` and
:mod:`~.deltas` compute the tables and Δm, :mod:`~.figures`, :mod:`~.claims` and :mod:`~.html`
draw and write them.
"""

from roaming.report.build import summary, write_index, write_report, write_run_metrics
from roaming.report.runs import Runs, collect, read_config
from roaming.report.tables import STL_COMBINED, combine_stl, stl_baseline, summarise

__all__ = [
    "STL_COMBINED",
    "Runs",
    "collect",
    "combine_stl",
    "read_config",
    "stl_baseline",
    "summarise",
    "summary",
    "write_index",
    "write_report",
    "write_run_metrics",
]
