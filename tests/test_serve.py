"""`python -m leukemia_mtl serve` on the session's tiny release: a real server on 127.0.0.1 speaking KServe's
v2 (and v1) protocol, with predict's answers, bounded requests, Prometheus metrics, and its page in Chromium
(screenshot kept in build/test-artifacts/serve_page.png)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import assert_same_answer, run_cli
from leukemia_mtl.stages import CELL_POSITIVE, POSITIVE_CLASS

pytestmark = pytest.mark.slow  # the server serves the demo run's release (the session's whole DAG)
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "build" / "test-artifacts"
REQUIRE_BROWSER = "LEUKEMIA_MTL_REQUIRE_BROWSER"
MAX_MB, MAX_IMAGES = 4, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


def _headers_only(url: str, content_length: int) -> tuple[int, dict]:
    """A POST's headers and none of its body, then the server's answer."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as connection:
        connection.sendall(
            f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {content_length}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _v2(images: list[bytes], names: list[str] | None = None, **parameters) -> dict:
    inputs = [
        {
            "name": "image",
            "shape": [len(images)],
            "datatype": "BYTES",
            "data": [base64.b64encode(i).decode() for i in images],
        }
    ]
    if names:
        inputs.append({"name": "name", "shape": [len(names)], "datatype": "BYTES", "data": names})
    return {"id": "test", "inputs": inputs, "parameters": parameters}


def _outputs(body: dict) -> dict:
    return {o["name"]: o for o in body["outputs"]}


def _start(release: Path, port: int, *more: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leukemia_mtl",
            "serve",
            "--model",
            str(release),
            "--port",
            str(port),
            "--max-request-mb",
            str(MAX_MB),
            "--max-images",
            str(MAX_IMAGES),
            *more,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _first_answer(process: subprocess.Popen, base: str) -> tuple[int, bytes]:
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        try:
            return _get(f"{base}/v2/models/leukemia-mtl/ready")  # the first thing that answers at all
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"the server did not come up: {process.communicate()[0][-3000:]}")


@pytest.fixture(scope="module")
def server(demo_run):
    _, outputs, _ = demo_run
    release = Path(outputs["release"]["path"])
    port = _free_port()
    process = _start(release, port)
    base = f"http://127.0.0.1:{port}"
    first_answer = _first_answer(process, base)
    yield {"base": base, "release": release, "outputs": outputs, "process": process, "first_answer": first_answer}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _images(outputs: dict) -> tuple[Path, Path]:
    data = Path(outputs["dataset"]["path"]) / "data"
    return sorted((data / "smears").glob("*.jpg"))[0], sorted((data / "cells").glob("*.tif"))[0]


def _predict_cli(release: Path, images: list[Path], tmp_path: Path) -> list[dict]:
    result = run_cli(
        "predict",
        "--model",
        str(release),
        "--json",
        "--overlays",
        str(tmp_path / "overlays"),
        *map(str, images),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["predictions"]


def _comparable(prediction: dict) -> dict:
    return {k: v for k, v in prediction.items() if k not in ("image", "overlay", "explanation")}


def test_the_server_is_ready_when_it_answers_and_gives_predicts_answers(server, tmp_path):
    base = server["base"]
    assert server["first_answer"][0] == 200  # it listens only once the release is loaded: no "not ready" phase
    assert json.loads(_get(f"{base}/v2/health/ready")[1]) == {"ready": True}
    metadata = json.loads(_get(f"{base}/v2/models/leukemia-mtl")[1])
    assert metadata["name"] == "leukemia-mtl" and metadata["inputs"][0] == {
        "name": "image",
        "datatype": "BYTES",
        "shape": [-1],
    }
    assert {"prediction", "cell_boxes", "cell_blast_probability"} <= {o["name"] for o in metadata["outputs"]}
    page = json.loads(_get(f"{base}/ui/model.json")[1])  # what the page reads its positive verdicts from
    assert page["positive"] == {"smear": POSITIVE_CLASS, "cell": CELL_POSITIVE}

    smear, cell = _images(server["outputs"])
    status, body = _post(
        f"{base}/v2/models/leukemia-mtl/infer",
        _v2([smear.read_bytes(), cell.read_bytes()], [smear.name, cell.name], overlay=True),
    )
    assert status == 200, body
    manifest = json.loads((server["release"] / "manifest.json").read_text())
    assert body["model_version"] == manifest["version"] and "Research use only" in body["parameters"]["notice"]
    out = _outputs(body)
    served = [json.loads(p) for p in out["prediction"]["data"]]
    expected = _predict_cli(server["release"], [smear, cell], tmp_path)
    assert [_comparable(p) for p in served] == [_comparable(p) for p in expected]  # predict's answers, exactly
    assert [p["kind"] for p in served] == ["smear", "cell"] and served[0]["image"] == f"image[0] ({smear.name})"
    assert out["verdict"]["data"] == [p["verdict"] for p in expected]
    assert out["all_probability"]["data"] == [p["all_probability"] for p in expected]
    assert out["fab_type"]["data"] == [(p["fab"] or {}).get("type", "") for p in expected]
    # every cell's box and score, over both images, tagged with its image's index
    cells = [(i, c) for i, p in enumerate(expected) for c in p["cells"]]
    assert out["cell_boxes"]["shape"] == [len(cells), 5]
    assert np.reshape(out["cell_boxes"]["data"], (-1, 5)).tolist() == [[i, *c["bbox"]] for i, c in cells]
    assert out["cell_blast_probability"]["data"] == [c["blast_probability"] for _, c in cells]
    for png, image in zip(out["overlay_png"]["data"], (smear, cell)):  # the overlay: the image plus a header and foot
        overlay = cv2.imdecode(np.frombuffer(base64.b64decode(png), np.uint8), cv2.IMREAD_COLOR)
        original = cv2.imread(str(image), cv2.IMREAD_COLOR)
        assert overlay.shape[1] == original.shape[1] and overlay.shape[0] > original.shape[0]
    assert "explanation_png" not in out  # only when asked for

    v1_status, v1 = _post(
        f"{base}/v1/models/leukemia-mtl:predict",
        {"instances": [{"image": {"b64": base64.b64encode(smear.read_bytes()).decode()}, "name": smear.name}]},
    )
    assert v1_status == 200  # what KServe's batcher speaks; alone, so in other batches than predict's: same answer
    assert_same_answer(v1["predictions"][0], expected[0])


def test_requests_that_arrive_together_are_answered_together_each_with_its_own_answer(server, tmp_path):
    """Issue 35: concurrent clients share the models' calls (the batch size histogram says so) and each gets the
    answer predict gives its image; the server said how long it took to start, warm-up included."""
    base = server["base"]
    data = Path(server["outputs"]["dataset"]["path"]) / "data"
    images = sorted(data.glob("smears/*.jpg"))[:4] + sorted(data.glob("cells/*.tif"))[:2]
    expected = {Path(p["image"]).name: p for p in _predict_cli(server["release"], images, tmp_path)}
    before = _get(f"{base}/metrics")[1].decode()
    answers: dict[str, dict] = {}

    def client(image: Path) -> None:
        answers[image.name] = _post(f"{base}/v2/models/leukemia-mtl/infer", _v2([image.read_bytes()], [image.name]))

    for _ in range(2):
        threads = [threading.Thread(target=client, args=(image,)) for image in images]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, (status, body) in answers.items():
            assert status == 200, body
            assert_same_answer(json.loads(_outputs(body)["prediction"]["data"][0]), expected[name])
    after = _get(f"{base}/metrics")[1].decode()
    grew = lambda name: _metric(after, name) - _metric(before, name)  # noqa: E731
    assert grew("leukemia_mtl_batch_images_sum") == 2 * len(images)  # every image in exactly one batch
    assert grew("leukemia_mtl_batch_images_count") < 2 * len(images)  # and some batches held several
    assert _metric(after, "leukemia_mtl_queued_images") == 0
    startup = json.loads(_get(f"{base}/ui/model.json")[1])["startup_seconds"]
    assert startup["load"] > 0 and startup["warm_up"] > 0
    assert _metric(after, "leukemia_mtl_startup_seconds", step="warm_up") == pytest.approx(startup["warm_up"], abs=1e-3)


def _metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            got = dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(",")) if "{" in key else {}
            if key.split("{")[0] == name and {k: v.strip('"') for k, v in got.items()} == labels:
                return float(value)
    return 0.0


def test_bad_requests_get_one_clear_4xx_and_are_counted(server, tmp_path):
    base, url = server["base"], f"{server['base']}/v2/models/leukemia-mtl/infer"
    smear, _ = _images(server["outputs"])
    before = _get(f"{base}/metrics")[1].decode()
    tiny = cv2.imencode(".png", np.full((40, 40, 3), 200, np.uint8))[1].tobytes()
    cases = {
        "not base64": (
            _v2([b""]) | {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
            400,
            "not base64",
        ),
        "not an image": (_v2([b"these bytes are not an image"]), 400, "cannot be decoded"),
        "empty file": (_v2([b""]), 400, "empty"),
        "too small for a smear": (_v2([tiny], kind="smear"), 400, "smaller than the model's"),
        "unknown kind": (_v2([smear.read_bytes()], kind="marrow"), 400, "kind"),
        "too many images": (_v2([smear.read_bytes()] * (MAX_IMAGES + 1)), 400, f"the {MAX_IMAGES}"),
        "wrong datatype": (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            400,
            "BYTES",
        ),
        "no image input": (
            {"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["eA=="]}]},
            400,
            "'image'",
        ),
        "not JSON": (b"{this is not json", 422, ""),
    }
    for case, (body, code, words) in cases.items():
        status, answer = _post(url, body)
        text = json.dumps(answer)
        assert status == code, (case, status, text[:500])
        assert words in text and "Traceback" not in text and 'File "' not in text, (case, text[:500])
    assert _post(f"{base}/v2/models/no-such-model/infer", _v2([smear.read_bytes()]))[0] == 404
    # a body above the bound is refused on its headers: the answer comes before a byte of it is sent
    status, answer = _headers_only(url, MAX_MB * (1 << 20) + 1)
    assert status == 413 and f"more than the {MAX_MB * (1 << 20):,}" in answer["error"], answer
    chunked = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "{}",
            url,
        ],
        capture_output=True,
        text=True,
    )
    if shutil.which("curl"):
        assert chunked.stdout == "411"
    # the binary data extension: kserve's REST server would decode the image's bytes as UTF-8 text and fail (500)
    raw = len(smear.read_bytes()).to_bytes(4, "little") + smear.read_bytes()
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    status, answer = _post(
        url,
        header + raw,
        {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    assert status == 400 and "base64" in answer["error"], answer
    status, body = _post(url, _v2([smear.read_bytes()]))  # and the server still answers
    assert status == 200
    verdict = _outputs(body)["verdict"]["data"][0]

    after = _get(f"{base}/metrics")[1].decode()  # Prometheus text, scraped as Prometheus would
    grew = lambda name, **labels: _metric(after, name, **labels) - _metric(before, name, **labels)  # noqa: E731
    assert (
        grew("leukemia_mtl_requests_total", protocol="v2", outcome="bad_request") == 8
    )  # the 400s that reached the model
    assert grew("leukemia_mtl_requests_total", protocol="v2", outcome="ok") == 1
    assert grew("leukemia_mtl_verdicts_total", verdict=verdict) == 1
    assert grew("leukemia_mtl_images_total", kind="smear") == 1
    assert grew("leukemia_mtl_rejected_requests_total", reason="too_large") == 1
    assert grew("leukemia_mtl_rejected_requests_total", reason="binary_extension") == 1
    assert grew("leukemia_mtl_rejected_requests_total", reason="length_required") == (1 if shutil.which("curl") else 0)
    assert grew("leukemia_mtl_request_seconds_count", protocol="v2") == 1
    assert _metric(after, "request_predict_seconds_count", model_name="leukemia-mtl") > 0  # kserve's own, per step


def test_serve_refuses_a_release_that_fails_its_checksums(server, tmp_path):
    broken = tmp_path / "release"
    shutil.copytree(server["release"], broken)
    target = next(
        p for p in sorted(broken.rglob("*")) if p.is_file() and p.name != "manifest.json" and p.stat().st_size > 0
    )
    target.write_bytes(b"tampered" + target.read_bytes()[8:])
    port = _free_port()
    result = subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", "serve", "--model", str(broken), "--port", str(port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and target.name in errors[0], result.stderr[-2000:]


def test_a_full_queue_answers_503_and_the_rest_are_answered(server, tmp_path):
    """More images waiting than --queue-images: the request is refused with 503 and a message (retry later), one
    log line, counted; the requests already queued are answered; the server's bad settings are refused first."""
    refused = run_cli("serve", "--model", str(server["release"]), "--batch-images", "8", "--queue-images", "4")
    assert refused.returncode == 1 and "error: --queue-images 4: give at least --batch-images (8)" in refused.stderr
    port = _free_port()
    process = _start(server["release"], port, "--batch-images", "1", "--queue-images", "3", "--batch-wait-ms", "0")
    base = f"http://127.0.0.1:{port}"
    try:
        _first_answer(process, base)
        smear, _ = _images(server["outputs"])
        body = _v2([smear.read_bytes()] * 3, None)  # three images: one such request fills the queue
        results: list[tuple[int, dict]] = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(f"{base}/v2/models/leukemia-mtl/infer", body)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(status for status, _ in results)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, results
        busy = next(answer for status, answer in results if status == 503)
        assert busy["error"].startswith("busy: ") and "images are waiting" in busy["error"] and "retry" in busy["error"]
        metrics = _get(f"{base}/metrics")[1].decode()
        assert _metric(metrics, "leukemia_mtl_requests_total", protocol="v2", outcome="busy") == statuses.count(503)
    finally:
        process.send_signal(signal.SIGTERM)
        log = process.communicate(timeout=60)[0]
    assert "rejected a request: 503 Busy" in log and "Traceback" not in log, log[-3000:]


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        message = (
            "Chromium and chromium-driver are needed to test the page; install them with "
            "`sudo apt-get install -y --no-install-recommends chromium chromium-driver` (Debian/Ubuntu)"
        )
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{message} ({REQUIRE_BROWSER}=1 asks for the browser tests)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2400",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)  # no Selenium Manager download


@pytest.mark.browser
def test_the_page_in_chromium_shows_the_verdict_the_cells_and_the_heat_maps(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    smear, _ = _images(server["outputs"])
    manifest = json.loads((server["release"] / "manifest.json").read_text())
    (expected,) = _predict_cli(server["release"], [smear], tmp_path)
    browser = _browser()
    try:
        browser.get(f"{server['base']}/ui/")
        wait = WebDriverWait(browser, 180)
        wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("data-version"))
        assert manifest["version"] in browser.find_element(By.ID, "model").text
        assert "Research use only" in browser.find_element(By.ID, "notice").text
        browser.find_element(By.ID, "files").send_keys(str(smear))
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda b: b.find_element(By.ID, "status").get_attribute("data-done") == "1")
        answer = browser.find_element(By.CSS_SELECTOR, "#results .answer")
        text = answer.text
        assert answer.get_attribute("data-verdict") == expected["verdict"]
        assert f"P(ALL) {100 * expected['all_probability']:.1f} %" in text
        assert f"{expected['threshold']:.3f}" in answer.find_element(By.CLASS_NAME, "operating-point").text
        fab = answer.find_element(By.CLASS_NAME, "fab")
        assert fab.is_displayed() == (expected["verdict"] == "ALL")  # the FAB type only for a smear called ALL
        assert (
            f"{len(expected['cells'])} cell(s) segmented, {expected['cells_scored_as_blasts']} scored as blasts" in text
        )
        for name in ("overlay", "explanation"):  # the overlay and the Grad-CAM panels, decoded by the browser
            image = answer.find_element(By.CLASS_NAME, name)
            assert image.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", image) > 100
        browser.find_element(By.CSS_SELECTOR, "#card-box summary").click()
        assert "Model card" in browser.find_element(By.ID, "card").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors  # no script error, no resource missing or blocked by the page's policy

        # a file dropped on the form is classified at once; one that is no image is answered with why
        browser.execute_script("""
            const files = new DataTransfer();
            files.items.add(new File([new TextEncoder().encode("no image here")], "broken.jpg", {type: "image/jpeg"}));
            document.getElementById("upload").dispatchEvent(
                new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));""")
        wait.until(
            lambda b: (
                b.find_element(By.ID, "status").get_attribute("data-done") == "1"
                and len(b.find_elements(By.CSS_SELECTOR, "#results .answer")) == 2
            )
        )
        failed = browser.find_element(By.CSS_SELECTOR, "#results .answer")  # the newest answer comes first
        assert "failed" in failed.get_attribute("class").split()
        assert "broken.jpg" in failed.text and "Not classified" in failed.text and "cannot be decoded" in failed.text
        errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert len(errors) == 1 and "/infer" in errors[0] and "400" in errors[0], errors  # the refusal, nothing else
    finally:
        browser.quit()


def test_bad_traffic_leaves_one_log_line_each_and_a_stalled_body_is_cut_off(server, tmp_path):
    """Its own server, with a 2 s body timeout: a 400, a 404 and a client that sends headers and stalls (408 after
    2 s, not held open) leave one log line each and no traceback. Settings that would start a server accepting
    nothing, or crash it, and a port already taken are one line before anything listens."""
    release = server["release"]
    for value in ("inf", "nan", "1e-9"):
        refused = subprocess.run(
            [sys.executable, "-m", "leukemia_mtl", "serve", "--model", str(release), "--max-request-mb", value],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 1 and "error: --max-request-mb" in refused.stderr, refused.stderr[-1000:]
        assert "Traceback" not in refused.stderr
    taken = int(server["base"].rsplit(":", 1)[1])  # the module's server listens there
    busy = subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", "serve", "--model", str(release), "--port", str(taken)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert busy.returncode == 1 and f"--port {taken}: cannot listen there" in busy.stderr, busy.stderr[-1000:]
    assert "serving" not in busy.stderr and "Traceback" not in busy.stderr

    port = _free_port()
    process = _start(release, port, "--request-timeout", "2")
    base = f"http://127.0.0.1:{port}"
    try:
        _first_answer(process, base)
        assert _post(f"{base}/v2/models/leukemia-mtl/infer", _v2([b"not an image"]))[0] == 400
        assert _post(f"{base}/v2/models/no-such-model/infer", _v2([b"x"]))[0] == 404
        started = time.time()
        status, answer = _headers_only(f"{base}/v2/models/leukemia-mtl/infer", 100)  # headers, then nothing
        assert status == 408 and "stalled for 2 s" in answer["error"] and time.time() - started < 15
    finally:
        process.send_signal(signal.SIGTERM)
        log = process.communicate(timeout=60)[0]
    assert "Traceback" not in log and 'File "' not in log, log[-3000:]
    rejected = [line for line in log.splitlines() if "rejected a request" in line]
    assert any(": 400 " in line for line in rejected) and any(": 404 " in line for line in rejected), log[-3000:]
    assert any(": 408 timeout" in line for line in rejected), log[-3000:]
