"""HTML shared by sdbench's self-contained pages (``sdbench report``'s DVFS report and the cross-GPU study):
a table from a header and rows, the style sheet's common rules, and the document around a page's body."""

from __future__ import annotations

import html
from collections.abc import Sequence

#: A table as text: its header and its rows of cells.
Table = tuple[list[str], list[list[str]]]

#: Style rules more than one page uses as they are.
IMG_CSS = "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}"
NOTE_CSS = ".note{color:#555;font-size:0.9em}"
WARNING_CSS = (".warning{background:#fff3cd;border:2px solid #b26a00;color:#5c3a00;padding:0.6em 1em;"
               "border-radius:4px;font-weight:bold}")


def page_css(max_width_px: int, *rules: str) -> str:
    """A page's style sheet: the common page and table rules (the body at most ``max_width_px`` wide), then
    the page's own ``rules``, one a line."""
    common = (
        "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;"
        f"max-width:{max_width_px}px;color:#222;padding:0 1em}}",
        "table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}",
        "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}",
        "th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}",
    )
    return "\n" + "\n".join((*common, *rules)) + "\n"


def html_table(table: Table, row_classes: Sequence[str] | None = None) -> str:
    """``table`` as an HTML table, every cell escaped; ``row_classes`` (one per row, "" for none) class the rows."""
    header, rows = table
    parts = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def html_page(title: str, css: str, body: Sequence[str]) -> str:
    """A self-contained HTML document: ``title`` (escaped), ``css`` inline, the ``body`` parts one a line."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
