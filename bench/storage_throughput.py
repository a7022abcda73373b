"""MB/s of our storage layer (sha256 metadata, verified upload, temp-file download checked and
renamed, retries) over the raw `minio` client moving the same files, against a local S3 server.

    python bench/storage_throughput.py [--files 8] [--kb 4096] [--repeats 3]

The server is moto's (in-memory, on 127.0.0.1), so the figures are about client-side overhead,
not a real network. Goal: ratio (ours / raw MB/s) >= 0.9. Run at 1x, 2x and 4x the files.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=8, help="files at 1x (2x and 4x follow)")
    parser.add_argument(
        "--kb", type=int, default=4096, help="size of each file in KB (the pipeline's crops and masks are tens of KB)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from minio import Minio
    from moto.server import ThreadedMotoServer

    from leukemia_mtl.data.storage import ObjectStore

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        {"MINIO_ENDPOINT": f"http://{host}:{port}", "MINIO_ACCESS_KEY": "bench", "MINIO_SECRET_KEY": "bench-secret"}
    )
    ours = ObjectStore.from_env()
    raw = Minio(f"{host}:{port}", access_key="bench", secret_key="bench-secret", secure=False)
    ours.ensure_bucket("bench")
    print(
        f"{'files':>5s} {'MB':>5s} {'up ours':>8s} {'up raw':>8s} {'ratio':>6s} {'down ours':>9s} {'down raw':>9s} {'ratio':>6s}  (MB/s)"
    )
    try:
        for factor in (1, 2, 4):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                files = []
                for index in range(args.files * factor):
                    path = root / f"f{index}.bin"
                    path.write_bytes(os.urandom(args.kb << 10))
                    files.append(path)
                total = len(files) * args.kb / 1024
                timings = {k: [] for k in ("up_ours", "up_raw", "down_ours", "down_raw")}
                for repeat in range(args.repeats):
                    for name, upload in (
                        ("up_ours", lambda p, k: ours.upload_file(p, "bench", k)),
                        ("up_raw", lambda p, k: raw.fput_object("bench", k, str(p))),
                    ):
                        started = time.perf_counter()
                        for path in files:
                            upload(path, f"{name}/{repeat}/{path.name}")
                        timings[name].append(time.perf_counter() - started)
                    for name, prefix, download in (
                        ("down_ours", "up_ours", lambda k, p: ours.download_file("bench", k, p)),
                        ("down_raw", "up_raw", lambda k, p: raw.fget_object("bench", k, str(p))),
                    ):
                        started = time.perf_counter()
                        for path in files:
                            download(f"{prefix}/{repeat}/{path.name}", root / "dl" / name / str(repeat) / path.name)
                        timings[name].append(time.perf_counter() - started)
                rate = {k: total / statistics.median(v) for k, v in timings.items()}
                print(
                    f"{len(files):5d} {total:5.0f} {rate['up_ours']:8.0f} {rate['up_raw']:8.0f} {rate['up_ours'] / rate['up_raw']:6.2f} "
                    f"{rate['down_ours']:9.0f} {rate['down_raw']:9.0f} {rate['down_ours'] / rate['down_raw']:6.2f}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
