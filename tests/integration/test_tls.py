"""TLS against the real binary: https and plain HTTP on one port, --tls-only,
HTTP/1.0 and keep-alive over TLS, a streaming tunnel over https, certificate
reload on SIGHUP, start-up errors, old protocol versions, and tls:// targets.

Certificates are made at test time with the `openssl` command: a test CA, a
server certificate for localhost / 127.0.0.1, a second one for the reload test
and one for the wrong name."""
import asyncio
import base64
import http.client
import json
import pathlib
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import warnings

import pytest
import websockets.client
import websockets.exceptions

from conftest import BINARY, SANITIZED, Source, pattern_bytes, wait_for
from nwclient import Client, HttpError
from wsclient_util import (OP_BINARY, OP_CLOSE, RawWs, close_payload, encode_frame, handshake_request,
                           push_until_refused)

MiB = 1 << 20

# Served as /netwine.js from a temporary --js-client directory: big enough to
# take many TLS records and socket writes, and checked byte for byte.
NETWINE_JS = b"/* netwine.js stand-in */\n" + pattern_bytes(300 * 1024, seed=11)


# ---------------------------------------------------------------- certificates

class Pki:
    """A test CA and certificates signed by it, in one directory."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.ca_key = self.dir / "ca.key"
        self.ca = self.dir / "ca.pem"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key,
                      "-out", self.ca, "-days", "2", "-subj", "/CN=netwine test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.server = self.issue("server", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.server2 = self.issue("server2", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.wrong = self.issue("wrong", "wrong.example", "DNS:wrong.example")

    def _openssl(self, *args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    def issue(self, name, cn, san):
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.pem")
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                      "-subj", f"/CN={cn}")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make test certificates")
    p = Pki(tmp_path_factory.mktemp("pki"))
    site = tmp_path_factory.mktemp("site")
    (site / "www").mkdir()
    (site / "www" / "index.html").write_text("<!doctype html><title>netwine</title>\n")
    (site / "js").mkdir()
    (site / "js" / "netwine.js").write_bytes(NETWINE_JS)
    p.site_args = ["--www", str(site / "www"), "--js-client", str(site / "js")]
    return p


def client_context(pki):
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_args(pki, mode):
    cert, key = pki.server
    args = pki.site_args + ["--tls-cert", str(cert), "--tls-key", str(key)]
    return args + (["--tls-only"] if mode == "tls-only" else [])


def tls_connect(n, pki, host="localhost", ctx=None):
    raw = socket.create_connection((n.host, n.port), timeout=10)
    return (ctx or client_context(pki)).wrap_socket(raw, server_hostname=host)


def read_to_eof(s):
    chunks = []
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def fingerprint(sock):
    return sock.getpeercert(binary_form=True)


# ------------------------------------------------------------------- https

@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_https_get_verified_against_the_test_ca(pki, netwine, mode):
    n = netwine(*tls_args(pki, mode))
    for host in ("localhost", "127.0.0.1"):
        # the certificate names both; each is checked (SNI is sent for the name only)
        conn = http.client.HTTPSConnection(host, n.port, context=client_context(pki), timeout=10)
        conn.connect()
        if host == "localhost":
            assert conn.sock.selected_alpn_protocol() == "http/1.1"
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.request("GET", "/netwine.js")
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == NETWINE_JS
        conn.close()


def test_plain_http_shares_the_port(pki, netwine):
    n = netwine(*tls_args(pki, "mixed"))
    conn = http.client.HTTPConnection(n.host, n.port, timeout=10)
    for _ in range(3):  # keep-alive on the plain side of the filter too
        conn.request("GET", "/netwine.js")
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == NETWINE_JS
    conn.close()
    assert "http+https://" in n.logs()


def test_tls_only_refuses_plain_http(pki, netwine):
    n = netwine(*tls_args(pki, "tls-only"))
    with socket.create_connection((n.host, n.port), timeout=10) as s:
        s.sendall(b"GET /netwine.js HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_to_eof(s)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert b"netwine.js" not in answer
    # and https still works there
    with tls_connect(n, pki) as t:
        t.sendall(b"GET /netwine.js HTTP/1.0\r\nHost: localhost\r\n\r\n")
        head, _, body = read_to_eof(t).partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0], head
        assert body == NETWINE_JS


@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_http10_and_keep_alive_over_tls(pki, netwine, mode):
    n = netwine(*tls_args(pki, mode))
    # HTTP/1.0: one request, the server closes after the body.
    with tls_connect(n, pki) as t:
        t.sendall(b"GET /netwine.js HTTP/1.0\r\nHost: localhost\r\n\r\n")
        answer = read_to_eof(t)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    assert body == NETWINE_JS
    # HTTP/1.1 keep-alive: many requests on one TLS connection.
    conn = http.client.HTTPSConnection("localhost", n.port, context=client_context(pki), timeout=10)
    conn.request("GET", "/netwine.js")
    first = conn.getresponse()
    assert first.read() == NETWINE_JS
    sock = conn.sock
    for path in ("/", "/netwine.js", "/netwine.js"):
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200
        r.read()
        assert conn.sock is sock, "keep-alive connection was not reused"
    # a request with a body on the same connection
    conn.request("POST", "/netwine/nosuchkey/send?off=0", body=b"x" * 5000)
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.request("GET", "/netwine.js")
    assert conn.getresponse().read() == NETWINE_JS
    conn.close()


@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_header_deadline_closes_silent_connections(pki, netwine, mode):
    # The guard against slowloris works through the TLS bufferevents too: a client
    # that sends nothing, and one that finishes the handshake and then sends
    # nothing, are both cut off after --header-timeout.
    n = netwine(*tls_args(pki, mode), "--header-timeout", "0.5")
    silent = socket.create_connection((n.host, n.port), timeout=10)
    idle = tls_connect(n, pki)
    started = time.monotonic()
    assert read_to_eof(silent) == b""
    assert read_to_eof(idle) == b""
    assert time.monotonic() - started < 5
    silent.close()
    idle.close()
    with tls_connect(n, pki) as s:  # and the server still serves
        s.sendall(b"GET /netwine.js HTTP/1.0\r\n\r\n")
        assert read_to_eof(s).endswith(NETWINE_JS)
    assert n.stop() == 0


# ------------------------------------------------------- tunnels over https

def connection_factory(n, pki, secure):
    if secure:
        return lambda: http.client.HTTPSConnection("localhost", n.port, context=client_context(pki),
                                                   timeout=30)
    return lambda: http.client.HTTPConnection(n.host, n.port, timeout=30)


def read_frame_header(resp):
    line = resp.readline()
    if not line:
        raise EOFError("stream ended")
    return line.rstrip(b"\n").split(b" ")


def stream_echo(connect, target, payload, chunk=64 * 1024):
    """Opens a binary-framed stream session to an echo `target`, sends `payload`
    upstream with sends, and returns what came back downstream."""
    conn = connect()
    conn.request("POST", f"/netwine/open?target={target}&mode=stream&framing=binary")
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    ok = read_frame_header(resp)
    assert ok[0] == b"OK", ok
    key = ok[1].decode()
    errors = []

    def send_all():
        try:
            sender = connect()
            off = 0
            while off < len(payload):
                piece = payload[off:off + chunk]
                sender.request("POST", f"/netwine/{key}/send?off={off}", body=piece)
                r = sender.getresponse()
                body = r.read()
                if r.status == 503:  # target busy: back-pressure, try again shortly
                    time.sleep(0.02)
                    continue
                assert r.status == 200, (r.status, body)
                off = int(body.split()[1])
            sender.close()
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=send_all, daemon=True)
    t.start()
    acker = connect()
    got = bytearray()
    last_ack = 0
    while len(got) < len(payload):
        frame = read_frame_header(resp)
        kind = frame[0]
        if kind == b"D":
            offset, length = int(frame[1]), int(frame[2])
            assert offset == len(got)
            data = resp.read(length)
            assert len(data) == length
            got += data
            if len(got) - last_ack >= 128 * 1024:  # ack at least every quarter buffer
                acker.request("POST", f"/netwine/{key}/send?off=0&ack={len(got)}", body=b"")
                r = acker.getresponse()
                r.read()
                assert r.status == 200
                last_ack = len(got)
        elif kind in (b"H", b"P"):
            continue
        else:
            raise AssertionError(f"unexpected frame {frame!r} after {len(got)} bytes")
    t.join(30)
    assert not errors, errors
    closer = connect()
    closer.request("POST", f"/netwine/{key}/close", body=b"")
    closer.getresponse().read()
    for c in (conn, acker, closer):
        c.close()
    return bytes(got)


@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_streaming_session_over_https_carries_1mib_exactly(pki, netwine, tcp_target, mode):
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, mode), "--target", echo.address)
    payload = pattern_bytes(1 << 20, seed=3)
    assert stream_echo(connection_factory(n, pki, True), echo.address, payload) == payload
    assert n.stop() == 0


def test_streaming_session_over_plain_side_of_shared_port(pki, netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, "mixed"), "--target", echo.address)
    payload = pattern_bytes(1 << 20, seed=5)
    assert stream_echo(connection_factory(n, pki, False), echo.address, payload) == payload


def banner_then_close(conn):
    conn.sendall(b"hello from the target\n")
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)


@pytest.mark.parametrize("secure", [True, False])
def test_close_delimited_http10_stream_arrives_whole(pki, netwine, tcp_target, secure):
    # HTTP/1.0 streams end by closing: every byte must be out before the close.
    target = tcp_target(banner_then_close)
    n = netwine(*tls_args(pki, "mixed"), "--target", target.address)
    request = (f"POST /netwine/open?target={target.address}&mode=stream&framing=text HTTP/1.0\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    if secure:
        s = tls_connect(n, pki)
    else:
        s = socket.create_connection((n.host, n.port), timeout=10)
    with s:
        s.sendall(request)
        answer = read_to_eof(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    lines = body.split(b"\n")
    assert lines[0].startswith(b"OK ")
    assert any(l.startswith(b"D 0 ") for l in lines), body
    assert any(l.startswith(b"C 1000") for l in lines), body


# --------------------------------------------------------------------- wss

async def ws_echo(url, ctx, payload, chunk=64 * 1024):
    async with websockets.client.connect(url, ssl=ctx, subprotocols=["binary"], max_size=None,
                                         ping_interval=None, compression=None) as ws:
        assert ws.subprotocol == "binary"

        async def sender():
            for i in range(0, len(payload), chunk):
                await ws.send(payload[i:i + chunk])

        task = asyncio.ensure_future(sender())
        got = bytearray()
        while len(got) < len(payload):
            got += await asyncio.wait_for(ws.recv(), 30)
        await task
        return bytes(got)


@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_wss_echo(pki, netwine, tcp_target, mode):
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, mode), "--target", echo.address, "--access-log", "")
    payload = pattern_bytes(4 << 20, seed=9)
    url = f"wss://localhost:{n.port}/netwine/ws?target={echo.address}"
    assert asyncio.run(ws_echo(url, client_context(pki), payload)) == payload
    if mode == "mixed":  # and ws:// on the same port
        url = f"ws://127.0.0.1:{n.port}/netwine/ws?target={echo.address}"
        assert asyncio.run(ws_echo(url, None, payload)) == payload
    assert n.stop() == 0


@pytest.mark.parametrize("mode,secure", [("mixed", True), ("mixed", False), ("tls-only", True)])
def test_tls_port_websockets_take_turns_between_threads(pki, netwine, tcp_target, mode, secure):
    """Binary WebSockets on a shared port move to worker threads like plain-port
    ones (Server::detach_socket takes the filter's TLS session and the bytes it
    had not passed on): over TLS and on the plain side, each relays its own bytes,
    a frame sent along with the handshake (one record, or several) included."""
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, mode), "--target", echo.address, "--threads", "3", "--access-log", "")
    ctx = client_context(pki)
    wrap = (lambda s: ctx.wrap_socket(s, server_hostname="localhost")) if secure else None
    early = [pattern_bytes(3000 if i % 2 else 40000, seed=20 + i) for i in range(6)]
    conns = [RawWs(n.host, n.port, f"/netwine/ws?target={echo.address}", ["binary"], wrap=wrap,
                   send_with_handshake=encode_frame(OP_BINARY, early[i])) for i in range(6)]
    status_url = f"{'https' if mode == 'tls-only' else 'http'}://localhost:{n.port}/netwine/status"
    with urllib.request.urlopen(status_url, timeout=10, context=ctx) as r:
        threads = sorted(s["thread"] for s in json.load(r)["sessions"])
    assert threads == [0, 0, 1, 1, 2, 2]  # round robin over 3 loops
    payloads = [pattern_bytes(300_000 + i, seed=40 + i) for i in range(len(conns))]
    for ws, first, data in zip(conns, early, payloads):
        ws.send(OP_BINARY, data)
    for ws, first, data in zip(conns, early, payloads):
        got = b""
        while len(got) < len(first) + len(data):
            op, p = ws.recv_message()
            assert op == OP_BINARY
            got += p
        assert got == first + data
    for ws in conns:
        ws.send(OP_CLOSE, close_payload(1000))
        assert ws.expect_close()[0] == 1000
        ws.close()
    assert n.stop() == 0


def test_tls_connection_moves_with_half_a_record_unread(pki, netwine, tcp_target):
    """The TLS session moves with what the filter read and could not decrypt yet:
    a request for a session on the other loop arrives with half of the next record
    (the next request), the connection moves there, and that request is answered
    once the rest of its record arrives."""
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, "mixed"), "--target", echo.address, "--threads", "2", "--access-log", "")
    status, body = open_poll(n, echo.address)  # this connection's loop, then the other's turn:
    assert status == 200, body
    key = body.split()[1].decode()
    raw = socket.create_connection((n.host, n.port), timeout=10)  # so this one is on the other loop
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump_in():
        data = raw.recv(65536)
        if not data:
            raise EOFError("netwine closed the connection")
        incoming.write(data)

    def read_until(buf, done):
        while not done(buf):
            try:
                buf += tls.read(65536)
            except ssl.SSLWantReadError:
                pump_in()
        return buf

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            pump_in()
    raw.sendall(outgoing.read())

    def send_request(off, data):
        return (f"POST /netwine/{key}/send?off={off} HTTP/1.1\r\nHost: localhost\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    tls.write(send_request(0, b"first\n"))
    first_record = outgoing.read()
    tls.write(send_request(6, b"second\n"))
    second_record = outgoing.read()
    half = len(second_record) // 2
    raw.sendall(first_record + second_record[:half])
    answers = read_until(b"", lambda b: b"OK 6\n" in b)
    assert answers.startswith(b"HTTP/1.1 200"), answers
    raw.sendall(second_record[half:])
    answers = read_until(answers, lambda b: b"OK 13\n" in b)
    assert answers.count(b"HTTP/1.1 200") == 2, answers
    # The target got both, in order, through the session's loop.
    poll = http.client.HTTPConnection(n.host, n.port, timeout=10)
    got = b""
    while len(got) < 13:
        poll.request("GET", f"/netwine/{key}/poll?framing=binary&ack={len(got)}")
        r = poll.getresponse()
        body = r.read()
        assert r.status == 200, body
        while body.startswith(b"D "):
            head, _, rest = body.partition(b"\n")
            length = int(head.split()[2])
            got += rest[:length]
            body = rest[length:]
    assert got == b"first\nsecond\n"
    poll.close()
    # Stopping with the moved connection open: its loop closes it (and frees its
    # TLS filter) on its own thread, then exits cleanly.
    assert n.stop() == 0
    raw.close()


@pytest.mark.parametrize("secure", [True, False])
def test_shared_port_websocket_held_back_by_a_slow_target_then_delivered_whole(pki, netwine, tcp_target,
                                                                              secure):
    """The shared port reads on past libevent's 4096 bytes per read event (tls.cpp,
    MixedConnection): a WebSocket pushing to a target that does not read must still
    be held back, over TLS and on the plain side alike, and once the target reads,
    every byte arrives, in order, before the close."""
    frame_payload = pattern_bytes(256 * 1024, seed=13)
    release = threading.Event()
    got = {"bytes": 0, "ok": True, "eof": threading.Event()}

    def slow_reader(conn):
        release.wait(60)
        conn.settimeout(30)
        at = 0
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            for i in range(0, len(b), len(frame_payload)):  # compare against the repeating payload
                part = b[i:i + len(frame_payload)]
                off = at % len(frame_payload)
                if part[:len(frame_payload) - off] != frame_payload[off:off + len(part)]:
                    got["ok"] = False
                rest = part[len(frame_payload) - off:]
                if rest and rest != frame_payload[:len(rest)]:
                    got["ok"] = False
                at += len(part)
        got["bytes"] = at
        got["eof"].set()

    target = tcp_target(slow_reader)
    n = netwine(*tls_args(pki, "mixed"), "--target", target.address)
    rss0 = n.rss_kib()
    ctx = client_context(pki)
    wrap = (lambda s: ctx.wrap_socket(s, server_hostname="localhost")) if secure else None
    ws = RawWs(n.host, n.port, f"/netwine/ws?target={target.address}", ["binary"], wrap=wrap)
    frame = encode_frame(OP_BINARY, frame_payload)
    ws.sock.setblocking(False)
    frames, out, pushed = 0, bytearray(), 0
    while pushed < 256 * MiB:  # bounded; stops once a whole second passes without room
        if not out:
            out += frame
            frames += 1
        if not select.select([], [ws.sock], [], 1.0)[1]:
            break
        try:
            sent = ws.sock.send(out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            continue
        del out[:sent]
        pushed += sent
    grown = n.rss_kib() - rss0
    # 1 MiB session buffer + one 256 KiB read batch + socket buffers on both sides.
    assert pushed < 24 * MiB, f"netwine kept reading: {pushed} bytes pushed, RSS +{grown} KiB"
    if not SANITIZED:
        assert grown < 16 * 1024, f"RSS grew {grown} KiB"
    release.set()
    ws.sock.setblocking(True)
    ws.sock.settimeout(30)
    ws.sock.sendall(bytes(out))  # the rest of the last frame (over TLS: the same write, retried)
    ws.sock.sendall(encode_frame(OP_CLOSE, close_payload(1000)))
    assert got["eof"].wait(60), f"the target saw no end: {got['bytes']} bytes"
    assert got["ok"], "the target received bytes out of order or changed"
    assert got["bytes"] == frames * len(frame_payload), (got["bytes"], frames)
    ws.abort()
    assert n.stop() == 0


async def ws_status(url, ctx, origin):
    try:
        async with websockets.client.connect(url, ssl=ctx, origin=origin, subprotocols=["binary"],
                                             ping_interval=None):
            return 101
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code


def test_origin_scheme_follows_the_connection(pki, netwine, tcp_target):
    # Same-origin means the page's scheme too: https pages over TLS, http pages
    # over plain, on the same port (Server::is_tls after the first byte).
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, "mixed"), "--target", echo.address)
    path = f"/netwine/ws?target={echo.address}"
    https_page, http_page = f"https://localhost:{n.port}", f"http://localhost:{n.port}"
    ctx = client_context(pki)
    assert asyncio.run(ws_status(f"wss://localhost:{n.port}{path}", ctx, https_page)) == 101
    assert asyncio.run(ws_status(f"wss://localhost:{n.port}{path}", ctx, http_page)) == 403
    assert asyncio.run(ws_status(f"ws://localhost:{n.port}{path}", None, http_page)) == 101
    assert asyncio.run(ws_status(f"ws://localhost:{n.port}{path}", None, https_page)) == 403


# ------------------------------------------------------------------- reload

def test_sighup_reloads_the_certificate_and_keeps_it_when_broken(pki, netwine, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.server[0], cert)
    shutil.copy(pki.server[1], key)
    n = netwine(*pki.site_args, "--tls-cert", str(cert), "--tls-key", str(key))
    first = tls_connect(n, pki)
    old = fingerprint(first)
    assert old == ssl.PEM_cert_to_DER_cert(pki.server[0].read_text())

    shutil.copy(pki.server2[0], cert)
    shutil.copy(pki.server2[1], key)
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "TLS reload: new connections use" in n.logs()), n.logs()
    with tls_connect(n, pki) as s:
        new = fingerprint(s)
    assert new == ssl.PEM_cert_to_DER_cert(pki.server2[0].read_text())
    # the connection made before the reload still works, with its certificate
    first.sendall(b"GET /netwine.js HTTP/1.0\r\nHost: localhost\r\n\r\n")
    assert read_to_eof(first).endswith(NETWINE_JS)
    assert fingerprint(first) == old
    first.close()

    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "TLS reload failed" in n.logs()), n.logs()
    failure = [l for l in n.logs().splitlines() if "TLS reload failed" in l][0]
    assert str(cert) in failure
    with tls_connect(n, pki) as s:
        assert fingerprint(s) == new
    assert n.stop() == 0


# -------------------------------------------------------------- start-up

def run_netwine(*args):
    return subprocess.run([str(BINARY), "--listen", "127.0.0.1:0", *map(str, args)],
                          capture_output=True, text=True, timeout=20)


def test_bad_certificate_or_key_stops_startup_naming_the_file(pki, tmp_path):
    cert, key = pki.server
    missing = tmp_path / "missing.pem"
    r = run_netwine("--tls-cert", missing, "--tls-key", key)
    assert r.returncode == 2
    assert str(missing) in r.stderr + r.stdout

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    r = run_netwine("--tls-cert", garbage, "--tls-key", key)
    assert r.returncode == 2
    assert str(garbage) in r.stderr + r.stdout

    r = run_netwine("--tls-cert", cert, "--tls-key", pki.wrong[1])  # key of another certificate
    assert r.returncode == 2
    assert str(pki.wrong[1]) in r.stderr + r.stdout

    r = run_netwine("--tls-cert", cert, "--tls-key", key, "--target-ca", missing)
    assert r.returncode == 2
    assert str(missing) in r.stderr + r.stdout


# --------------------------------------------------- old protocol versions

def old_tls_client():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # deprecated, which is the point of the test
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def client_offers(ctx):
    """The legacy_version of the ClientHello `ctx` sends, or None if it sends none."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen = {}

    def grab():
        c, _ = listener.accept()
        c.settimeout(5)
        try:
            seen["hello"] = c.recv(4096)
        finally:
            c.close()

    t = threading.Thread(target=grab, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw:
            try:
                ctx.wrap_socket(raw, server_hostname="localhost")
            except (ssl.SSLError, OSError):
                pass
    finally:
        t.join(5)
        listener.close()
    hello = seen.get("hello", b"")
    if len(hello) < 11 or hello[0] != 0x16 or hello[5] != 0x01:
        return None
    return (hello[9], hello[10])


@pytest.mark.parametrize("mode", ["mixed", "tls-only"])
def test_tls_1_0_and_1_1_are_refused(pki, netwine, mode):
    try:
        ctx = old_tls_client()
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this Python/OpenSSL cannot configure a TLS 1.0/1.1 client: {e}")
    offered = client_offers(ctx)
    if offered is None or offered > (3, 2):
        pytest.skip(f"the local OpenSSL will not offer TLS 1.0/1.1 (ClientHello version {offered})")
    n = netwine(*tls_args(pki, mode))
    with socket.create_connection((n.host, n.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    # a modern client still gets in
    with tls_connect(n, pki) as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")


# ----------------------------------------------------------- tls:// targets

class TlsEchoServer:
    """A threaded TLS echo server with the given certificate. With `stall`, each
    connection completes its handshake, then reads nothing until `release` is set,
    and then only reads (a sink, so that no echo meets a closed peer)."""

    def __init__(self, cert, key, stall=False):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        # Python sets this by default: it would hide an end without close_notify.
        self.ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.clean_ends = 0   # the client ended with a TLS close_notify
        self.dirty_ends = 0   # the TCP connection ended without one (truncation)
        self.other_ends = []  # anything else (a reset, a TLS error), by exception
        self.closed = False
        self.stall = stall
        self.release = threading.Event()
        self.received = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        try:
            raw.settimeout(30)
            with self.ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as s:
                self.handshakes += 1
                if self.stall:
                    self.release.wait(30)
                while True:
                    try:
                        data = s.recv(65536)
                    except ssl.SSLError as e:
                        # EOF with no close_notify: SSLEOFError between records,
                        # a plain SSLError with this reason inside one.
                        if isinstance(e, ssl.SSLEOFError) or e.reason == "UNEXPECTED_EOF_WHILE_READING":
                            self.dirty_ends += 1
                            return
                        raise
                    if not data:
                        self.clean_ends += 1
                        return
                    self.received += len(data)
                    if not self.stall:
                        s.sendall(data)
        except (OSError, ssl.SSLError) as e:
            # failed handshakes: the tests look at what netwine reports
            self.other_ends.append(repr(e))

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def tls_echo():
    made = []

    def make(cert_and_key, stall=False):
        s = TlsEchoServer(*cert_and_key, stall=stall)
        made.append(s)
        return s

    yield make
    for s in made:
        s.release.set()
        s.close()


def open_poll(n, target):
    conn = http.client.HTTPConnection(n.host, n.port, timeout=20)
    conn.request("POST", f"/netwine/open?target={target}&mode=poll")
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_tls_target_verified_with_target_ca(pki, netwine, tls_echo):
    server = tls_echo(pki.server)
    target = f"tls://localhost:{server.port}"
    by_address = f"tls://127.0.0.1:{server.port}"  # checked against the IP subjectAltName
    n = netwine("--target", target, "--target", by_address, "--target-ca", str(pki.ca))
    payload = pattern_bytes(1 << 20, seed=7)
    connect = connection_factory(n, pki, False)
    assert stream_echo(connect, target, payload) == payload
    assert stream_echo(connect, by_address, b"by address\n") == b"by address\n"
    assert server.handshakes >= 2
    # stream_echo closes its sessions: netwine ends its TLS to the target with a
    # close_notify, so the target can tell the end from a truncation attack.
    assert wait_for(lambda: server.clean_ends == 2), (server.clean_ends, server.dirty_ends)
    assert server.dirty_ends == 0
    assert n.stop() == 0


def test_tls_target_with_wrong_name_or_unknown_ca_is_refused(pki, netwine, tls_echo):
    wrong = tls_echo(pki.wrong)
    good = tls_echo(pki.server)
    n = netwine("--target", f"tls://localhost:{wrong.port}", "--target", f"tls://localhost:{good.port}",
                "--target-ca", str(pki.ca))
    status, body = open_poll(n, f"tls://localhost:{wrong.port}")
    assert status == 502, body
    err = json.loads(body)
    assert err["error"] == "target_tls_failed", err
    assert "hostname mismatch" in err["message"], err

    # without --target-ca the test CA is unknown: the good server is refused too
    n2 = netwine("--target", f"tls://localhost:{good.port}")
    status, body = open_poll(n2, f"tls://localhost:{good.port}")
    assert status == 502, body
    err = json.loads(body)
    assert err["error"] == "target_tls_failed"
    assert "certificate" in err["message"] or "issuer" in err["message"], err


def test_tls_target_that_speaks_plain_tcp_fails_cleanly(pki, netwine, tcp_target):
    plain = tcp_target(banner_then_close)
    n = netwine("--target", f"tls://localhost:{plain.port}", "--target-ca", str(pki.ca))
    status, body = open_poll(n, f"tls://localhost:{plain.port}")
    assert status == 502, body
    assert json.loads(body)["error"] == "target_tls_failed"


def test_sighup_reloads_the_target_ca(pki, netwine, tls_echo, tmp_path):
    """--target-ca is read again on SIGHUP: a target signed by a CA the file did
    not hold is refused before and accepted after; a broken file keeps the CAs."""
    good = tls_echo(pki.server)
    target = f"tls://localhost:{good.port}"
    ca_file = tmp_path / "target-ca.pem"
    # A valid certificate that is not the issuer of the target's: loads, trusts nothing useful.
    shutil.copy(pki.server2[0], ca_file)
    n = netwine("--target", target, "--target-ca", str(ca_file))
    status, body = open_poll(n, target)
    assert status == 502, body
    assert json.loads(body)["error"] == "target_tls_failed"

    shutil.copy(pki.ca, ca_file)
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "target TLS reload: CAs from" in n.logs()), n.logs()
    payload = b"trusted after the reload\n"
    assert stream_echo(connection_factory(n, pki, False), target, payload) == payload

    ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "target TLS reload failed" in n.logs()), n.logs()
    assert str(ca_file) in [l for l in n.logs().splitlines() if "target TLS reload failed" in l][0]
    assert stream_echo(connection_factory(n, pki, False), target, payload) == payload
    assert n.stop() == 0


def test_tls_target_that_never_reads_is_let_go_after_the_client_closes(pki, netwine, tls_echo):
    """The client closes while a tls:// target is not reading: netwine cannot hand
    over the rest (nor the close_notify that would follow it), so it holds the
    session at most --session-idle-timeout, then lets the target go. No hang, the
    session leaves the table, another TLS target keeps working meanwhile, and the
    stalled target, once it reads, sees a truncation (no close_notify) rather than
    a clean end: it never got everything."""
    stalled = tls_echo(pki.server, stall=True)
    good = tls_echo(pki.server)
    stalled_target = f"tls://localhost:{stalled.port}"
    good_target = f"tls://localhost:{good.port}"
    n = netwine("--target", stalled_target, "--target", good_target, "--target-ca", str(pki.ca),
                "--session-idle-timeout", "2s", "--poll-wait", "500ms")
    c = Client(n.host, n.port)
    s = c.open(stalled_target, mode="poll")
    chunk = pattern_bytes(256 * 1024, seed=3)
    sent = 0
    busy = None
    for _ in range(256):  # bounded: 64 MiB at most
        try:
            s.send(chunk)
            sent += len(chunk)
        except HttpError as e:
            busy = e
            break
    assert busy is not None and busy.status == 503 and busy.error == "target_busy", busy
    assert c.status()["sessions_open"] == 1
    s.close()
    # Held while the target might still take the rest, then let go.
    assert wait_for(lambda: c.status()["sessions_open"] == 0, 10), c.status()
    payload = pattern_bytes(300 * 1024, seed=5)
    assert stream_echo(connection_factory(n, pki, False), good_target, payload) == payload
    stalled.release.set()
    assert wait_for(lambda: stalled.dirty_ends == 1, 20), (stalled.clean_ends, stalled.dirty_ends, stalled.other_ends, stalled.received)
    assert stalled.clean_ends == 0
    assert 0 < stalled.received < sent, (stalled.received, sent)
    assert n.stop() == 0


def test_tls_target_that_never_reads_stops_reading_the_websocket(pki, netwine, tls_echo):
    """A WebSocket client pushing to a tls:// target that does not read: netwine
    stops reading the client once its buffer for the target is full (the client's
    socket stops taking data) instead of queueing ciphertext without bound."""
    stalled = tls_echo(pki.server, stall=True)
    target = f"tls://localhost:{stalled.port}"
    n = netwine("--target", target, "--target-ca", str(pki.ca))
    rss0 = n.rss_kib()
    ws = RawWs(n.host, n.port, f"/netwine/ws?target={target}", ["binary"])
    ws.sock.setblocking(False)
    pushed = push_until_refused(ws.sock, encode_frame(OP_BINARY, pattern_bytes(256 * 1024, seed=9)), 256 * MiB)
    grown = n.rss_kib() - rss0
    # 1 MiB session buffer + 256 KiB of ciphertext + one read batch + socket buffers.
    assert pushed < 24 * MiB, f"netwine kept reading: {pushed} bytes pushed, RSS +{grown} KiB"
    if not SANITIZED:
        assert grown < 16 * 1024, f"RSS grew {grown} KiB"
    ws.abort()
    assert n.stop() == 0


def test_wss_and_https_clients_that_never_read_hold_back_the_target(pki, netwine, tcp_target):
    """Clients over TLS that never read (a wss WebSocket, an https stream): netwine
    stops reading the target once a session's buffers are full, so the source
    stalls and memory stays bounded: TLS records wait as plaintext, not as an
    unbounded queue of ciphertext."""
    src = Source()
    source = tcp_target(src)
    n = netwine(*tls_args(pki, "shared"), "--target", source.address)
    rss0 = n.rss_kib()
    held = []
    try:
        for _ in range(2):
            s = tls_connect(n, pki)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            req, _ = handshake_request("localhost", n.port, f"/netwine/ws?target={source.address}", ["binary"],
                                       extra={"Origin": f"https://localhost:{n.port}"})
            s.sendall(req)
            held.append(s)
            st = tls_connect(n, pki)
            st.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            st.sendall(f"POST /netwine/open?target={source.address}&mode=stream&framing=binary HTTP/1.1\r\n"
                       f"Host: localhost:{n.port}\r\nContent-Length: 0\r\n\r\n".encode())
            held.append(st)
        assert wait_for(src.stalled(), 60), f"the source never stalled: {src.sent} bytes taken"
        grown = n.rss_kib() - rss0
        print(f"4 TLS sessions not read: the source pushed {src.sent} bytes, RSS +{grown} KiB")
        # Taken from the source, per session: the 1 MiB session buffer, at most 1 MiB
        # queued to the client, and the kernel's socket buffers on the way, which
        # autotuning may grow to ~10 MiB (tcp_rmem + tcp_wmem maxima); unbounded
        # queueing would take hundreds of MiB in the same time. netwine's memory:
        # up to twice its own share (4096-byte reads in 8 KiB chains).
        assert src.sent < 4 * 16 * MiB, f"{src.sent} bytes taken from the source"
        if not SANITIZED:
            assert grown < 4 * 2 * 2 * 1024, f"RSS grew {grown} KiB with 4 sessions not read"
    finally:
        src.stop.set()
        for h in held:
            h.close()
    assert n.stop() == 0


def content_length(head):
    """The Content-Length of the HTTP answer `head` starts with (0 if the head is
    not all there yet)."""
    if b"\r\n\r\n" not in head:
        return 0
    for line in head[:head.index(b"\r\n\r\n")].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize("mode,secure", [("mixed", True), ("mixed", False), ("tls-only", True)])
def test_tls_port_connections_take_turns_and_move_to_their_sessions_loop(pki, netwine, tcp_target, mode, secure):
    """On a TLS port too, connections take turns between the loops (each loop
    makes its own TLS handshakes) and a request for a session on another loop moves
    its connection there with its TLS session (front.hpp): one keep-alive
    connection serves sessions on every loop, one request at a time and pipelined."""
    echo = tcp_target("echo")
    n = netwine(*tls_args(pki, mode), "--target", echo.address, "--threads", "3", "--access-log", "")
    ctx = client_context(pki)

    def connection():
        if secure:
            return http.client.HTTPSConnection("localhost", n.port, timeout=10, context=ctx)
        return http.client.HTTPConnection(n.host, n.port, timeout=10)

    def call(conn, method, path, body=None):
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()

    keys = []
    for _ in range(6):  # a new connection each: the turns go round
        c = connection()
        status, body = call(c, "POST", f"/netwine/open?target={echo.address}&mode=poll")
        c.close()
        assert status == 200 and body.startswith(b"OK "), body
        keys.append(body.split()[1].decode())
    c = connection()
    status, body = call(c, "GET", "/netwine/status")
    assert status == 200
    assert sorted({s["thread"] for s in json.loads(body)["sessions"]}) == [0, 1, 2]
    # One keep-alive connection, moving to each session's loop in turn.
    sent = {k: 0 for k in keys}
    for rnd in range(2):
        for k in keys:
            msg = f"round {rnd} to {k[:6]}\n".encode()
            status, body = call(c, "POST", f"/netwine/{k}/send?off={sent[k]}", msg)
            assert status == 200 and body == f"OK {sent[k] + len(msg)}\n".encode(), body
            got = b""
            while len(got) < len(msg):
                status, body = call(c, "GET", f"/netwine/{k}/poll?ack={sent[k] + len(got)}")
                assert status == 200
                for line in body.split(b"\n"):
                    if line.startswith(b"D "):
                        off, payload = line.split(b" ")[1:]
                        data = base64.b64decode(payload)
                        got += data[sent[k] + len(got) - int(off):]
            assert got == msg
            sent[k] += len(msg)
    c.close()
    # Pipelined, in one write (one TLS record or one plain segment): each send
    # moves the connection with the requests behind it, still encrypted or not.
    sock = tls_connect(n, pki) if secure else socket.create_connection((n.host, n.port), timeout=10)
    raw = b""
    for k in keys:
        raw += (f"POST /netwine/{k}/send?off={sent[k]} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz").encode()
    sock.sendall(raw)
    buf, bodies = b"", []
    while len(bodies) < len(keys):  # each answer: head, then Content-Length bytes
        while b"\r\n\r\n" not in buf or len(buf) < buf.index(b"\r\n\r\n") + 4 + content_length(buf):
            chunk = sock.recv(65536)
            assert chunk, buf
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        assert buf.startswith(b"HTTP/1.1 200"), buf[:200]
        bodies.append(buf[end:end + content_length(buf)])
        buf = buf[end + content_length(buf):]
    assert bodies == [f"OK {sent[k] + 1}\n".encode() for k in keys]
    sock.close()
    assert n.stop() == 0
