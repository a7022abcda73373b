"""`python -m leukemia_mtl serve`: a release behind KServe's model server, and a page for the bench.

The answers are predict's (leukemia_mtl.predict.Predictor, the same code on the same pixels): the
server only decodes uploads, bounds them, and encodes the answers. Protocols, all on one port:

- Open Inference Protocol v2 over REST (`/v2/health/live|ready`, `/v2/models/<name>[/ready]`,
  `POST /v2/models/<name>/infer`): a BYTES input `image` of shape [N] (each element an image file,
  base64, in the JSON: the binary-data extension is refused with a 400, because kserve 0.21's REST
  server decodes it as UTF-8 text), an optional BYTES input `name` [N], parameters `kind`
  (auto|smear|cell), `overlay` and `explain` (booleans). Outputs per image: `prediction` (predict's
  JSON answer), `verdict`, `all_probability`, `threshold`, `fab_type`, `cells_scored_as_blasts`, and
  over all cells `cell_boxes` [M, 5] (image index, x, y, width, height) with `cell_blast_probability`
  [M]; the overlay and Grad-CAM PNGs (base64) when asked for.
- KServe v1 (`POST /v1/models/<name>:predict`, instances `{"image": {"b64": ...}, "name", "kind"}`):
  the protocol KServe's batcher sidecar batches (it speaks no v2), so an InferenceService with
  `batcher:` combines concurrent clients' images into one call here.
- `/metrics` (Prometheus: kserve's per-step latencies and this module's requests, images, verdicts),
  and the page at `/ui/`.

The server listens only once the release is loaded, verified and warmed up (kserve's ModelServer starts
with loaded models; the warm-up answers a drawn smear and cell, so the first client does not pay the
traces), so a connection that answers is a ready one. One worker thread runs the models: TensorFlow
already spreads one call over the cores, and the event loop stays free for health checks and metrics
while it works. Requests that arrive together are answered by one call (leukemia_mtl.batching: up
to `batch_max_images`, waiting at most `batch_wait_ms` for company; a full queue answers 503).
Research use only.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import errno
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from leukemia_mtl.batching import MicroBatcher, QueueFull
from leukemia_mtl.config import ServeConfig
from leukemia_mtl.errors import LeukemiaMtlError, printable
from leukemia_mtl.predict import KINDS, NOTICE, ImageRequest, Predictor, open_predictor
from leukemia_mtl.release import MODEL_CARD
from leukemia_mtl.stages import CELL_POSITIVE, POSITIVE_CLASS

# kserve.model_server parses sys.argv when imported (its own flags, abbreviations allowed): ours
# (`serve --model ...`) would be read as its `--model_name`. It sees none of them.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.errors import InferenceError, InvalidInput, ServerNotReady
    from kserve.model_server import app as kserve_app
finally:
    sys.argv = _argv

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "leukemia_mtl_requests", "Inference requests answered, by protocol and outcome", ["protocol", "outcome"]
)
REJECTED = Counter("leukemia_mtl_rejected_requests", "Requests refused before their body was read", ["reason"])
IMAGES = Counter("leukemia_mtl_images", "Images answered, by kind", ["kind"])
VERDICTS = Counter(
    "leukemia_mtl_verdicts",
    "Answers, by verdict (smears: ALL or the negative class; cells: blast or not a blast)",
    ["verdict"],
)
LATENCY = Histogram(
    "leukemia_mtl_request_seconds",
    "Inference request latency, decoding to encoding",
    ["protocol"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
BATCH_IMAGES = Histogram(
    "leukemia_mtl_batch_images",
    "Images answered by one call of the models (requests that arrived together share it)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUED_IMAGES = Gauge("leukemia_mtl_queued_images", "Images waiting for the models")
STARTUP = Gauge(
    "leukemia_mtl_startup_seconds",
    "Seconds the server took to start, by step: load (the release verified, loaded, its models traced), "
    "warm_up (its first answers, before it listens)",
    ["step"],
)
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
# the page loads nothing from elsewhere and runs no inline script: an answer's text cannot become code
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidInput(f"parameter {name!r} must be true or false, got {value!r}")


def _kind(value) -> str:
    if value not in KINDS:
        raise InvalidInput(f"parameter 'kind' must be one of {', '.join(KINDS)}, got {value!r}")
    return value


def _base64(text, where: str) -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{where}: not base64 (send the image file's bytes base64-encoded, or use the binary data extension)"
        ) from None


class Busy(ServerNotReady):
    """The micro-batch queue is full: kserve answers 503, and the client retries."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.error_msg = f"busy: {detail}"


def _warm_up_images() -> list[ImageRequest]:
    """A drawn smear (pale field, red cells, two purple white cells) and a drawn single cell, PNG-encoded: answering
    them runs every step an upload does (decoding, the segmenter, each classifier) once, before the first client."""
    import cv2

    smear = np.full((480, 640, 3), (236, 214, 222), np.uint8)
    for x, y in ((80, 90), (520, 380), (300, 60), (420, 200), (150, 400)):
        cv2.circle(smear, (x, y), 22, (214, 140, 150), -1)
    for x, y in ((250, 250), (470, 110)):
        cv2.circle(smear, (x, y), 30, (120, 60, 150), -1)
    cell = cv2.resize(smear[190:310, 190:310], (257, 257))
    encoded = [cv2.imencode(".png", image[..., ::-1])[1].tobytes() for image in (smear, cell)]
    return [ImageRequest(f"warm-up {kind}", kind, data=data) for kind, data in zip(("smear", "cell"), encoded)]


def _elements(tensor) -> list:
    """A BYTES tensor's elements, flat, as the JSON gave them (kserve's own `as_string` assumes bytes and
    fails on JSON strings)."""
    return list(np.asarray(tensor.data, dtype=object).reshape(-1))


class ReleaseModel(Model):
    """A release as a KServe model: `load` verifies and loads it, `predict` answers v2 and v1 requests."""

    def __init__(
        self,
        model: str,
        config: ServeConfig = ServeConfig(),
        cache_dir: Path | None = None,
        pixel_size_um: float | None = None,
        threshold: float | None = None,
    ) -> None:
        super().__init__(config.model_name)
        self.location, self.config, self.cache_dir = model, config, cache_dir
        self.pixel_size_um, self.threshold = pixel_size_um, threshold
        self.predictor: Predictor | None = None
        self.card = ""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._batcher = MicroBatcher(
            self._answer_many,
            self._worker,
            max_images=config.batch_max_images,
            wait_s=config.batch_wait_ms / 1000,
            max_queued=config.queue_max_images,
            on_batch=BATCH_IMAGES.observe,
        )
        QUEUED_IMAGES.set_function(lambda: self._batcher.queued)
        self.startup: dict[str, float] = {}
        # the overlays and heat maps are written here and read back by the worker, which owns them: a client that
        # leaves while its batch runs cannot delete them from under it, and none outlives its answer
        self._scratch = Path(tempfile.mkdtemp(prefix="leukemia-mtl-serve-"))
        atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)

    def _answer_many(self, requests: list[ImageRequest]) -> list:
        """predict's answers (the worker thread), as JSON-ready dicts with the PNGs base64, or the errors in place."""
        answers = []
        for request, result in zip(requests, self.predictor.predict_many(requests)):
            pngs = {"overlay": request.overlay_path, "explanation": request.explain_path}
            if not isinstance(result, LeukemiaMtlError):
                result = result.to_dict()
                for key, path in pngs.items():
                    result[key] = base64.b64encode(path.read_bytes()).decode() if path else None
            for path in pngs.values():
                if path:
                    path.unlink(missing_ok=True)
            answers.append(result)
        return answers

    def load(self) -> bool:
        """Verify and load the release, then answer the warm-up images, so the first client's answer costs what
        every later one does (the traces and first calls are paid here, before the server listens)."""
        started = time.perf_counter()
        self.predictor = open_predictor(self.location, self.cache_dir, self.pixel_size_um, self.threshold)
        card = self.predictor.release_dir / MODEL_CARD
        self.card = card.read_text(encoding="utf-8") if card.is_file() else ""
        warming = time.perf_counter()
        self.predictor.predict_many(_warm_up_images())  # their answers (or "no white cell") do not matter
        self.startup = {"load": warming - started, "warm_up": time.perf_counter() - warming}
        for step, seconds in self.startup.items():
            STARTUP.labels(step).set(seconds)
        self.ready = True
        return self.ready

    def info(self) -> dict:
        """What the page shows beside every answer: the version, the settings, the card, the notice, and the
        verdict that is a positive one (a smear's, a single cell's), which the page reads instead of knowing."""
        manifest = self.predictor.manifest
        return {
            "name": self.name,
            "version": self.predictor.version,
            "notice": NOTICE,
            "settings": self.predictor.settings(),
            "gate": manifest.get("gate") or {},
            "card": self.card,
            "kinds": list(KINDS),
            "positive": {"smear": POSITIVE_CLASS, "cell": CELL_POSITIVE},
            "max_request_bytes": self.config.max_request_bytes,
            "max_images_per_request": self.config.max_images_per_request,
            "startup_seconds": {step: round(seconds, 3) for step, seconds in self.startup.items()},
        }

    def get_input_types(self) -> list[dict]:
        return [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "name", "datatype": "BYTES", "shape": [-1], "parameters": {"optional": True}},
        ]

    def get_output_types(self) -> list[dict]:
        per_image = [
            ("prediction", "BYTES"),
            ("verdict", "BYTES"),
            ("all_probability", "FP64"),
            ("threshold", "FP64"),
            ("fab_type", "BYTES"),
            ("cells_scored_as_blasts", "INT64"),
            ("overlay_png", "BYTES"),
            ("explanation_png", "BYTES"),
        ]
        return [{"name": n, "datatype": t, "shape": [-1]} for n, t in per_image] + [
            {"name": "cell_boxes", "datatype": "INT64", "shape": [-1, 5]},
            {"name": "cell_blast_probability", "datatype": "FP64", "shape": [-1]},
        ]

    async def predict(self, payload, headers=None, response_headers=None):
        protocol = "v2" if isinstance(payload, InferRequest) else "v1"
        started = time.perf_counter()
        try:
            if protocol == "v2":
                images, options = self._v2_images(payload)
            else:
                images, options = self._v1_images(payload)
            answers = await self._answer(images)
            response = self._v2_response(payload, answers, options) if protocol == "v2" else {"predictions": answers}
        except InvalidInput:
            REQUESTS.labels(protocol, "bad_request").inc()
            raise
        except Busy:
            REQUESTS.labels(protocol, "busy").inc()
            raise
        except InferenceError:
            REQUESTS.labels(protocol, "error").inc()
            raise
        REQUESTS.labels(protocol, "ok").inc()
        LATENCY.labels(protocol).observe(time.perf_counter() - started)
        return response

    def _checked_count(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("the request holds no image")
        if count > self.config.max_images_per_request:
            raise InvalidInput(
                f"the request holds {count} images, more than the {self.config.max_images_per_request} "
                "one request may carry: send them in several requests"
            )

    def _v2_images(self, request: InferRequest) -> tuple[list[tuple[str, bytes, dict]], dict]:
        inputs = {i.name: i for i in request.inputs}
        unknown = sorted(set(inputs) - {"image", "name"})
        if unknown or "image" not in inputs:
            raise InvalidInput(f"expected a BYTES input 'image' (and optionally 'name'), got inputs {sorted(inputs)}")
        image = inputs["image"]
        if image.datatype != "BYTES":
            raise InvalidInput(f"input 'image' must be BYTES (the image files), got {image.datatype}")
        data = _elements(image)
        self._checked_count(len(data))
        if int(np.prod(image.shape)) != len(data):
            raise InvalidInput(f"input 'image' has shape {image.shape} but {len(data)} elements")
        names = [f"image[{i}]" for i in range(len(data))]
        if "name" in inputs:
            given = [
                g.decode("utf-8", "replace") if isinstance(g, bytes) else str(g) for g in _elements(inputs["name"])
            ]
            if len(given) != len(data):
                raise InvalidInput(f"input 'name' has {len(given)} elements for {len(data)} images")
            names = [f"image[{i}] ({printable(n)[:200]})" for i, n in enumerate(given)]
        parameters = dict(request.parameters or {})
        options = {
            "kind": _kind(parameters.get("kind", "auto")),
            "overlay": _flag(parameters.get("overlay", False), "overlay"),
            "explain": _flag(parameters.get("explain", False), "explain"),
        }
        images = [(name, _base64(item, name), options) for name, item in zip(names, data)]
        return images, options

    def _v1_images(self, body) -> tuple[list[tuple[str, bytes, dict]], dict]:
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput('expected {"instances": [{"image": {"b64": "..."}}, ...]}')
        self._checked_count(len(instances))
        images = []
        for i, instance in enumerate(instances):
            where = f"instances[{i}]"
            image = instance.get("image") if isinstance(instance, dict) else None
            if not isinstance(image, dict) or "b64" not in image:
                raise InvalidInput(f'{where}: expected {{"image": {{"b64": "<the image file, base64>"}}}}')
            if "name" in instance:
                where = f"{where} ({printable(str(instance['name']))[:200]})"
            options = {
                "kind": _kind(instance.get("kind", "auto")),
                "overlay": _flag(instance.get("overlay", False), "overlay"),
                "explain": _flag(instance.get("explain", False), "explain"),
            }
            images.append((where, _base64(image["b64"], where), options))
        return images, {}

    async def _answer(self, images: list[tuple[str, bytes, dict]]) -> list[dict]:
        """predict's answer per image, computed in a batch with other requests' images (`MicroBatcher`); the PNGs
        travel in the answer, base64. One image predict refuses fails its request (400), not the batch."""
        tag = uuid.uuid4().hex
        requests = [
            ImageRequest(
                name,
                options["kind"],
                self._scratch / f"{tag}-{i}_overlay.png" if options["overlay"] else None,
                self._scratch / f"{tag}-{i}_gradcam.png" if options["explain"] else None,
                data,
            )
            for i, (name, data, options) in enumerate(images)
        ]
        try:
            answers = await self._batcher.submit(requests)
        except QueueFull as exc:
            raise Busy(str(exc)) from None
        except Exception:
            log.exception("predicting %s", ", ".join(name for name, _, _ in images))
            raise InferenceError("the server failed to answer (its log says why)") from None
        for answer in answers:
            if isinstance(answer, LeukemiaMtlError):  # the bad-input kinds predict refuses: the client's to fix
                raise InvalidInput(printable(str(answer)))
        for answer in answers:
            IMAGES.labels(answer["kind"]).inc()
            VERDICTS.labels(answer["verdict"]).inc()
        return answers

    def _v2_response(self, request: InferRequest, answers: list[dict], options: dict) -> InferResponse:
        n = len(answers)
        boxes = [[i, *cell["bbox"]] for i, a in enumerate(answers) for cell in a["cells"]]
        scores = [cell["blast_probability"] for a in answers for cell in a["cells"]]
        plain = [{**a, "overlay": None, "explanation": None} for a in answers]  # the PNGs are outputs of their own
        outputs = [
            InferOutput("prediction", [n], "BYTES", [json.dumps(a) for a in plain]),
            InferOutput("verdict", [n], "BYTES", [a["verdict"] for a in answers]),
            InferOutput("all_probability", [n], "FP64", [a["all_probability"] for a in answers]),
            InferOutput("threshold", [n], "FP64", [a["threshold"] for a in answers]),
            InferOutput("fab_type", [n], "BYTES", [(a["fab"] or {}).get("type", "") for a in answers]),
            InferOutput("cells_scored_as_blasts", [n], "INT64", [a["cells_scored_as_blasts"] for a in answers]),
            InferOutput("cell_boxes", [len(boxes), 5], "INT64", [v for row in boxes for v in row]),
            InferOutput("cell_blast_probability", [len(scores)], "FP64", scores),
        ]
        if options["overlay"]:
            outputs.append(InferOutput("overlay_png", [n], "BYTES", [a["overlay"] for a in answers]))
        if options["explain"]:
            outputs.append(InferOutput("explanation_png", [n], "BYTES", [a["explanation"] for a in answers]))
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=self.predictor.version,
            infer_outputs=outputs,
            parameters={"model_version": self.predictor.version, "notice": NOTICE},
        )


# the slowest upload a body may come at, beyond the timeout (a 64 MiB body then has 30 s + 17 min)
MIN_UPLOAD_RATE = 64 << 10


class BodyLimit:
    """ASGI middleware: a POST without Content-Length (411), above the bound (413) or in the binary data
    extension (400; kserve would fail on it with a 500) is refused before its body is read, so an upload cannot
    grow the server's memory past the bound; a body that does not arrive within the timeout is answered 408."""

    def __init__(self, app, max_bytes: int, timeout_s: float = ServeConfig.request_timeout_s) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None:
            return await self._refuse(
                send, 411, "length_required", "send the request's Content-Length (chunked uploads are not accepted)"
            )
        if b"inference-header-content-length" in headers:
            return await self._refuse(
                send,
                400,
                "binary_extension",
                "the binary data extension is not accepted: kserve's REST server decodes BYTES "
                "tensors as UTF-8 text, which an image file is not; send each image base64-encoded "
                "in the JSON 'data'",
            )
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._refuse(
                send,
                413,
                "too_large",
                f"the request is {length.decode(errors='replace')} bytes, more than the "
                f"{self.max_bytes:,} this server accepts (send fewer or smaller images per request)",
            )
        body = await self._body(receive, int(length))
        if body is None:  # the client left mid-body: nobody to answer
            return None
        if body is False:
            return await self._refuse(
                send,
                408,
                "timeout",
                f"the request's body stalled for {self.timeout_s:g} s or "
                f"came slower than {MIN_UPLOAD_RATE >> 10} KiB/s",
            )
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _body(self, receive, length: int) -> bytes | bool | None:
        """The whole body (at most the bound, checked above); None when the client disconnected, False when a chunk
        did not come within the timeout or the whole took longer than the timeout plus the body at MIN_UPLOAD_RATE."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s + length / MIN_UPLOAD_RATE
        chunks, more = [], True
        try:
            while more:
                wait = min(self.timeout_s, deadline - loop.time())
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
        except TimeoutError:
            return False
        return b"".join(chunks)

    @staticmethod
    async def _refuse(send, status: int, reason: str, message: str) -> None:
        REJECTED.labels(reason).inc()
        log.warning("rejected a request: %d %s: %s", status, reason, message)
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_page(app, model: ReleaseModel) -> None:
    """The page (/ui/) and what it reads about the model (/ui/model.json), on kserve's own FastAPI app."""
    from fastapi.responses import JSONResponse, RedirectResponse, Response

    files = resources.files("leukemia_mtl") / "web"
    pages = {route: (files.joinpath(name).read_bytes(), media) for route, (name, media) in PAGE_FILES.items()}
    security = {
        "content-security-policy": PAGE_POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }

    def page_file(route: str):
        async def handler() -> Response:
            body, media = pages[route]
            return Response(body, media_type=media, headers=security)

        return handler

    async def model_json() -> JSONResponse:
        return JSONResponse(model.info(), headers=security)

    async def to_page() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.add_api_route("/ui", to_page, methods=["GET"], include_in_schema=False)
    for route in pages:
        app.add_api_route(f"/ui/{route}", page_file(route), methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/model.json", model_json, methods=["GET"], include_in_schema=False)
    app.add_middleware(BodyLimit, max_bytes=model.config.max_request_bytes, timeout_s=model.config.request_timeout_s)


class OneLineRejections(logging.Filter):
    """kserve logs every refused request (a bad input, an unknown model) with its full traceback: 314 of them in a
    short probe of bad traffic. A client's mistake is one line, with its status; a server fault keeps its traceback."""

    STATUS: ClassVar[dict[str, int]] = {
        "InvalidInput": 400,
        "ModelNotFound": 404,
        "RequestValidationError": 422,
        "Busy": 503,
    }

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            status = self.STATUS.get(type(exc).__name__)
            if status is not None:
                record.msg, record.args = (
                    "rejected a request: %d %s: %s",
                    (status, type(exc).__name__, printable(str(exc))[:300]),
                )
                record.exc_info, record.exc_text, record.levelno, record.levelname = (
                    None,
                    None,
                    logging.WARNING,
                    "WARNING",
                )
        return True


def check_port_free(port: int) -> None:
    """Refuse a port something already listens on, before the server says it serves there."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            why = (
                "another server holds it; stop it or give another port"
                if exc.errno == errno.EADDRINUSE
                else "give another port (below 1024 needs privileges)"
                if exc.errno == errno.EACCES
                else "give another port"
            )
            raise LeukemiaMtlError(f"--port {port}: cannot listen there ({exc.strerror or exc}): {why}") from None


def serve(
    model: str,
    config: ServeConfig = ServeConfig(),
    cache_dir: Path | None = None,
    pixel_size_um: float | None = None,
    threshold: float | None = None,
) -> None:
    """Load and verify the release, then listen on `config.port` (v2, v1, /metrics, /ui/) until SIGTERM or SIGINT."""
    check_port_free(config.port)
    logging.getLogger("kserve").addFilter(OneLineRejections())
    release = ReleaseModel(model, config, cache_dir, pixel_size_um, threshold)
    release.load()  # a bad release stops here, before anything listens
    install_page(kserve_app, release)
    check_port_free(config.port)  # again: the release took a while to load
    log.warning(
        "serving %s (%s) on port %d: v2 /v2/models/%s/infer, page /ui/, metrics /metrics; loaded in %.1f s, "
        "warmed up in %.2f s; batches of up to %d images. %s",
        release.predictor.version,
        release.predictor.release_dir,
        config.port,
        config.model_name,
        release.startup["load"],
        release.startup["warm_up"],
        config.batch_max_images,
        NOTICE,
    )
    ModelServer(http_port=config.port, enable_grpc=False, workers=1).start([release])
