"""A TCP relay between an MQTT client and its broker that the test can cut at any moment.

Cutting drops whatever is in flight in both directions without the broker going
down, the way a Wi-Fi drop or a NAT timeout does: the client sees a reset,
the broker a vanished peer, and neither gets to finish its exchange.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """Listens on a free loopback port and relays each connection to ``127.0.0.1:upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="cuttable-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cut(self) -> int:
        """Reset every relayed connection now; return how many there were."""
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                # SO_LINGER 0 makes close send a reset: the peers see the link die, not a polite end.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
        return len(doomed) // 2

    def stop(self) -> None:
        self._closing = True
        self._listener.close()
        self.cut()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._upstream_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the broker is down: the client must retry, as it would without a proxy
                continue
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
