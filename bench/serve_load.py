"""`python -m leukemia_mtl serve` under concurrent clients: requests/s, latency, memory, failures, and how the
server's throughput compares with `predict` in one process on the same images.

    python bench/serve_load.py [--seconds 15] [--clients 1,4,16] [--release runs/demo/...release/model]

Without --release, the tests' tiny DAG runs first (its time is in BENCHMARKS.md) to make one. The server runs as
a child process on a free port of 127.0.0.1; each client is a thread that sends one v2 infer request (one
synthetic demo smear, 640x480 JPEG, base64) after another for --seconds, cycling over the smears. The server's
VmRSS is sampled every 0.2 s. After the levels, /metrics must count exactly the requests the clients saw
answered (Prometheus text, scraped). Then `Predictor.predict` in this process, one image after another, on the
same bytes: the server's requests/s over that images/s is the cost of the protocol and the event loop (1 client)
and what concurrency buys (TensorFlow already spreads one call over the cores, and the server runs one call at a
time).
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]
MODEL = "leukemia-mtl"

from predict_stream import make_release, rss_mb  # noqa: E402  (bench/ is on the path above)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smears(work: Path, count: int) -> list[bytes]:
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.synth import generate

    source = work / "source"
    if not source.exists():
        generate(source, get_profile("demo").synth, seed=3, progress=False)
    return [p.read_bytes() for p in sorted((source / "ALL_IDB1").glob("*.jpg"))[:count]]


def request(url: str, image: bytes) -> tuple[bool, float]:
    body = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]}]}
    ).encode()
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, body, {"content-type": "application/json"}), timeout=600
        ) as response:
            ok = response.status == 200 and bool(json.loads(response.read())["outputs"])
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError):
        ok = False
    return ok, time.perf_counter() - started


def load(url: str, images: list[bytes], clients: int, seconds: float, pid: int) -> dict:
    results: list[tuple[bool, float]] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            outcome = request(url, images[i % len(images)])
            with lock:
                results.append(outcome)
            i += clients

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid) or 0.0)
        time.sleep(0.2)
    wall = time.perf_counter() - started  # until the last request sent before the deadline is answered
    latencies = np.array([s for ok, s in results if ok])
    return {
        "clients": clients,
        "requests": len(results),
        "failed": sum(not ok for ok, _ in results),
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_s": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "p95_s": float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
        "peak_rss_mb": peak,
    }


def ok_count(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("leukemia_mtl_requests_total{") and 'outcome="ok"' in line and 'protocol="v2"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def predict_rate(release: Path, images: list[bytes], seconds: float) -> float:
    from leukemia_mtl.predict import open_predictor

    predictor = open_predictor(str(release), None, None, None)
    predictor.predict("warm-up.jpg", data=images[0])
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict(f"smear{count}.jpg", data=images[count % len(images)])
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each level of clients runs")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--images", type=int, default=8, help="how many distinct smears the clients cycle over")
    parser.add_argument("--release", type=Path, help="a release folder (default: make one with the tests' tiny DAG)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    args = parser.parse_args()
    if args.release is None:
        args.release = make_release(args.work)
    images = smears(args.work, args.images)
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leukemia_mtl",
            "serve",
            "--model",
            str(args.release),
            "--port",
            str(port),
            "--model-name",
            MODEL,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                sys.exit(f"the server exited ({server.returncode}) before it answered")
            try:
                urllib.request.urlopen(f"{base}/v2/models/{MODEL}/ready", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        print(f"ready after {time.perf_counter() - started:.1f} s (RSS {rss_mb(server.pid):.0f} MB)", flush=True)
        request(url, images[0])  # the first call builds TensorFlow's graphs; not a load figure
        before = ok_count(base)
        levels = [load(url, images, int(c), args.seconds, server.pid) for c in args.clients.split(",")]
        counted = ok_count(base) - before
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    rate = predict_rate(args.release, images, args.seconds)
    answered = sum(level["requests"] - level["failed"] for level in levels)
    print(
        "| clients | requests | failed | requests/s | p50 | p95 | peak server RSS | requests/s over predict's images/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for level in levels:
        print(
            f"| {level['clients']} | {level['requests']} | {level['failed']} | {level['rps']:.2f} | {level['p50_s']:.2f} s "
            f"| {level['p95_s']:.2f} s | {level['peak_rss_mb']:.0f} MB | {level['rps'] / rate:.2f} |"
        )
    print(
        f"predict in one process: {rate:.2f} images/s; /metrics counted {counted:.0f} answered v2 requests, "
        f"the clients saw {answered} (server exit code {server.returncode})"
    )
    if counted != answered or any(level["failed"] for level in levels):
        sys.exit("FAILED: requests failed, or /metrics disagrees with what the clients saw")


if __name__ == "__main__":
    main()
