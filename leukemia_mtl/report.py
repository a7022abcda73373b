"""Small self-contained HTML pieces for the KFP UI and local runs; every data string is escaped."""

from __future__ import annotations

import base64
import html
import re
from typing import Mapping


def new_figure(rows: int, cols: int, size: tuple[float, float]):
    """A matplotlib figure on the headless Agg backend (no display on workers or CI)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def figure_png(fig, dpi: int = 90) -> bytes:
    import io

    from matplotlib import pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def table(rows: Mapping[str, object]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def page(title: str, *sections: str) -> str:
    style = (
        "body{font-family:sans-serif;margin:1.5em;max-width:1100px}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )


def section(heading: str, *parts: str) -> str:
    return f"<h2>{html.escape(heading)}</h2>{''.join(parts)}"


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def grid(header: list[str], rows: list[list[object]], caption: str = "") -> str:
    """A table with a header row; cells are escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def subsection(heading: str, *parts: str) -> str:
    return f"<h3>{html.escape(heading)}</h3>{''.join(parts)}"


def body_of(page_html: str) -> str:
    """The body of one of our own pages (a stage's HTML artifact), without its <h1>, to embed."""
    start = page_html.find("<body>")
    end = page_html.rfind("</body>")
    inner = page_html[start + len("<body>"):end] if start >= 0 and end > start else page_html
    if inner.startswith("<h1>"):
        inner = inner[inner.find("</h1>") + len("</h1>"):]
    return re.sub(r"<script\b.*?</script\s*>", "", inner, flags=re.IGNORECASE | re.DOTALL)  # figures and tables only


def bullets(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>"
