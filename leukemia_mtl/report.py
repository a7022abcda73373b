"""Self-contained HTML pages for the KFP UI and local runs, and the figures in them.

Every page comes from the jinja2 templates in leukemia_mtl/templates, autoescaped: a string from the
data (a file name, a class name, a note) is always shown as text. The only HTML that passes through
is what this module returns as markupsafe.Markup: its own pieces, an embedded figure, and the body
of one of our own stage pages (`body_of`). Figures are PNGs inlined as data URIs, so a page is one
file that a browser, the KFP UI or a printer shows as it is.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from markupsafe import Markup

# Every figure is saved at this resolution, with these sizes in points: text of 9 pt is 12.5 px
# on screen, and still legible when a browser shrinks a page of 1000 px figures onto A4.
FIGURE_DPI = 100
FIGURE_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "lines.markersize": 4,
}


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("leukemia_mtl", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _macro(name: str):
    return getattr(_environment().get_template("parts.html").module, name)


def render(template: str, **context) -> str:
    """One of the package's templates, autoescaped. Quotes are spelled as html.escape spells them, as these
    pages always were (a quote in the data is never written as an entity: its & is escaped too)."""
    text = _environment().get_template(template).render(**context)
    return text.replace("&#34;", "&quot;").replace("&#39;", "&#x27;")


def fragment(template: str, **context) -> Markup:
    """A piece of a page from its own template in leukemia_mtl/templates (autoescaped there), to put in a section:
    `section("Model card", fragment("model_card.html", card=card))`. The template may import parts.html's macros."""
    return Markup(render(template, **context))


# --- figures -------------------------------------------------------------------------------------


def new_figure(rows: int, cols: int, size: tuple[float, float]):
    """A matplotlib figure on the headless Agg backend (no display on workers or CI), in the report's type sizes."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(FIGURE_STYLE)
    from matplotlib import pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def figure_png(fig, dpi: int = FIGURE_DPI) -> bytes:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def set_title(ax, text: str, fontsize: float | None = None) -> None:
    """A title wrapped to its axes' share of the figure's width, so no title is cut at the figure's edge."""
    size = float(fontsize or FIGURE_STYLE["axes.titlesize"])
    columns = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
    width_in = ax.figure.get_figwidth() / columns * 0.9
    chars = max(12, int(width_in * 72 / (size * 0.6)))  # DejaVu Sans averages ~0.55 em per character
    # a parenthesis ("(Fig. 10)") stays on one line
    kept = re.sub(r"\([^()]*\)", lambda m: m.group(0).replace(" ", "\0"), text)
    ax.set_title(textwrap.fill(kept, chars).replace("\0", " "), fontsize=size)


def epoch_axis(ax, warmup_epochs: int = 0) -> None:
    """Whole epochs on the x axis (call it after plotting: one epoch is one tick, 1, not 0.95 to 1.05); the
    head-only warm-up epochs shaded and named, only where there were some."""
    from matplotlib.ticker import MaxNLocator

    epochs = max([warmup_epochs] + [int(max(line.get_xdata(), default=0)) for line in ax.get_lines()])
    if epochs:
        ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if warmup_epochs > 0:
        ax.axvspan(0.5, warmup_epochs + 0.5, color="0.9", zorder=0)
        span = "1" if warmup_epochs == 1 else f"1-{warmup_epochs}"
        ax.set_xlabel(f"epoch (shaded {span}: head-only warm-up)")
    else:
        ax.set_xlabel("epoch")


# --- pieces of a page ----------------------------------------------------------------------------


def cell(value: object) -> object:
    """How a value reads in a table: whole numbers as integers (a KFP metric is a float: 32.0 is 32)."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def png_img(png: bytes, alt: str) -> Markup:
    return _macro("image")(base64.b64encode(png).decode("ascii"), alt)


def figures(*images: Markup) -> Markup:
    """Figures side by side where the page is wide enough, one under the other where it is not."""
    return _macro("figures")(list(images))


def table(rows: Mapping[str, object], caption: str = "") -> Markup:
    """Names and values, one per row: a stage's metrics."""
    return _macro("table")([(str(key).replace("_", " "), cell(value)) for key, value in rows.items()], caption)


def grid(header: list[str], rows: list[list[object]], caption: str = "") -> Markup:
    """A table with a header row."""
    return _macro("grid")([str(h) for h in header], [[cell(c) for c in row] for row in rows], caption)


def paragraph(text: str) -> Markup:
    return _macro("paragraph")(text, "warning" if str(text).startswith("WARNING:") else "")


def bullets(items: Iterable[object]) -> Markup:
    return _macro("bullets")([str(i) for i in items])


def subsection(heading: str, *parts: Markup) -> Markup:
    return _macro("subsection")(heading, list(parts))


@dataclass(frozen=True)
class Section:
    """A heading and its parts: one entry of a page's list of sections (and of the report's contents)."""

    heading: str
    parts: tuple

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-") or "section"

    def __html__(self) -> str:
        return _macro("section")(self)

    def __str__(self) -> str:
        return str(self.__html__())


def section(heading: str, *parts: Markup) -> Section:
    return Section(heading, tuple(parts))


def page(title: str, *parts: Markup | Section) -> str:
    """A whole page: the title, then the parts in order (a part that is not Markup is shown as text)."""
    return render("page.html", title=title, parts=list(parts))


def sectioned_page(title: str, sections: list[Section]) -> str:
    """A page of sections with a list of contents that links to each."""
    return render("run_report.html", title=title, sections=sections)


def body_of(page_html: str) -> Markup:
    """The body of one of our own pages (a stage's HTML artifact) without its <h1>, to embed: trusted HTML,
    since our own templates escaped its data; any script is dropped all the same (figures and tables only)."""
    start = page_html.find("<body>")
    end = page_html.rfind("</body>")
    inner = page_html[start + len("<body>") : end] if start >= 0 and end > start else page_html
    inner = re.sub(r"^\s*<h1>.*?</h1>", "", inner, count=1, flags=re.DOTALL)
    return Markup(re.sub(r"<script\b.*?</script\s*>", "", inner, flags=re.IGNORECASE | re.DOTALL).strip())
