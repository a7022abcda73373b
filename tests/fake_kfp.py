"""A stand-in for the KFP API server on 127.0.0.1: answers the calls kfp.Client makes to create
runs, experiments and recurring runs, and records each request for the test to inspect."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeKfpServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, method: str) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                entry = {
                    "method": method,
                    "path": self.path,
                    "body": body,
                    "authorization": self.headers.get("authorization"),
                }
                server.requests.append(entry)
                return entry

            def do_GET(self):
                self._record("GET")
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply({"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply({"experiments": []})
                return self._reply({})

            def do_POST(self):
                entry = self._record("POST")
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", "display_name": entry["body"]["display_name"]})
                if self.path == "/apis/v2beta1/runs":
                    return self._reply({"run_id": "run-42", "display_name": entry["body"]["display_name"]})
                if self.path == "/apis/v2beta1/recurringruns":
                    return self._reply({"recurring_run_id": "rr-7", "display_name": entry["body"]["display_name"]})
                return self._reply({})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
