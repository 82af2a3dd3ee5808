"""Shared fixtures for netwine's integration tests.

Each test starts the real binary on a free loopback port (``--listen
127.0.0.1:0 --port-file F``; the test waits for F, written once listening) with
temporary files, and real TCP targets started here (echo, sink, source).
No mocks: what the tests talk to is what users run.
"""
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("NETWINE_BIN", ROOT / "build" / "netwine"))
# A sanitizer build (ASan or TSan): its memory figures measure the sanitizer, not netwine.
SANITIZED = BINARY.exists() and any(m in BINARY.read_bytes() for m in (b"__asan_init", b"__tsan_init"))
STARTUP_SECONDS = 10


class Netwine:
    """One running netwine process."""

    def __init__(self, args, tmpdir, env=None):
        self.tmpdir = pathlib.Path(tmpdir)
        self.port_file = self.tmpdir / f"ports-{os.getpid()}-{id(self)}"
        self.log_path = self.tmpdir / f"netwine-{id(self)}.log"
        self.args = [str(BINARY), "--port-file", str(self.port_file)] + list(args)
        if not any(a == "--listen" or a.startswith("--listen=") for a in args):
            self.args += ["--listen", "127.0.0.1:0"]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env or os.environ.copy())
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"netwine exited with {self.proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"netwine did not start:\n{self.logs()}")
            time.sleep(0.01)  # polling for the port file, bounded by the deadline
        lines = self.port_file.read_text().split("\n")
        self.addresses = [l for l in lines if l and not l.startswith("demo ")]
        self.demo = next((l.split(" ")[1] for l in lines if l.startswith("demo ")), None)
        host, port = self.addresses[0].rsplit(":", 1)
        self.host = host.strip("[]")
        self.port = int(port)
        self.base = f"http://{self.addresses[0]}"

    @property
    def pid(self):
        return self.proc.pid

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def connect(self):
        return socket.create_connection((self.host, self.port), timeout=10)


@pytest.fixture
def netwine(tmp_path):
    """Factory: netwine(*args) starts a server; all are stopped after the test."""
    started = []

    def start(*args, env=None):
        n = Netwine(args, tmp_path, env=env)
        started.append(n)
        return n

    yield start
    reports = []
    for n in started:
        n.stop()
        log = n.logs()
        # Under the sanitizer builds (tools/test.sh's later runs) any report fails the test.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            if marker in log:
                reports.append(log[log.index(marker) - 200 if log.index(marker) > 200 else 0:][:4000])
                break
    if reports:
        pytest.fail("sanitizer report from netwine:\n" + "\n".join(reports))


class TcpTarget:
    """A threaded TCP server on 127.0.0.1 with a per-connection handler."""

    def __init__(self, handler):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.handler = handler
        self.accepted = 0
        self.conns = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait_accepted(self, n, timeout=10):
        """True once at least `n` connections were accepted (the accept thread counts)."""
        deadline = time.monotonic() + timeout
        while self.accepted < n and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter another thread updates, bounded
        return self.accepted >= n

    def close(self):
        self.closed.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def echo_handler(conn):
    while True:
        data = conn.recv(1 << 16)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def sink_handler(conn):
    while conn.recv(1 << 16):
        pass


class Source:
    """Target handler that sends as fast as the connection takes and counts it."""

    def __init__(self):
        self.sent = 0
        self.stop = threading.Event()

    def __call__(self, conn):
        block = pattern_bytes(64 * 1024, seed=13)
        while not self.stop.is_set():
            try:
                self.sent += conn.send(block)
            except OSError:
                return

    def stalled(self, quiet=1.0):
        """A predicate: true once nothing more was taken for `quiet` seconds."""
        last = [-1, time.monotonic()]

        def check():
            if self.sent != last[0]:
                last[:] = [self.sent, time.monotonic()]
                return False
            return time.monotonic() - last[1] > quiet
        return check


def pattern_bytes(n, seed=0):
    """Deterministic non-repeating-looking bytes (period 251, offset by seed)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    reps = n // 251 + 1
    return (block * reps)[:n]


@pytest.fixture
def tcp_target():
    """Factory: tcp_target(handler) -> TcpTarget; 'echo', 'sink' or a callable."""
    made = []

    def make(handler="echo"):
        h = {"echo": echo_handler, "sink": sink_handler}.get(handler, handler)
        t = TcpTarget(h)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def wait_until(pred, timeout, what):
    """Polls `pred` (state only visible by asking) at most `timeout` seconds; returns
    its first true value, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # bounded by the deadline; each round looks again


def wait_for(pred, timeout=10):
    """Polls `pred` (an HTTP status read, a counter) until true, at most `timeout`
    seconds; returns whether it became true (for `assert wait_for(...), why`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)  # polling an observable condition, bounded by the deadline
    return bool(pred())


def free_port():
    """A loopback port with nothing listening (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recv_all(sock):
    """Everything the peer sends on `sock` until it closes (the socket's timeout bounds each wait)."""
    chunks = []
    while True:
        b = sock.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def http_raw(host, port, data, timeout=10):
    """Sends raw bytes, returns everything until the server closes or times out."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        return b"".join(chunks)
