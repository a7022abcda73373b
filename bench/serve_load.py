"""`python -m leukemia_mtl serve` under concurrent clients: requests/s, latency, memory, failures, and how the
server's throughput compares with `predict` in one process on the same images.

    python bench/serve_load.py [--seconds 15] [--clients 1,4,16] [--release runs/demo/...release/model] [--ref b53159b]

Without --release, the tests' tiny DAG runs first (its time is in BENCHMARKS.md) to make one. The server runs as
a child process on a free port of 127.0.0.1; each client is a thread that sends one v2 infer request (one
synthetic demo smear, 640x480 JPEG, base64) after another for --seconds, cycling over the smears. The server's
VmRSS is sampled every 0.2 s. After the levels, /metrics must count exactly the requests the clients saw
answered (Prometheus text, scraped). Then `Predictor.predict` in this process, one image after another, on the
same bytes: the server's requests/s over that images/s is the cost of the protocol and the event loop (1 client)
and what concurrency buys (the server answers requests that arrive together in one call of the models). With
--ref, a server from that commit's checkout (a worktree, as bench/demo_side_by_side.py makes) runs the same levels
first, on the same release (one both read), and each level's requests/s is compared with its. Each server's time
from start to listening and its first answer after that are printed, /metrics' batch size histogram where it has
one, and its RSS after each level (flat: memory does not grow with the load).
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


def metrics_text(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        return response.read().decode()


def ok_count(base: str) -> float:
    for line in metrics_text(base).splitlines():
        if line.startswith("leukemia_mtl_requests_total{") and 'outcome="ok"' in line and 'protocol="v2"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def batch_histogram(base: str) -> dict[str, float]:
    """{"le": images answered in batches of at most le, ...} and count and sum, where the server has the histogram."""
    found = {}
    for line in metrics_text(base).splitlines():
        if line.startswith("leukemia_mtl_batch_images_bucket{"):
            found[line.split('le="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(("leukemia_mtl_batch_images_count", "leukemia_mtl_batch_images_sum")):
            found[line.split(" ", 1)[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    return found


def serve_levels(code: Path, release: Path, images: list[bytes], clients: list[int], seconds: float) -> dict:
    """One server started from the checkout `code`: ready time, the first answer, each level of clients, /metrics."""
    port = free_port()
    base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
    spawned = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "leukemia_mtl", "serve", "--model", str(release), "--port", str(port)]
        + ["--model-name", MODEL],
        cwd=code,
        env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if server.poll() is not None:
                sys.exit(f"the server at {code} exited ({server.returncode}) before it answered")
            try:
                urllib.request.urlopen(f"{base}/v2/models/{MODEL}/ready", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        ready = time.perf_counter() - spawned
        rss_ready = rss_mb(server.pid)
        ok, first = request(url, images[0])  # the first answer after it says it is ready
        if not ok:
            sys.exit(f"the server at {code} failed its first request")
        request(url, images[1 % len(images)])
        before = ok_count(base)
        levels = []
        for count in clients:
            level = load(url, images, count, seconds, server.pid)
            level["rss_after_mb"] = rss_mb(server.pid)
            levels.append(level)
        counted = ok_count(base) - before
        histogram = batch_histogram(base)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "code": str(code),
        "ready_s": ready,
        "first_answer_s": first,
        "rss_ready_mb": rss_ready,
        "levels": levels,
        "counted": counted,
        "answered": sum(level["requests"] - level["failed"] for level in levels),
        "batches": histogram,
        "exit": server.returncode,
    }


def predict_rate(release: Path, images: list[bytes], seconds: float) -> float:
    from leukemia_mtl.predict import open_predictor

    predictor = open_predictor(str(release), None, None, None)
    predictor.predict("warm-up.jpg", data=images[0])
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict(f"smear{count}.jpg", data=images[count % len(images)])
        count += 1
    return count / (time.perf_counter() - started)


def print_server(name: str, result: dict, rate: float, reference: dict | None) -> None:
    print(
        f"\n{name} ({result['code']}): listening {result['ready_s']:.1f} s after it was started (RSS "
        f"{result['rss_ready_mb']:.0f} MB); the first answer after that took {result['first_answer_s'] * 1000:.0f} ms"
    )
    print(
        "| clients | requests | failed | requests/s | p50 | p95 | peak server RSS | RSS after | "
        "requests/s over predict's images/s |" + (" requests/s over the reference's |" if reference else "")
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if reference else ""))
    for i, level in enumerate(result["levels"]):
        versus = f" x{level['rps'] / reference['levels'][i]['rps']:.2f} |" if reference else ""
        print(
            f"| {level['clients']} | {level['requests']} | {level['failed']} | {level['rps']:.2f} | {level['p50_s']:.2f} s "
            f"| {level['p95_s']:.2f} s | {level['peak_rss_mb']:.0f} MB | {level['rss_after_mb']:.0f} MB "
            f"| {level['rps'] / rate:.2f} |{versus}"
        )
    batches = result["batches"]
    if batches.get("count"):
        buckets = ", ".join(f"<= {le}: {n:.0f}" for le, n in batches.items() if le not in ("count", "sum"))
        print(
            f"batches: {batches['count']:.0f}, {batches['sum'] / batches['count']:.1f} images each on average "
            f"(cumulative: {buckets})"
        )
    print(f"/metrics counted {result['counted']:.0f} answered v2 requests, the clients saw {result['answered']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each level of clients runs")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--images", type=int, default=8, help="how many distinct smears the clients cycle over")
    parser.add_argument("--release", type=Path, help="a release folder (default: make one with the tests' tiny DAG)")
    parser.add_argument("--ref", help="also serve from this commit (a worktree, build/bench-ref-<ref>), first")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    if args.release is None:
        args.release = make_release(args.work)
    images = smears(args.work, args.images)
    clients = [int(c) for c in args.clients.split(",")]
    results = {}
    if args.ref:
        from demo_side_by_side import worktree

        results["reference"] = serve_levels(worktree(args.ref), args.release, images, clients, args.seconds)
    results["here"] = serve_levels(REPO, args.release, images, clients, args.seconds)
    rate = predict_rate(args.release, images, args.seconds)
    print(f"release {args.release}; {args.seconds:g} s per level; predict in one process here: {rate:.2f} images/s")
    for name, result in results.items():
        print_server(name, result, rate, results.get("reference") if name == "here" else None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"release": str(args.release), "predict_rate": rate, **results}, indent=1))
    bad = [
        name
        for name, r in results.items()
        if r["counted"] != r["answered"] or any(level["failed"] for level in r["levels"])
    ]
    if bad:
        sys.exit(f"FAILED ({', '.join(bad)}): requests failed, or /metrics disagrees with what the clients saw")


if __name__ == "__main__":
    main()
