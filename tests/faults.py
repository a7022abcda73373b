"""Fault injection for the storage tests: a TCP proxy in front of the S3 server that can drop
connections part-way through a transfer, as a server killed mid-upload or mid-download would."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the upstream server, byte for byte.

    `cut(direction, after_bytes, times)` arms a fault: once `after_bytes` more bytes have flowed
    "up" (client to server: an upload's body) or "down" (server to client: a download's body), the
    connection carrying them is closed at once, `times` times (None: every connection, for good).
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition("//")[2].partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._fault: dict | None = None
        self.cuts = 0
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, direction: str, after_bytes: int, times: int | None = 1) -> None:
        assert direction in ("up", "down")
        with self._lock:
            self._fault = {"direction": direction, "after": after_bytes, "left": times, "seen": 0}

    def heal(self) -> None:
        with self._lock:
            self._fault = None

    def close(self) -> None:
        self.listener.close()
        for sock in list(self._open):
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, server}
            for source, sink, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump, args=(source, sink, direction, (client, server)), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str, pair: tuple) -> None:
        try:
            while data := source.recv(16384):
                with self._lock:
                    fault = self._fault
                    if fault and fault["direction"] == direction:
                        room = fault["after"] - fault["seen"]
                        if len(data) > room:
                            data = data[: max(room, 0)]
                            fault["seen"] = 0
                            self.cuts += 1
                            if fault["left"] is not None:
                                fault["left"] -= 1
                                if fault["left"] <= 0:
                                    self._fault = None
                            sink.sendall(data)
                            raise ConnectionAbortedError("cut")
                        fault["seen"] += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in pair:
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
