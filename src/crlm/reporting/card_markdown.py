"""The model card's Markdown building blocks (pipe tables, links in citations) and its conversion to one
self-contained HTML page through the ``markdown`` library (``tables`` extension)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import markdown
import numpy as np
import pandas as pd

from crlm.reporting.formatting import format_number

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1a1a1a;margin:24px auto;
max-width:1100px;line-height:1.45;padding:0 16px}
h1{font-size:21px;margin-bottom:6px}
h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:2px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 14px}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
code{font-family:SFMono-Regular,Consolas,monospace;font-size:12px;background:#f5f5f5;padding:0 3px}
blockquote{margin:10px 0;padding:8px 12px;background:#fff4e5;border-left:4px solid #e69f00}
ul{padding-left:22px}li{margin:3px 0}p,li{font-size:14px}
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}table{page-break-inside:avoid}}
"""
_URL = re.compile(r"(?<!<)(?<!\]\()\bhttps?://[^\s<>()\"']+[^\s<>()\"'.,;:]")  # not already a link
_DOI = re.compile(r"\bdoi:\s*(10\.\d{4,9}/[^\s<>()\"']+[^\s<>()\"'.,;:])", re.IGNORECASE)


def cell(value) -> str:
    """A table cell's text: one line, pipes escaped."""
    return str(value).replace("\n", " ").replace("|", "\\|")


def table(headers: Sequence, rows: Sequence[Sequence]) -> list[str]:
    """A pipe table as Markdown lines (and the blank line that ends it).

    Parameters
    ----------
    headers : sequence
    rows : sequence of sequences

    Returns
    -------
    list of str
    """
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def frame_table(frame: pd.DataFrame) -> list[str]:
    """A DataFrame as a pipe table, floats with three decimals."""
    rows = [[format_number(v) if isinstance(v, float | np.floating) else v for v in r]
            for r in frame.itertuples(index=False)]
    return table([str(c) for c in frame.columns], rows)


def linkify(text: str) -> str:
    """Bare URLs and DOIs of a citation or licence as Markdown links (``doi:10.x/y`` -> https://doi.org/...)."""
    text = _URL.sub(lambda m: f"<{m.group(0)}>", text)
    return _DOI.sub(lambda m: f"[doi:{m.group(1)}](https://doi.org/{m.group(1)})", text)


def markdown_to_html(text: str, title: str = "Model card") -> str:
    """Markdown as a self-contained HTML page: inline CSS, no scripts, no external resources.

    Raw HTML in the Markdown is escaped, not passed through (a cohort's source or citation is text), and images
    are not rendered.

    Parameters
    ----------
    text : str
        The Markdown (headings, paragraphs, lists, block quotes, pipe tables, code spans, bold, links).
    title : str

    Returns
    -------
    str
    """
    converter = markdown.Markdown(extensions=["tables"], output_format="html")
    converter.preprocessors.deregister("html_block")
    for pattern in ("html", "image_link", "image_reference", "short_image_ref"):
        converter.inlinePatterns.deregister(pattern)
    body = converter.convert(text)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + body + "\n</body></html>\n")
