"""predict (leukemia_mtl/predict.py and its CLI) on the session's tiny released model: the answer the evaluation path gave, the flags, the pixel scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import assert_same_answer, run_cli

pytestmark = pytest.mark.slow  # each test predicts with the demo run's release (the session's whole DAG)
REPO = Path(__file__).resolve().parents[1]


def _evaluated_smear(outputs: dict, manifest: dict, task: str = "fab") -> tuple[Path, dict]:
    """A smear held out in the released `task` model's fold, and what the evaluation predicted for it."""

    pick = manifest["selection"][task]
    run_root = Path(outputs["crossval"]["path"]).parents[1]
    for predictions in run_root.rglob("evaluation/predictions.npz"):
        folder = predictions.parent
        info = json.loads((folder / "classifier.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        if (info["stage"], info["task"], summary["fold_id"]) == (
            {"mtl": "stage3", "ctl": "classical"}[pick["arm"]],
            task,
            pick["fold_id"],
        ):
            with np.load(predictions) as data:
                source, probabilities = str(data["sources"][0]), data["probabilities"][0]
            dataset, image_id = source.split("/")
            image = next((Path(outputs["dataset"]["path"]) / "data" / dataset).glob(f"{image_id}.jpg"))
            return image, dict(zip(info["classes"], probabilities.tolist()))
    raise AssertionError("no evaluation of the released model's fold")


def test_predict_gives_the_evaluation_paths_answer(demo_run, tmp_path):
    import csv

    from leukemia_mtl.predict import Predictor

    _out, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    manifest = json.loads((release_dir / "manifest.json").read_text())
    image, evaluated = _evaluated_smear(outputs, manifest, "detection")
    result = run_cli(
        "predict",
        "--model",
        str(release_dir),
        "--json",
        "--overlays",
        str(tmp_path / "overlays"),
        "--csv",
        str(tmp_path / "answers.csv"),
        str(image),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["model_version"] == manifest["version"] and "Research use only" in payload["notice"]
    assert payload["settings"]["threshold"] == manifest["operating_point"]["threshold"] and payload["errors"] == []
    (prediction,) = payload["predictions"]
    assert prediction["kind"] == "smear" and prediction["model_version"] == manifest["version"]
    assert prediction["all_probability"] == pytest.approx(evaluated["ALL"], abs=1e-4)  # the evaluation's answer
    assert prediction["verdict"] == ("ALL" if evaluated["ALL"] >= prediction["threshold"] else "normal")
    assert (prediction["fab"] is None) == (prediction["verdict"] != "ALL")  # the type only for a smear called ALL
    assert Path(prediction["overlay"]).is_file() and prediction["cells"]
    rows = list(csv.DictReader((tmp_path / "answers.csv").open()))
    assert [(r["image"], r["status"], r["verdict"], r["model_version"]) for r in rows] == [
        (str(image), "ok", prediction["verdict"], manifest["version"])
    ]

    image, evaluated = _evaluated_smear(outputs, manifest, "fab")
    forced = Predictor(release_dir, threshold=1e-6).predict(image)  # every smear called ALL: its FAB answer shows
    assert forced.verdict == "ALL" and forced.fab["probabilities"] == pytest.approx(evaluated, abs=1e-4)
    assert forced.fab["type"] == max((c for c in evaluated if c != "normal"), key=evaluated.get)

    cell = next((Path(outputs["dataset"]["path"]) / "data" / "cells").glob("*.tif"))
    text = subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", "predict", "--model", str(release_dir), str(cell)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert text.returncode == 0, text.stderr[-2000:]
    assert "(single cell): " in text.stdout and "P(blast)" in text.stdout and "Research use only" in text.stderr
    assert "pixel scale" in text.stdout and "the training cell images'" in text.stdout


def test_predict_flags_a_verdict_its_cells_do_not_support_and_explains_it(demo_run, tmp_path):
    """Whatever the cells score, one of "everything is ALL" and "nothing is" disagrees with them, and says so."""
    import cv2

    from leukemia_mtl.predict import Predictor, format_prediction

    _, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    image = next((Path(outputs["dataset"]["path"]) / "data" / "smears").glob("*_1.jpg"))
    low = Predictor(release_dir, threshold=1e-6).predict(image, explain_path=tmp_path / "gradcam.png")
    high = Predictor(release_dir, threshold=1 - 1e-6).predict(image)
    assert low.cells and (low.verdict, high.verdict) == ("ALL", "normal") and high.fab is None
    blasts = low.cells_scored_as_blasts
    assert blasts == sum(c["blast_probability"] >= 0.5 for c in low.cells)
    assert (low.disagreement is None) == (blasts > 0) and (high.disagreement is None) == (blasts == 0)
    flagged = low if blasts == 0 else high
    assert "! disagreement: " in format_prediction(flagged.to_dict())
    heat = cv2.imread(low.explanation)
    assert (
        heat.shape[1] > 2 * cv2.imread(str(image)).shape[1] * 0.9
    )  # detection, FAB and cell-model panels side by side


def test_predict_takes_the_pixel_scale_given_else_the_training_images(demo_run):
    from leukemia_mtl.config import REFERENCE_PIXEL_SIZE_UM
    from leukemia_mtl.predict import PredictError, Predictor

    _, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    image, _ = _evaluated_smear(outputs, json.loads((release_dir / "manifest.json").read_text()))
    trained = json.loads((release_dir / "segmenter" / "segmenter.json").read_text())["pixel_scales"]["smear"]
    default = Predictor(release_dir).predict(image)
    assert (
        default.pixel_scale == round(trained["scale"], 4) and "the training smear images'" in default.pixel_scale_source
    )
    assert trained["source"] in default.pixel_scale_source  # estimated over the demo's smears, and it says so
    given = Predictor(release_dir, pixel_size_um=REFERENCE_PIXEL_SIZE_UM / 0.5).predict(
        image
    )  # twice the magnification
    assert given.pixel_scale == 0.5 and given.pixel_scale_source.startswith("given")
    with pytest.raises(PredictError, match="give micrometres per pixel"):
        Predictor(release_dir, pixel_size_um=-1.0)


def test_a_12_bit_camera_image_gets_the_8_bit_copys_answer_and_every_output_says_what_was_converted(demo_run, tmp_path):
    import csv

    _, outputs, _ = demo_run
    release = outputs["release"]["path"]
    cell = next((Path(outputs["dataset"]["path"]) / "data" / "cells").glob("*.tif"))
    rgb = cv2.cvtColor(cv2.imread(str(cell)), cv2.COLOR_BGR2RGB)
    wide = tmp_path / "camera12.tif"  # 12-bit samples in a 16-bit TIFF, as microscope cameras write them
    assert cv2.imwrite(
        str(wide), cv2.cvtColor((rgb.astype(np.uint32) * 4095 // 255).astype(np.uint16), cv2.COLOR_RGB2BGR)
    )
    narrow = tmp_path / "camera8.png"
    assert cv2.imwrite(str(narrow), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result = run_cli(
        "predict",
        "--model",
        release,
        "--json",
        "--kind",
        "cell",
        "--csv",
        str(tmp_path / "answers.csv"),
        str(narrow),
        str(wide),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    eight, twelve = json.loads(result.stdout)["predictions"]
    assert twelve["all_probability"] == pytest.approx(eight["all_probability"], abs=0.02)
    assert twelve["verdict"] == eight["verdict"] and eight["conversions"] == []
    assert any("holding 12-bit data" in c for c in twelve["conversions"])
    assert f"note: {wide}: 16-bit samples holding 12-bit data" in result.stderr
    rows = list(csv.DictReader((tmp_path / "answers.csv").open()))
    assert rows[0]["conversions"] == "" and "holding 12-bit data" in rows[1]["conversions"]


def test_compiled_and_batched_answers_are_the_eager_one_at_a_time_answers_to_the_printed_precision(demo_run, tmp_path):
    """Issue 35: the models called through one traced function each (warmed at load), and a folder answered 16
    images per call (the U-Net's windows of all of them pooled, each classifier once on all their crops), answer as
    the eager calls the evaluation makes one image at a time: every probability within 1e-5, every printed field
    the same; an image that cannot be answered gets its own error in its place, and the rest their answers."""
    from leukemia_mtl.errors import LeukemiaMtlError
    from leukemia_mtl.predict import Predictor, iter_predictions

    _, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    data = Path(outputs["dataset"]["path"]) / "data"
    images = sorted(data.glob("smears/*.jpg"))[:5] + sorted(data.glob("cells/*.tif"))[:4]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    blank = tmp_path / "blank.png"  # decodes, but holds no white cell
    cv2.imwrite(str(blank), np.full((480, 640, 3), 235, np.uint8))
    inputs = [*images[:3], broken, *images[3:6], blank, *images[6:]]

    compared = 0
    # the release's operating point, and every smear called ALL (its FAB type shows); at the latter, the stage-3 models
    # also given the isolated smear and the original (the release trained on cells: the paths' arithmetic, not its
    # science), where a smear without cells is answered too
    for threshold, modes in ((None, ("cells",)), (1e-6, ("cells", "isolated", "original"))):
        compiled = Predictor(release_dir, threshold=threshold)
        eager = Predictor(release_dir, threshold=threshold, compiled=False)
        assert set(compiled._forward) == {"detection", "fab", "cells"} and not eager._forward
        assert compiled._unet is not None and eager._unet is None
        assert compiled.windows_per_call == 64 > eager.windows_per_call == 16  # the demo's 64 px windows
        assert 0 < compiled.warmup_seconds <= compiled.load_seconds
        for mode in modes:
            compiled.stage3_images = eager.stage3_images = mode
            expected = {}
            for image in inputs:  # today's path: one image at a time, eager
                try:
                    expected[str(image)] = eager.predict(image).to_dict()
                except LeukemiaMtlError as exc:  # the image check's, or predict's "no white cell"
                    expected[str(image)] = str(exc)
            assert isinstance(expected[str(broken)], str)
            assert ("no white cell" in expected[str(blank)]) == (mode != "original")
            for batch in (1, 4, 16) if mode == "cells" else (16,):
                answered = list(iter_predictions(compiled, [str(i) for i in inputs], batch_images=batch))
                assert [image for image, _, _ in answered] == [str(i) for i in inputs]  # in order, errors in place
                for image, answer, error in answered:
                    if isinstance(expected[image], str):
                        assert answer is None and error == expected[image]
                        continue
                    assert error is None, error
                    assert_same_answer(answer, expected[image])
                    compared += 1
            if mode == "cells":
                assert any(isinstance(e, dict) and e["fab"] for e in expected.values())  # the FAB path ran too
    assert compared >= 2 * 3 * 8 + 2 * 8  # (73 on the tests' release)
