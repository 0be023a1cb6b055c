"""Self-contained HTML: one dataset's report, and the page of all of them.

Everything is inline (CSS in the head, images as base64 data URIs): no scripts, no external
links, so the page opens offline, from a mail attachment or from DVC's cache alike. A dataset's
``report.html`` marks its section, so the index page reuses the section without redrawing it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from roaming.errors import DataError
from roaming.report.claims import HOLDS, NOT_MEASURED, Claim
from roaming.report.runs import SYNTHETIC_NOTE, Provenance
from roaming.report.tables import Table

SECTION_START = "<!-- roaming:dataset -->"
SECTION_END = "<!-- /roaming:dataset -->"
# Each figure's heading on the page, in the paper's order.
FIGURE_TITLES = {
    "figure1_sharing": "Figure 1: metric vs sharing ratio p, MR vs TR",
    "figure1_interval": "Figure 1: metric vs update interval Δ",
    "figure1_progress": "Figure 1: metric vs update progress r(c)",
    "figure1_strategy": "Figure 1: random vs least_align selection",
}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222;
       line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
h3 { margin-top: 1.6em; }
.warning { background: #fde8e8; border: 2px solid #b30000; color: #7a0000; padding: 0.5em 1em;
           font-weight: bold; }
.provenance { color: #555; font-size: 0.85em; }
.missing { color: #555; font-style: italic; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
table.claims td { text-align: left; white-space: normal; }
.notes { font-size: 0.85em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
.holds { color: #0a6b0a; font-weight: bold; } .fails { color: #b30000; font-weight: bold; }
.unmeasured { color: #8a6d00; font-weight: bold; }
nav ul { columns: 3; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _image(path: Path, alt: str) -> str:
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except FileNotFoundError:
        raise DataError(path, "missing (write the dataset's report first)") from None
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def table_html(table: Table) -> str:
    """A :class:`Table` with its title and footnotes."""
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    parts = [f"<h4>{_e(table.title)}</h4>", f"<table><thead><tr>{head}</tr></thead>"]
    parts.append(f"<tbody>{body}</tbody></table>")
    if table.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes))
        parts.append("</ul>")
    return "\n".join(parts)


def _verdict_class(claim: Claim) -> str:
    if claim.missing or claim.verdict == NOT_MEASURED:
        return "unmeasured"
    return "holds" if claim.verdict == HOLDS else "fails"


def claims_html(claims: Sequence[Claim], intro: str) -> str:
    """The claims as a summary table and one list of evidence per claim."""
    rows = "".join(
        f'<tr><td>{i}</td><td>{_e(c.statement)}</td><td class="{_verdict_class(c)}">'
        f"{_e(c.verdict_text)}</td></tr>"
        for i, c in enumerate(claims, 1)
    )
    parts = [f"<p>{_e(intro)}</p>"]
    parts.append(
        f'<table class="claims"><thead><tr><th>#</th><th>claim</th><th>verdict</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    for i, claim in enumerate(claims, 1):
        parts.append(
            f'<h4>{i}. {_e(claim.statement)}: <span class="{_verdict_class(claim)}">'
            f"{_e(claim.verdict_text)}</span></h4>"
        )
        items = "".join(f"<li>{_e(line)}</li>" for line in claim.evidence)
        if items:
            parts.append(f"<ul>{items}</ul>")
    return "\n".join(parts)


def dataset_section(
    *,
    anchor: str,
    title: str,
    prov: Provenance,
    figures: Mapping[str, Path],
    not_drawn: Mapping[str, str],
    tables: Sequence[Table],
    claims: str,
) -> str:
    """One dataset's part of the page, in the paper's order: Figure 1's panels, the tables,
    the training curves and masks, the claims. ``not_drawn`` says, per missing panel, which runs
    would produce it."""
    parts = [SECTION_START, f'<section id="{_e(anchor)}">', f"<h2>{_e(title)}</h2>"]
    if prov.synthetic:
        parts.append(f'<p class="warning">{_e(SYNTHETIC_NOTE)}</p>')
    parts.append(f'<p class="provenance">{_e(prov.line())}</p>')
    parts.append("<h3>Figure 1</h3>")
    for role, heading in FIGURE_TITLES.items():
        if role in figures:
            parts.append(
                f"<figure>{_image(figures[role], heading)}"
                f"<figcaption>{_e(heading)}</figcaption></figure>"
            )
        else:
            need = not_drawn.get(role, "its runs")
            parts.append(f'<p class="missing">{_e(heading)}: not drawn; needs {_e(need)}.</p>')
    parts.append("<h3>Tables</h3>")
    parts += [table_html(table) for table in tables]
    parts.append("<h3>Training curves</h3>")
    parts.append(f"<figure>{_image(figures['curves'], 'training curves')}</figure>")
    parts.append("<h3>Masks</h3>")
    if "masks" in figures:
        parts.append(f"<figure>{_image(figures['masks'], 'masks')}</figure>")
    else:
        parts.append(f'<p class="missing">Not drawn; needs {_e(not_drawn.get("masks", ""))}.</p>')
    parts += ["<h3>Claims</h3>", claims, "</section>", SECTION_END]
    return "\n".join(parts)


def page(title: str, sections: Sequence[str], preface: str = "") -> str:
    """A complete, self-contained HTML document."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            preface,
            *sections,
            "</body></html>",
            "",
        ]
    )


def read_section(path: Path) -> str:
    """The dataset section of a ``report.html`` written by :func:`page`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(path, "missing (write the dataset's report first)") from None
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 or end < start:
        raise DataError(path, "not a dataset report written by roaming report")
    return text[start : end + len(SECTION_END)]


def index_page(title: str, sections: Sequence[tuple[str, str, str]], synthetic: bool) -> str:
    """The page of a preset: a contents list, then each (anchor, heading, section)."""
    items = "".join(f'<li><a href="#{_e(a)}">{_e(h)}</a></li>' for a, h, _ in sections)
    preface = f"<nav><ul>{items}</ul></nav>"
    if synthetic:
        preface = f'<p class="warning">{_e(SYNTHETIC_NOTE)}</p>' + preface
    return page(title, [section for _, _, section in sections], preface)
