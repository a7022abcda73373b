"""Small self-contained HTML pieces for the KFP UI and local runs; every data string is escaped."""

from __future__ import annotations

import base64
import html
from typing import Mapping


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
