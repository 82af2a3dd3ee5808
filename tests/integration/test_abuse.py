"""Abuse against the real binary: each test does something hostile or careless,
asserts netwine's clear answer, that netwine survives, and that an unrelated
session keeps flowing meanwhile (a background WebSocket echo, checked during and
after every abuse).

Numbers worth knowing (each stated where it is used): 10,000 idle connections,
64 file descriptors for the exhaustion test, 2000 guessed keys.
"""
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import SANITIZED, Source, wait_until
from nwclient import Client, FrameReader, HttpError, ProtocolError
from wsclient_util import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, RawWs, encode_frame,
                           push_until_refused)

MiB = 1 << 20
SEED = 4242
# A sanitizer build keeps freed memory in quarantine (and pads every allocation):
# its RSS says nothing about netwine's, so memory bounds are checked on plain
# builds only. What a peer managed to push is checked on every build.


def status_of(response: bytes):
    """The status code of a raw HTTP response, or None for no (or no HTTP) answer."""
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(m.group(1)) if m else None


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of the process, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def complete_response(buf):
    """True once `buf` holds a whole response with a Content-Length body."""
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(sep and m and len(body) >= int(m.group(1)))


def raw_exchange(n, data, timeout=5, until_answer=False):
    """Sends `data` on a new connection; returns (everything received, closed) where
    `closed` says the server closed the connection within `timeout`. With
    `until_answer` it returns as soon as a whole response is in."""
    with socket.create_connection((n.host, n.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may close before reading everything
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                b = s.recv(65536)
            except socket.timeout:
                return bytes(out), False
            except OSError:
                return bytes(out), True
            if not b:
                return bytes(out), True
            out += b
            if until_answer and complete_response(out):
                return bytes(out), False
        return bytes(out), False


def served(n):
    """A plain request on a new connection gets its answer (the server is fine)."""
    r, _ = raw_exchange(n, b"GET /netwine/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return status_of(r) == 200


# ------------------------------------------------------------ targets

class Silent:
    """Target handler that accepts and then neither reads nor writes until netwine
    closes (seen as EOF once it reads) or the test ends. `read` lets it read to see EOF."""

    def __init__(self, read=False):
        self.read = read
        self.stop = threading.Event()
        self.eofs = 0
        self.lock = threading.Lock()

    def __call__(self, conn):
        if not self.read:
            self.stop.wait(60)  # holds the connection for the test; released at teardown
            return
        conn.settimeout(0.2)
        while not self.stop.is_set():
            try:
                if conn.recv(65536) == b"":
                    with self.lock:
                        self.eofs += 1
                    return
            except socket.timeout:
                continue


# ------------------------------------------------------------ the background session

class BackgroundEcho:
    """An unrelated WebSocket session (subprotocol "binary") to an echo target, run
    by its own thread for the whole test: one small message, its echo, the next.
    `trips` counts round trips; check() asserts it is still flowing."""

    def __init__(self, n, target):
        self.ws = RawWs(n.host, n.port, f"/netwine/ws?target={target.address}", ["binary"])
        self.trips = 0
        self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ws, sock = self.ws, self.ws.sock
        i = 0
        try:
            while not self.stop.is_set():
                payload = b"background %d " % i + os.urandom(8).hex().encode()
                ws.send(OP_BINARY, payload)
                got = b""
                deadline = time.monotonic() + 20
                while len(got) < len(payload):
                    if self.stop.is_set():
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no echo for 20 s after {self.trips} round trips")
                    r, _, _ = select.select([sock], [], [], 0.2)
                    if not r:
                        continue
                    ws._fill()
                    while (f := ws.try_frame()) is not None:
                        _, op, p = f
                        if op == OP_PING:
                            ws.send(OP_PONG, p)
                        elif op in (OP_BINARY, OP_CONT):
                            got += p
                        elif op == OP_CLOSE:
                            raise EOFError(f"closed: {p!r}")
                assert got == payload, (got, payload)
                self.trips += 1
                i += 1
                self.stop.wait(0.02)  # pacing, not synchronisation
        except BaseException as e:
            self.error = e

    def mark(self):
        assert self.error is None, f"background session failed: {self.error!r}"
        return self.trips, time.monotonic()

    def check(self, since=None, timeout=15):
        """The session flowed since `since` (a mark(): a round trip completed, if the
        abuse lasted longer than a second) and still flows: two more round trips
        within `timeout`."""
        assert self.error is None, f"background session failed: {self.error!r}"
        if since is not None and time.monotonic() - since[1] > 1.0:
            assert self.trips > since[0], "the background session stalled during the abuse"
        want = self.trips + 2
        wait_until(lambda: self.trips >= want or self.error, timeout, "background round trips")
        assert self.error is None, f"background session failed: {self.error!r}"

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.ws.close()


@pytest.fixture
def bg():
    """Factory: bg(netwine, echo_target) -> BackgroundEcho, closed after the test."""
    made = []

    def make(n, target):
        b = BackgroundEcho(n, target)
        made.append(b)
        b.check()
        return b

    yield make
    for b in made:
        b.close()


def start(netwine, *targets, extra=(), access_log=False):
    args = []
    for t in targets:
        args += ["--target", t.address]
    if not access_log:
        args += ["--access-log", ""]
    return netwine(*args, *extra)


# ------------------------------------------------------------ slowloris

def dribble(n, prefix, limit_s, step=0.1):
    """Sends `prefix`, then one byte every `step` seconds. Returns (seconds until the
    server closed the connection or None if it did not within `limit_s`, what it sent)."""
    s = socket.create_connection((n.host, n.port), timeout=5)
    got = bytearray()
    try:
        s.sendall(prefix)
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            r, _, _ = select.select([s], [], [], step)
            if r:
                try:
                    b = s.recv(65536)
                except OSError:
                    return time.monotonic() - t0, bytes(got)
                if not b:
                    return time.monotonic() - t0, bytes(got)
                got += b
                continue
            try:
                s.send(b"a")
            except OSError:
                return time.monotonic() - t0, bytes(got)
        return None, bytes(got)
    finally:
        s.close()


def test_dribbled_heads_and_bodies_are_cut(netwine, tcp_target, bg):
    """--header-timeout 1: a request (head and body) must arrive within it, or keep
    arriving at a useful rate; a dribbling client is cut within 1 s + a margin,
    on the first request of a connection and on any later keep-alive request."""
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--header-timeout", "1", "--http-idle-timeout", "30"])
    b = bg(n, echo)
    open_head = (b"POST /netwine/open?target=%s&mode=poll HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 100000\r\n\r\n" % echo.address.encode())
    first_ok = b"GET /netwine/status HTTP/1.1\r\nHost: x\r\n\r\n"
    cases = {
        "body of a first request": open_head,
        "body of a keep-alive request": first_ok + open_head,
        "head of a keep-alive request": first_ok + b"GET /netwine/status HTTP/1.1\r\nX-Slow: ",
    }
    for what, prefix in cases.items():
        mark = b.mark()
        took, answer = dribble(n, prefix, limit_s=6)
        assert took is not None, f"{what}: still open after 6 s of dribbling"
        assert took < 3.5, f"{what}: cut only after {took:.1f}s"
        # Whatever came back is the first request's answer, nothing for the dribbled one.
        assert answer.count(b"HTTP/1.1 ") == prefix.count(b"HTTP/1.1\r\n") - 1, (what, answer[:300])
        b.check(since=mark)
    assert served(n)
    assert "header timeout" in n.logs()


def test_slow_but_steady_body_is_not_cut(netwine, tcp_target):
    """A body arriving over several header-timeouts at a useful rate (here 40 KB/s,
    100 KB in 2.5 s with --header-timeout 1) is not slowloris: it is answered."""
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--header-timeout", "1"])
    c = Client(n.host, n.port)
    s = c.open(echo.address, mode="poll")
    body = os.urandom(100000)
    with socket.create_connection((n.host, n.port), timeout=10) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % (s.path("send", off=0).encode(), len(body)))
        for i in range(0, len(body), 10000):
            sock.sendall(body[i:i + 10000])
            time.sleep(0.25)  # the client's pace: the point of the test
        answer = sock.recv(65536)
    assert status_of(answer) == 200, answer[:300]
    assert answer.endswith(b"OK 100000\n")
    s.close()


# ------------------------------------------------------------ many idle connections

IDLE_CONNECTIONS = 10000
IDLE_RSS_PER_CONNECTION_KIB = 8


def test_many_idle_connections(netwine, tcp_target, bg):
    """10,000 connections that never send a byte (fewer if RLIMIT_NOFILE's hard
    limit is lower; the number is in the output): netwine keeps serving others,
    memory per idle connection stays under 8 KiB, and closing them gives back
    every descriptor at once (not at the header timeout)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(IDLE_CONNECTIONS, hard - 256)
    if count < 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 256), hard))
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--header-timeout", "60"])
    b = bg(n, echo)
    fds0, rss0 = fd_count(n.pid), n.rss_kib()
    idle = []
    try:
        mark = b.mark()
        for _ in range(count):
            idle.append(socket.create_connection((n.host, n.port), timeout=10))
        wait_until(lambda: fd_count(n.pid) >= fds0 + count, 30, "netwine to accept them all")
        grown = n.rss_kib() - rss0
        print(f"{count} idle connections: RSS +{grown} KiB, {grown / count:.2f} KiB each")
        if not SANITIZED:
            assert grown / count < IDLE_RSS_PER_CONNECTION_KIB, f"{grown} KiB for {count} idle connections"
        assert served(n)
        b.check(since=mark)
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: fd_count(n.pid) <= fds0, 30, "netwine to close them")
    assert served(n)


# ------------------------------------------------------------ descriptors exhausted

FD_LIMIT = 64


def test_descriptors_exhausted(netwine, tcp_target, bg):
    """RLIMIT_NOFILE 64 (set on the running process): clients connect until accept
    fails with EMFILE. netwine must not spin (CPU over 2 s stays low), must log the
    accept error at a bounded rate, keeps serving the sessions it has, and serves
    new clients again once connections close."""
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--header-timeout", "60"])
    resource.prlimit(n.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    b = bg(n, echo)
    clients = []
    try:
        # Fill every descriptor netwine has left, then queue more in the backlog.
        for _ in range(FD_LIMIT + 16):
            clients.append(socket.create_connection((n.host, n.port), timeout=10))
        wait_until(lambda: "accept failed" in n.logs(), 10, "the accept error in the log")
        assert fd_count(n.pid) >= FD_LIMIT - 1
        mark = b.mark()
        lines0 = n.logs().count("accept failed")
        cpu0, t0 = cpu_seconds(n.pid), time.monotonic()
        time.sleep(2.0)  # the measurement window, not a synchronisation
        cpu, elapsed = cpu_seconds(n.pid) - cpu0, time.monotonic() - t0
        lines = n.logs().count("accept failed") - lines0
        assert cpu < 0.25 * elapsed, f"netwine used {cpu:.2f}s of CPU in {elapsed:.1f}s: spinning on accept"
        assert lines <= 3, f"{lines} accept-error lines in {elapsed:.1f}s"
        b.check(since=mark)  # sessions it already has keep flowing
    finally:
        for s in clients:
            s.close()
    wait_until(lambda: served(n), 15, "netwine to serve again")
    b.check()


# ------------------------------------------------------------ oversize

def test_oversize_heads_bodies_and_frames(netwine, tcp_target, bg):
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--max-header-size", "4K", "--max-body-size", "64K",
                                    "--ws-max-message", "64K", "--header-timeout", "2"])
    b = bg(n, echo)
    mark = b.mark()
    # A head past --max-header-size: one huge header, and many small ones.
    for head in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: b\r\n" * 1000 + b"\r\n",
                 b"GET /" + b"p" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        r, closed = raw_exchange(n, head)
        assert status_of(r) in (400, 431) and closed, r[:200]
    # A header line that never ends: refused once past the limit, not buffered.
    with socket.create_connection((n.host, n.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        sent, answer = 0, b""
        for _ in range(64):  # at most 4 MiB
            try:
                s.sendall(b"z" * 65536)
                sent += 65536
            except OSError:
                break
            r, _, _ = select.select([s], [], [], 0)
            if r:
                answer = s.recv(65536)
                break
        if not answer:
            s.settimeout(5)
            try:
                answer = s.recv(65536)
            except OSError:
                pass
        assert status_of(answer) in (400, 431, None) and sent < 4 * MiB, (sent, answer[:200])
    # A body past --max-body-size, and one that only announces it.
    r, closed = raw_exchange(n, b"POST /netwine/open HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
                             + b"x" * 70000)
    assert status_of(r) == 413 and closed, r[:200]
    # evhttp reads and discards an oversize body before its 413 (lingering close, so
    # the client can read the answer); a body only announced is cut at the header
    # timeout (here 2 s) like any other request that does not arrive.
    t0 = time.monotonic()
    r, closed = raw_exchange(n, b"POST /netwine/open HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n",
                             timeout=8)
    assert status_of(r) in (413, None) and closed and time.monotonic() - t0 < 5, r[:200]
    # WebSocket messages past --ws-max-message: one frame, an announced 2^62 bytes,
    # and fragments adding up.
    for frames in ([encode_frame(OP_BINARY, b"q" * 70000)],
                   [bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 62) + os.urandom(4)],
                   [encode_frame(OP_BINARY, b"f" * 40000, fin=False), encode_frame(OP_CONT, b"g" * 40000)]):
        ws = RawWs(n.host, n.port, f"/netwine/ws?target={echo.address}", ["binary"])
        try:
            for f in frames:
                ws.sock.sendall(f)
            assert ws.expect_close()[0] == 1009
            assert ws.read_to_eof(5)
        finally:
            ws.close()
    b.check(since=mark)
    assert served(n)


# ------------------------------------------------------------ garbage

def test_garbage_instead_of_http(netwine, tcp_target, bg):
    """Random bytes and other protocols: answered 400, or dropped (when they never
    make a request line: at the header timeout, here 1 s, plus one more if the
    garbage kept coming at the minimum request rate), never more."""
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=["--header-timeout", "1"])
    b = bg(n, echo)
    mark = b.mark()
    rng = random.Random(SEED)
    blobs = [rng.randbytes(rng.randint(1, 65536)) for _ in range(24)]
    blobs += [b"\x00" * 5000, b"\r\n" * 3000, b"\xff\xfe" * 100 + b"\r\n\r\n",
              b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(100),
              b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(500),  # a TLS ClientHello
              b"GET" + b" " * 10000 + b"/ HTTP/1.1\r\n\r\n",
              b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: x\r\n\x01\x02: \x7f\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: x\r\nX Space: a\r\n\r\n"]
    for blob in blobs:
        r, closed = raw_exchange(n, blob, timeout=4, until_answer=True)
        st = status_of(r)
        assert (st is None and r == b"") or (st is not None and 400 <= st < 500), r[:200]
        assert closed or st is not None, blob[:40]
    b.check(since=mark)
    assert served(n)


# ------------------------------------------------------------ smuggling

SMUGGLED = b"GET /netwine/status HTTP/1.1\r\nHost: x\r\n\r\n"


TE_CASES = {
    "not-hex": (b"chunked", b"zz\r\nhello\r\n0\r\n\r\n"),
    "overflows-64-bits": (b"chunked", b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "huge": (b"chunked", b"7fffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "negative": (b"chunked", b"-5\r\nhello\r\n0\r\n\r\n"),
    "0x-prefix": (b"chunked", b"0x5\r\nhello\r\n0\r\n\r\n"),  # strtoll takes these four
    "plus-sign": (b"chunked", b"+5\r\nhello\r\n0\r\n\r\n"),
    "leading-space": (b"chunked", b" 5\r\nhello\r\n0\r\n\r\n"),
    "trailing-junk": (b"chunked", b"5 5\r\nhello\r\n0\r\n\r\n"),
    "valid-chunked": (b"chunked", b"5\r\nhello\r\n0\r\n\r\n"),
    "gzip": (b"gzip", b"5\r\nhello\r\n0\r\n\r\n"),  # evhttp ignores it: the body would be a request
    "chunked-identity": (b"chunked, identity", b"5\r\nhello\r\n0\r\n\r\n"),
    "identity": (b"identity", b""),
}


@pytest.mark.parametrize("te,body", TE_CASES.values(), ids=TE_CASES.keys())
def test_transfer_encoding_is_refused(netwine, tcp_target, te, body):
    """netwine's clients always send Content-Length (PROTOCOL.md); a request with
    Transfer-Encoding is refused with 400 and the connection closed, so whatever
    follows it (here a pipelined request) is never read as a request. Chunk sizes
    that evhttp itself cannot parse get its 413 before netwine sees the request."""
    echo = tcp_target("echo")
    n = start(netwine, echo)
    r, closed = raw_exchange(n, b"POST /netwine/open?target=%s&mode=poll HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: %s\r\n\r\n%s%s" % (echo.address.encode(), te, body, SMUGGLED))
    assert status_of(r) in (400, 413) and closed, r[:300]
    assert r.count(b"HTTP/1.1 ") == 1, r[:600]
    if status_of(r) == 413:
        assert b"chunked" in te and body[:1] in b"zf7-", (te, body)  # evhttp's own refusal
    assert served(n)


# ------------------------------------------------------------ guessed keys

GUESSES = 2000


def keep_alive_requests(n, requests):
    """Sends each raw request on one keep-alive connection (reconnecting if the server
    closes) and returns the statuses."""
    statuses = []
    s = None
    buf = b""
    for req in requests:
        for attempt in range(2):
            if s is None:
                s = socket.create_connection((n.host, n.port), timeout=10)
                buf = b""
            try:
                s.sendall(req)
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(buf) < length:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                buf = buf[length:]
                statuses.append(status_of(head + b"\r\n"))
                if re.search(rb"(?i)connection: *close", head):
                    s.close()
                    s = None
                break
            except (ConnectionError, OSError):
                s.close()
                s = None
                if attempt:
                    raise
    if s:
        s.close()
    return statuses


def test_guessed_keys_get_404_and_do_not_flood_the_log(netwine, tcp_target, bg):
    """2000 requests to random keys: each is 404 unknown_session, and the log (server
    and access log, both on stderr here) holds a handful of lines about them, with a
    summary of how many were not logged one by one."""
    echo = tcp_target("echo")
    n = start(netwine, echo, access_log=True)  # access log on stderr, as by default
    b = bg(n, echo)
    mark = b.mark()
    lines0 = len(n.logs().splitlines())
    rng = random.Random(SEED)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    reqs = []
    for i in range(GUESSES):
        key = "".join(rng.choice(alphabet) for _ in range(24))
        verb = ("poll", "stream", "send", "close", "ws")[i % 5]
        if verb == "send" or verb == "close":
            reqs.append(b"POST /netwine/%s/%s?off=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                        % (key.encode(), verb.encode()))
        elif verb == "ws":
            reqs.append(b"GET /netwine/%s/ws?ack=0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: netwine.v1\r\n\r\n" % key.encode())
        else:
            reqs.append(b"GET /netwine/%s/%s?ack=0 HTTP/1.1\r\nHost: x\r\n\r\n" % (key.encode(), verb.encode()))
    t0 = time.monotonic()
    statuses = keep_alive_requests(n, reqs)
    elapsed = time.monotonic() - t0
    assert statuses == [404] * GUESSES, sorted(set(statuses))
    b.check(since=mark)
    # The summary is written once its one-second window is over.
    wait_until(lambda: "requests for unknown session keys" in n.logs(), 5, "the summary line")
    n.stop()
    lines = n.logs().splitlines()[lines0:]
    about = [l for l in lines if "status=404" in l or "unknown" in l]
    # A few lines per one-second window of the throttle (a slow host takes more
    # windows for the 2000 requests), never one per request.
    limit = 40 + 12 * int(elapsed)
    assert len(about) <= limit, f"{len(about)} log lines about unknown keys in {elapsed:.1f} s:\n" + "\n".join(about[:50])
    counted = sum(int(m.group(1)) for l in about for m in [re.search(r"(\d+) requests? for unknown", l)] if m)
    logged = sum(1 for l in about if "status=404" in l)
    assert counted + logged == GUESSES, (counted, logged, about)


def test_a_client_hammering_the_session_limit_does_not_flood_the_log(netwine, tcp_target):
    """400 opens past --max-sessions-per-client: each is 429, the log says so in full
    a few times and then counts, and the count adds up (summary at exit)."""
    echo = tcp_target("echo")
    n = start(netwine, echo, extra=("--max-sessions-per-client", "1"))
    held = RawWs(n.host, n.port, f"/netwine/ws?target={echo.address}", ["binary"])
    tries = 400
    req = (b"POST /netwine/open?target=%s&mode=poll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
           % echo.address.encode())
    statuses = keep_alive_requests(n, [req] * tries)
    assert statuses == [429] * tries, sorted(set(statuses))
    held.close()
    n.stop()  # writes what is still only counted
    about = [l for l in n.logs().splitlines() if "max-sessions-per-client" in l or "session limits" in l]
    summaries = [l for l in about if "more sessions refused by the session limits" in l]
    full = [l for l in about if l not in summaries]
    assert 1 <= len(full) <= 10, "\n".join(about[:20])
    counted = sum(int(m.group(1)) for l in about for m in [re.search(r"and (\d+) more refusals", l)] if m)
    counted += sum(int(m.group(1)) for l in summaries for m in [re.search(r"\] (\d+) more sessions refused", l)] if m)
    assert len(full) + counted == tries, (len(full), counted, about)


# ------------------------------------------------------------ readers and writers that stop

def test_client_that_never_reads(netwine, tcp_target, bg):
    """Streams, WebSockets and polled sessions of a source that sends as fast as it
    can, to clients that never read: netwine stops reading the source (the source
    stalls) and its memory stays bounded."""
    echo = tcp_target("echo")
    src = Source()
    source = tcp_target(src)
    n = start(netwine, echo, source)
    b = bg(n, echo)
    rss0 = n.rss_kib()
    mark = b.mark()
    c = Client(n.host, n.port)
    held = []
    try:
        for i in range(4):
            s = c.open(source.address, mode="stream", framing="binary" if i % 2 else "text")
            s.first_stream.response.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            held.append(s.first_stream)
            held.append(RawWs(n.host, n.port, f"/netwine/ws?target={source.address}",
                              ["netwine.v1" if i % 2 else "binary"]))
            held.append(c.open(source.address, mode="poll"))  # never polled
        # The source stalls once every session has stopped reading it.
        wait_until(src.stalled(), 60, "the source to stall")
        grown = n.rss_kib() - rss0
        print(f"12 sessions not read: the source pushed {src.sent} bytes, RSS +{grown} KiB")
        # Each session holds its session buffer (1 MiB) and at most 1 MiB queued to
        # the client, plus socket buffers. In memory that is up to twice as much:
        # libevent 2.1 reads 4096 bytes into 8 KiB buffer chains and keeps them.
        assert src.sent < 12 * 6 * MiB, f"{src.sent} bytes taken from the source"
        if not SANITIZED:
            assert grown < 12 * 2 * 2 * 1024, f"RSS grew {grown} KiB with 12 sessions not read"
        b.check(since=mark)
    finally:
        src.stop.set()
        for h in held:
            h.close()


def test_target_that_never_reads(netwine, tcp_target, bg):
    """Sends to a target that accepts and never reads: HTTP sends are held, then
    refused with 503 target_busy; a WebSocket client is no longer read (its socket
    stops taking data); netwine's memory stays bounded."""
    echo = tcp_target("echo")
    silent = Silent()
    target = tcp_target(silent)
    n = start(netwine, echo, target, extra=["--poll-wait", "1"])
    b = bg(n, echo)
    rss0 = n.rss_kib()
    mark = b.mark()
    c = Client(n.host, n.port)
    try:
        # HTTP: 256 KiB sends until 503 (bounded: 64 MiB at most).
        s = c.open(target.address, mode="poll")
        chunk = os.urandom(256 * 1024)
        busy = None
        for _ in range(256):
            try:
                s.send(chunk)
            except HttpError as e:
                busy = e
                break
        assert busy is not None and busy.status == 503 and busy.error == "target_busy", busy
        assert busy.headers.get("retry-after")
        # WebSocket: write until the socket stops taking data (bounded: 256 MiB).
        ws = RawWs(n.host, n.port, f"/netwine/ws?target={target.address}", ["binary"])
        ws.sock.setblocking(False)
        pushed = push_until_refused(ws.sock, encode_frame(OP_BINARY, chunk), 256 * MiB)
        grown = n.rss_kib() - rss0
        print(f"target not reading: the WebSocket pushed {pushed} bytes, RSS +{grown} KiB")
        # 1 MiB session buffer + what one read batch takes + socket buffers.
        assert pushed < 24 * MiB, "netwine kept reading a client whose target does not read"
        if not SANITIZED:
            assert grown < 16 * 1024, f"RSS grew {grown} KiB"
        b.check(since=mark)
        ws.abort()
    finally:
        silent.stop.set()


def test_target_that_hangs(netwine, tcp_target, bg):
    """A target that accepts, then never sends and never closes: the session lives
    while a transport is attached (polls come back empty, WebSockets stay open)
    for longer than --session-idle-timeout, ends at that timeout once the client
    is gone, and leaves nothing behind."""
    echo = tcp_target("echo")
    hang = Silent(read=True)
    target = tcp_target(hang)
    n = start(netwine, echo, target, extra=["--poll-wait", "0.5", "--session-idle-timeout", "1"])
    b = bg(n, echo)
    c = Client(n.host, n.port)
    fds0 = fd_count(n.pid)
    mark = b.mark()
    polled = [c.open(target.address, mode="poll") for _ in range(4)]
    ws = [RawWs(n.host, n.port, f"/netwine/ws?target={target.address}", ["netwine.v1"]) for _ in range(4)]
    assert target.wait_accepted(8)
    # Attached for 2 s (twice the idle timeout): every poll answers empty, nothing ends.
    t_end = time.monotonic() + 2
    while time.monotonic() < t_end:
        pending = [c.request("GET", s.path("poll", ack=0), wait=False) for s in polled]
        for p in pending:
            r = p.response(5)
            assert r.status == 200 and r.read_all(5) == b""
            r.close()
    assert c.status()["sessions_open"] == 8 + 1  # and the background session
    for w in ws:
        w.abort()
    # Everyone gone: every session ends at the idle timeout, the target sees each
    # connection closed, and netwine's descriptors are back where they were.
    wait_until(lambda: c.status()["sessions_open"] == 1, 10, "the sessions to end")
    wait_until(lambda: hang.eofs == 8, 10, "the target connections to be closed")
    wait_until(lambda: fd_count(n.pid) <= fds0, 10, "netwine's descriptors to be released")
    with pytest.raises(HttpError) as e:
        polled[0].poll(timeout=5)
    assert e.value.status == 404
    b.check(since=mark)
    hang.stop.set()


# ------------------------------------------------------------ signals under load

def test_sighup_under_load(netwine, tcp_target, bg):
    """SIGHUP while sessions move data: rules reload, nothing stops."""
    echo = tcp_target("echo")
    n = start(netwine, echo)
    b = bg(n, echo)
    c = Client(n.host, n.port)
    s = c.open(echo.address, mode="stream", framing="binary")
    data = os.urandom(2 * MiB)
    got = bytearray()
    mark = b.mark()
    for i in range(0, len(data), 128 * 1024):
        s.send(data[i:i + 128 * 1024], ack=s.down)
        n.signal(signal.SIGHUP)
        while len(got) < i + 128 * 1024:
            d = s.first_stream.read_data(10)
            assert d is not None, "the stream ended"
            got += d
    assert bytes(got) == data
    b.check(since=mark)
    wait_until(lambda: n.logs().count("SIGHUP: reloading") == 16, 10, "16 reloads in the log")
    s.close()


def test_sigterm_under_load(netwine, tcp_target):
    """SIGTERM while sessions stream from a source, one of them to a client that
    never reads, and a poll is held: netwine exits 0 within --drain-timeout + a
    margin, and every client that reads gets the close 1001 (a WebSocket close
    frame or a C frame)."""
    src = Source()
    source = tcp_target(src)
    echo = tcp_target("echo")
    n = start(netwine, source, echo, extra=["--drain-timeout", "2", "--poll-wait", "20"])
    c = Client(n.host, n.port)
    streams = [c.open(source.address, mode="stream", framing=f) for f in ("text", "binary")]
    v1 = RawWs(n.host, n.port, f"/netwine/ws?target={source.address}", ["netwine.v1"])
    raw = RawWs(n.host, n.port, f"/netwine/ws?target={source.address}", ["binary"])
    stuck = c.open(source.address, mode="stream")  # never read
    polled = c.open(echo.address, mode="poll")
    held = c.request("GET", polled.path("poll", ack=0), wait=False)
    wait_until(lambda: source.accepted == 5 and src.sent > 2 * MiB, 20, "data flowing")
    wait_until(lambda: "poll" in [e["transport"] for e in c.status()["sessions"]], 10, "the poll held")
    t0 = time.monotonic()
    n.signal(signal.SIGTERM)
    results = {}

    def read_stream(name, st):
        try:
            while True:
                f = st.next_frame(15)
                if f is None or f.type == "C":
                    results[name] = f.code if f else "ended without C"
                    return
        except (OSError, ProtocolError) as e:
            results[name] = repr(e)

    def read_ws(name, ws):
        try:
            ws.sock.settimeout(15)
            results[name] = ws.expect_close()[0]
        except (OSError, EOFError) as e:
            results[name] = repr(e)

    def read_poll(name):
        try:
            r = held.response(15)
            frames = FrameReader("text").feed(r.read_all(15))
            results[name] = frames[-1].code if frames and frames[-1].type == "C" else frames
        except (OSError, ProtocolError) as e:
            results[name] = repr(e)

    threads = [threading.Thread(target=read_stream, args=(f"stream {st.framing}", st.first_stream), daemon=True)
               for st in streams]
    threads += [threading.Thread(target=read_ws, args=("netwine.v1", v1), daemon=True),
                threading.Thread(target=read_ws, args=("binary", raw), daemon=True),
                threading.Thread(target=read_poll, args=("poll",), daemon=True)]
    for t in threads:
        t.start()
    assert n.proc.wait(2 + 15) == 0
    took = time.monotonic() - t0
    # The drain timeout plus room for a sanitizer build's exit: still far from
    # --poll-wait 20, which the held poll would reach without the drain.
    assert took < 2 + 8, f"exit took {took:.1f}s with --drain-timeout 2"
    for t in threads:
        t.join(15)
    src.stop.set()
    stuck.first_stream.close()
    assert results == {"stream text": 1001, "stream binary": 1001, "netwine.v1": 1001, "binary": 1001,
                       "poll": 1001}, results
