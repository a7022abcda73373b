"""The run report as a reader sees it: its templates escape the data, no table is shown twice, and the
demo run's report, rendered by a headless Chromium, is a page with something on it (its screenshot is
kept in build/test-artifacts/ to look at)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from helpers import fold_predictions
from leukemia_mtl import report
from leukemia_mtl.config import get_profile
from leukemia_mtl.results import CrossvalResult

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "build" / "test-artifacts"
REQUIRE_BROWSER = "LEUKEMIA_MTL_REQUIRE_BROWSER"  # set by .ci/run: there a missing browser is a failure


# --- the tables of a page, as text ---------------------------------------------------------------


class _Tables(HTMLParser):
    """Each <table>'s caption and rows (cell texts, whitespace collapsed), in page order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif not self.tables:
            return
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]["rows"]:
            self.tables[-1]["rows"][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption and self.tables:
            self.tables[-1]["caption"] += data


def tables_of(page: str) -> list[dict]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _number_or_text(text: str) -> object:
    """32.0 and 32 are one value: the old report showed a stage's metrics once as floats, once as integers."""
    try:
        return float(text)
    except ValueError:
        return text


def duplicated_tables(page: str) -> list[tuple[int, int, str]]:
    """(i, j, caption) for every table j that repeats table i: the same caption and the same rows, in any order."""
    seen: dict[tuple, int] = {}
    repeats = []
    for index, table in enumerate(tables_of(page)):
        key = (
            " ".join(table["caption"].split()),
            frozenset(tuple(_number_or_text(c) for c in row) for row in table["rows"] if row),
        )
        if key in seen:
            repeats.append((seen[key], index, key[0]))
        else:
            seen[key] = index
    return repeats


# --- the templates, without a pipeline run -------------------------------------------------------


def test_a_hostile_file_name_is_shown_as_text_and_figures_stay_inline():
    hostile = '<script>alert("x")</script>.png'
    page = report.page(
        f"preprocess: {hostile}",
        report.paragraph(f"WARNING: no cell found in {hostile}"),
        report.table({hostile: 3.0}, hostile),
        report.grid([hostile], [[hostile]], hostile),
        report.bullets([hostile]),
        report.png_img(b"\x89PNG fake", hostile),
        hostile,
    )
    assert "<script" not in page and page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.png") == 11
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 1
    assert re.search(r'<p class="warning">WARNING: no cell found in &lt;script&gt;', page)


def test_an_embedded_stage_page_is_trusted_but_loses_its_title_and_scripts():
    stage_page = report.page("segment: white cells", report.paragraph("a <b>"), report.table({"crops": 168}))
    body = report.body_of(stage_page + "<script>steal()</script>")
    page = report.sectioned_page("run <1>", [report.section("Segmentation & isolation", body)])
    assert "segment: white cells" not in page and "steal()" not in page
    assert "<p>a &lt;b&gt;</p>" in page  # escaped once, when the stage page was written: not twice
    assert '<a href="#segmentation-isolation">Segmentation &amp; isolation</a>' in page
    assert '<section id="segmentation-isolation">' in page and "<h1>run &lt;1&gt;</h1>" in page


def test_whole_numbers_read_as_integers():
    page = report.page("t", report.table({"images": 32.0, "roi_mean_iou": 0.6451, "epochs": 5, "missing": None}))
    assert [row for t in tables_of(page) for row in t["rows"]] == [
        ["images", "32"],
        ["roi mean iou", "0.6451"],
        ["epochs", "5"],
        ["missing", "n/a"],
    ]


def test_the_check_finds_a_metrics_table_shown_twice_as_the_old_report_did():
    metrics = {"images": 14.0, "roi_regions": 60.0, "roi_mean_iou": 0.6451}
    roi_page = report.page("preprocess: regions of interest", report.table(metrics))
    old = report.sectioned_page("r", [report.section("Preprocessing", report.table(metrics), report.body_of(roi_page))])
    assert [(i, j) for i, j, _ in duplicated_tables(old.replace(">14<", ">14.0<", 1))] == [(0, 1)]
    same_rows_other_caption = report.page("r", report.grid(["a"], [[1]], "mtl"), report.grid(["a"], [[1]], "ctl"))
    assert duplicated_tables(same_rows_other_caption) == []


def _run_inputs(tmp_path: Path) -> dict:
    """build_report's inputs, made by hand: two folds of scored predictions, the stage pages as the stages write them."""
    from leukemia_mtl.evaluate import _curve_points, cross_validate, roc_curves
    from leukemia_mtl.ttest import run_ttest

    rng = np.random.default_rng(0)
    predictions = []
    for task, classes in (("detection", ("normal", "ALL")), ("fab", ("normal", "L1", "L2", "L3"))):
        for arm in ("mtl", "ctl"):
            for k in range(2):
                labels = np.arange(16) % len(classes)
                logits = rng.normal(size=(16, len(classes))) + 2.0 * np.eye(len(classes))[labels]
                probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                predictions.append(
                    fold_predictions(
                        task,
                        arm,
                        k,
                        labels,
                        probabilities,
                        classes=classes,
                        sources=np.array([f"g{i}" for i in range(16)]),
                        train_sources=16,
                    )
                )
    tasks = cross_validate(predictions)
    for by_arm in tasks.values():
        for result in by_arm["Xception"].values():
            n = len(result["classes"])
            result["roc"] = _curve_points(
                roc_curves(tuple(result["classes"]), np.arange(8) % n, np.eye(n)[np.arange(8) % n])
            )
    crossval = {"folds": ["r0f0", "r0f1"], "tasks": tasks}
    roi_metrics = {"images": 14.0, "roi_regions": 60.0, "roi_mean_iou": 0.6451}
    segment_metrics = {"train_smears": 6, "crops": 168, "unet_dice": 0.958}
    history = {"loss": [1.0, 0.6], "val_loss": [1.1, 0.8], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]}
    return dict(
        profile=get_profile("demo"),
        data_summary={
            "source": "synthetic",
            "images": 40,
            "datasets": {"smears": {"layout": "allidb1", "class_counts": {"normal": 8, "L1": 6}}},
        },
        split={
            "repeats": 1,
            "folds_per_repeat": 2,
            "group_alias": {},
            "folds": [{"id": f"r0f{k}", "train_groups": ["a"], "eval_groups": ["b"]} for k in range(2)],
        },
        roi_metrics=roi_metrics,
        roi_html=report.page("preprocess: regions of interest", report.table(roi_metrics)),
        segment_metrics=segment_metrics,
        segment_html=report.page("segment", report.table(segment_metrics)),
        evaluations={"stage 1": [{"summary": {"imagenet": False, "backbone": "Xception"}, "history": history}] * 2},
        crossval=CrossvalResult.from_dict(crossval),
        ttest=run_ttest(CrossvalResult.from_dict(crossval), tmp_path / "ttest.json", get_profile("demo")),
        release=None,
        html_path=tmp_path / "report.html",
        summary_path=tmp_path / "summary.json",
    )


def test_a_hand_built_report_shows_each_table_once(tmp_path):
    from leukemia_mtl.run_report import build_report

    build_report(**_run_inputs(tmp_path))
    page = (tmp_path / "report.html").read_text()
    assert duplicated_tables(page) == []
    rows = [row for t in tables_of(page) for row in t["rows"]]
    assert ["images", "14"] in rows and ["crops", "168"] in rows and ["images", "14.0"] not in rows
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings.index("Data and split") < headings.index("Preprocessing (RGB offsets, monochrome, threshold)")


def test_epoch_axes_are_whole_numbers_and_name_a_warm_up_only_where_there_was_one():
    fig, axes = report.new_figure(1, 3, (9, 3))
    for ax, (epochs, warmup) in zip(axes[0], ((1, 0), (2, 0), (4, 2))):
        ax.plot(range(1, epochs + 1), [1.0, 0.5, 0.4, 0.3][:epochs], "-o")
        report.epoch_axis(ax, warmup)
    fig.canvas.draw()
    shown = [[t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] for ax in axes[0]]
    assert shown == [[1], [1, 2], [1, 2, 3, 4]]
    assert [ax.get_xlabel() for ax in axes[0][:2]] == ["epoch", "epoch"] and "warm-up" in axes[0][2].get_xlabel()
    long_title = "Xception, multistage transfer learning: ROC (Fig. 10)"
    report.set_title(axes[0][0], long_title)
    assert "\n" in axes[0][0].get_title() and axes[0][0].get_title().replace("\n", " ") == long_title
    assert "(Fig. 10)" in axes[0][0].get_title().splitlines()[-1]
    report.figure_png(fig)


# --- the demo run's report, in a browser ---------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = (
        "Chromium is not installed, so the report was not looked at in a browser; install it with "
        "`sudo apt-get install -y --no-install-recommends chromium` (Debian/Ubuntu)"
    )
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{message} ({REQUIRE_BROWSER}=1 asks for the browser tests)")
    pytest.skip(message)


def _chromium_run(page: Path, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, with a fresh profile and nothing reaching the network."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",  # a container's small /dev/shm would crash it on a long page
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *arguments,
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(command)}: exit {result.returncode}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.browser
@pytest.mark.slow  # the demo run
def test_the_demo_report_rendered_by_chromium_holds_no_table_twice(demo_run, tmp_path):
    out, _, _ = demo_run
    dom = _chromium_run(out / "report.html", tmp_path, "--dump-dom").stdout
    tables = tables_of(dom)
    assert len(tables) >= 20, f"{len(tables)} tables in the rendered report"
    assert duplicated_tables(dom) == [], [tables[j] for _, j, _ in duplicated_tables(dom)]
    rows = [row for t in tables for row in t["rows"]]
    assert ["images", "14"] in rows  # the ROI step's count, as an integer
    assert not [row for row in rows if any(re.fullmatch(r"\d+\.0", c) for c in row)], "a whole number shown as a float"


@pytest.mark.browser
@pytest.mark.slow  # the demo run
def test_a_screenshot_of_the_demo_report_is_kept_and_is_not_blank(demo_run, tmp_path):
    import cv2

    out, _, _ = demo_run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "report.png"
    # one tall window, the whole report in one picture; the empty space below the page is cut off after
    _chromium_run(out / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1280,24000")
    image = cv2.imread(str(shot))
    assert image is not None, f"{shot}: not a PNG Chromium could write"
    used = np.flatnonzero((image < 245).any(axis=(1, 2)))
    assert used.size, f"{shot}: a blank page"
    image = image[: used[-1] + 40]
    target = ARTIFACTS / "report.png"
    cv2.imwrite(str(target), image)
    print(f"report screenshot: {target}")
    assert target.stat().st_size > 100_000 and image.shape[0] > 3000, (target.stat().st_size, image.shape)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert grey.std() > 20 and (grey < 128).mean() > 0.01  # text and figures, not an empty or uniform page
