"""The application on a real uvicorn server (127.0.0.1, a free port, a background thread): 50 concurrent clients
served without an error, idle and slow connections closed on time, an oversized body cut off, a connection cap."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qualiface.serve import FaceService, ServerOptions, ServeSettings, create_app, serving_in_thread


@contextmanager
def _server(service: FaceService, settings: ServeSettings | None = None, **options: float) -> Iterator[int]:
    with serving_in_thread(create_app(service, settings), ServerOptions(port=0, **options)) as url:  # type: ignore[arg-type]
        yield int(url.rsplit(":", 1)[1])


def _closed_after(sock: socket.socket, limit: float = 10.0) -> float:
    """Seconds until the server closes ``sock`` (reads and drops what it sends before)."""
    start = time.monotonic()
    sock.settimeout(limit)
    while sock.recv(65536):
        pass
    return time.monotonic() - start


def test_50_concurrent_clients_are_all_served(service: FaceService, crop: bytes) -> None:
    clients, each = 50, 4
    statuses: list[int] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def client(port: int) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            start.wait()
            for _ in range(each):
                connection.request("POST", "/embed?aligned=1", body=crop)
                response = connection.getresponse()
                body = json.loads(response.read())
                statuses.append(response.status)
                if response.status != 200 or len(body["faces"][0]["embedding"]) != 8:
                    errors.append(f"{response.status}: {body}")
            connection.close()
        except Exception as exc:
            errors.append(repr(exc))

    with _server(service) as port:
        threads = [threading.Thread(target=client, args=(port,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert errors == []
    assert statuses == [200] * (clients * each)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(service: FaceService) -> None:
    with _server(service, keep_alive=1) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert 0.8 < _closed_after(sock) < 3


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(service: FaceService) -> None:
    with _server(service, header_timeout=1) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        assert 0.8 < _closed_after(sock) < 3


def test_a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout(service: FaceService) -> None:
    """Each byte would restart uvicorn's keep-alive timer; the head's own timeout still closes the connection."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    with (
        _server(service, header_timeout=1, keep_alive=1) as port,
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        start = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"":
                    break
        except OSError:
            pass
        elapsed = time.monotonic() - start
    assert 0.8 < elapsed < 3


def test_a_huge_chunked_body_is_cut_at_the_limit(service: FaceService) -> None:
    """400 MB announced as chunks: the server answers 413 after the limit (1 MiB) and closes the connection."""
    sent = 0
    chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"  # 64 KiB per chunk
    settings = ServeSettings(max_bytes=2**20)
    with _server(service, settings) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = b""
        try:
            while sent < 400 * 2**20 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += 0x10000
        except OSError:
            pass
        sock.settimeout(10)
        try:
            while part := sock.recv(65536):
                answer += part
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert sent < 64 * 2**20  # cut off near the limit, not after the 400 MB


def test_a_negative_content_length_never_reaches_the_model(service: FaceService) -> None:
    with _server(service) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n" + b"\0" * 1000)
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")  # h11 refuses it as it parses the head


def test_connections_beyond_the_cap_get_503(service: FaceService) -> None:
    with _server(service, max_connections=3) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port)) as extra:
                extra.settimeout(10)
                answer = extra.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b'"error": "busy: too many open connections' in answer
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200


@pytest.mark.parametrize("port", [-1, 70000])
def test_bad_server_options_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        ServerOptions(port=port)


def test_the_socket_listens_as_soon_as_it_is_bound() -> None:
    """The CLI prints the URL after binding and before uvicorn starts: a client told it is held, not refused."""
    from qualiface.serve.server import bind, url_of

    with bind("127.0.0.1", 0) as sock, socket.create_connection(sock.getsockname()[:2], timeout=5):
        assert url_of(sock).startswith("http://127.0.0.1:")


def test_answers_are_not_held_back_by_nagles_algorithm(service: FaceService) -> None:
    """Head and body go out as two writes: without TCP_NODELAY each answer waited ~40 ms for a delayed ACK."""
    with _server(service) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        connection.getresponse().read()
        start = time.monotonic()
        for _ in range(20):
            connection.request("GET", "/health")
            assert connection.getresponse().read()
        assert time.monotonic() - start < 0.7  # at least 20 x 40 ms = 0.8 s with the delay
