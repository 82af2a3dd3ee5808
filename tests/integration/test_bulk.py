"""Bulk relaying (--bulk-threads, src/ws/bulk_relay.hpp): a binary or netwine.v1
WebSocket that moves more than --bulk-after bytes within 0.1 s is lent to a thread of its own, which relays it
the way socat does, and goes back to its event loop after 0.25 s without bytes, or
at a Close, a protocol error, a socket's end, a shutdown.

Every test reads /netwine/status ("bulk": true while lent) or the metrics
(netwine_bulk_loans_total), so it knows the thread did the relaying it checks.
"""
import json
import signal
import socket
import struct
import threading
import time
import urllib.request

import pytest

from conftest import Source, pattern_bytes, wait_for
from wsclient_util import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWs, V1Transfer, be64, close_payload,
                           encode_frame)

MiB = 1 << 20
BLOCK = pattern_bytes(64 * 1024, seed=13)  # what Source (and so Flood) sends, again and again


def status(n):
    with urllib.request.urlopen(f"{n.base}/netwine/status", timeout=10) as r:
        return json.load(r)


def metric(n, name):
    with urllib.request.urlopen(f"{n.base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def bulk_flags(n):
    return [s["bulk"] for s in status(n)["sessions"]]


# The lending threshold the tests use: 2.5 MB/s, which even a ThreadSanitizer build
# on a slow, shared host relays (the default, 2 MiB per 0.1 s, it sometimes does not).
BULK_AFTER = "256K"


def start(netwine, target, *extra):
    return netwine("--access-log", "", "--target", target.address, "--bulk-after", BULK_AFTER, *extra)


def path_to(target):
    return f"/netwine/ws?target={target.address}"


class Flood(Source):
    """Target handler: sends BLOCK until told to stop, or `limit` bytes then closes."""

    def __init__(self, limit=None):
        super().__init__()
        self.limit = limit
        self.ended = threading.Event()
        self.trickle = threading.Event()  # once set: one byte every 20 ms

    def __call__(self, conn):
        try:
            while not self.stop.is_set():
                if self.trickle.is_set():
                    pos = self.sent % len(BLOCK)
                    conn.sendall(BLOCK[pos:pos + 1])
                    self.sent += 1
                    time.sleep(0.02)  # the trickle's pace
                    continue
                block = BLOCK
                if self.limit is not None:
                    if self.sent >= self.limit:
                        break
                    block = BLOCK[:self.limit - self.sent]
                conn.sendall(block)
                self.sent += len(block)
        except OSError:
            pass
        finally:
            self.ended.set()


class Reader(threading.Thread):
    """Reads a RawWs on its own thread: data bytes, Pongs, the server's Close."""

    def __init__(self, ws):
        super().__init__(daemon=True)
        self.ws = ws
        self.data = bytearray()
        self.pongs = []
        self.close = None
        self.error = None
        self.start()

    def run(self):
        try:
            while True:
                fin, op, payload = self.ws.recv_frame()
                if op == OP_BINARY or op == 0:
                    self.data += payload
                elif op == OP_PONG:
                    self.pongs.append(payload)
                elif op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.close = (code, payload[2:].decode())
                    return
        except (OSError, EOFError) as e:
            self.error = e


def lent_flood(netwine, tcp_target):
    """A flood target, netwine, a client reading it on a thread, once the session is lent."""
    flood = Flood()
    t = tcp_target(flood)
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    r = Reader(ws)
    assert wait_for(lambda: bulk_flags(n) == [True])
    return flood, n, ws, r


def stalling_flood(netwine, tcp_target):
    """A flood target, netwine, and a client with a small receive buffer that read
    8 MiB (so the session is lent) and now reads no more: (flood, n, ws, got)."""
    flood = Flood()
    t = tcp_target(flood)
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    got = bytearray()
    while len(got) < 8 * MiB:
        got += ws.recv_message()[1]
    return flood, n, ws, got


def read_on_and_close(flood, ws, got):
    """Stops the flood, reads the rest, closes 1000; the Reader. Asserts every byte
    arrived in order, `got` first."""
    flood.stop.set()
    r = Reader(ws)
    ws.send(OP_CLOSE, close_payload(1000))
    r.join(30)
    assert r.error is None and r.close and r.close[0] == 1000
    assert in_order(bytes(got) + bytes(r.data))
    return r


def echo_exactly(ws, data, piece=65536):
    """Sends `data` in messages of `piece` bytes from a thread while reading the echo
    here; True if every byte came back as sent."""
    sender = threading.Thread(target=lambda: [ws.send(OP_BINARY, data[k:k + piece])
                                              for k in range(0, len(data), piece)], daemon=True)
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        op, payload = ws.recv_message()
        assert op == OP_BINARY
        got += payload
    sender.join(30)
    return bytes(got) == data


def in_order(data, offset=0):
    """True if `data` is the flood's stream from `offset` on: no byte lost, doubled or moved."""
    pos = offset % len(BLOCK)
    i = 0
    while i < len(data):
        k = min(len(BLOCK) - pos, len(data) - i)
        if data[i:i + k] != BLOCK[pos:pos + k]:
            return False
        i += k
        pos = 0
    return True


def test_a_busy_echo_is_lent_to_a_thread_and_every_byte_comes_back_in_order(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    assert echo_exactly(ws, pattern_bytes(48 * MiB, seed=5))
    assert metric(n, "netwine_bulk_loans_total") >= 1
    # Back on its loop after 0.25 s without bytes, and still relaying there.
    assert wait_for(lambda: bulk_flags(n) == [False])
    ws.send(OP_BINARY, b"after the loan")
    assert ws.recv_message() == (OP_BINARY, b"after the loan")
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close() == (1000, "")


def test_status_shows_the_loan_and_bytes_keep_counting(netwine, tcp_target):
    flood, n, ws, r = lent_flood(netwine, tcp_target)
    assert metric(n, "netwine_bulk_relays") == 1
    first = status(n)["sessions"][0]["bytes_down"]
    assert wait_for(lambda: status(n)["sessions"][0]["bytes_down"] > first + 4 * MiB)
    flood.stop.set()
    ws.send(OP_CLOSE, close_payload(1000))
    r.join(10)
    assert r.close and r.close[0] == 1000
    assert in_order(r.data)
    assert wait_for(lambda: metric(n, "netwine_bulk_relays") == 0)


def test_a_trickle_goes_back_to_its_loop_and_keeps_flowing(netwine, tcp_target):
    flood, n, ws, r = lent_flood(netwine, tcp_target)
    flood.trickle.set()  # never silent for 0.25 s, but far under half of --bulk-after a second
    assert wait_for(lambda: bulk_flags(n) == [False])
    before = len(r.data)
    assert wait_for(lambda: len(r.data) > before + 10)  # still relayed, now by the loop
    flood.stop.set()
    ws.send(OP_CLOSE, close_payload(1000))
    r.join(10)
    assert r.close and r.close[0] == 1000
    assert in_order(r.data)


def test_a_ping_is_answered_by_the_relay_thread_between_data_messages(netwine, tcp_target):
    flood, n, ws, r = lent_flood(netwine, tcp_target)
    ws.send(OP_PING, b"are you there")
    assert wait_for(lambda: r.pongs == [b"are you there"])
    assert bulk_flags(n) == [True]  # answered on the thread, which still relays
    flood.stop.set()
    ws.send(OP_CLOSE, close_payload(1000))
    r.join(10)
    assert r.error is None and r.close[0] == 1000
    assert in_order(r.data)  # the Pong went between messages, not into one


def test_a_close_while_lent_gets_its_code_back_and_ends_the_target(netwine, tcp_target):
    flood, n, ws, r = lent_flood(netwine, tcp_target)
    ws.send(OP_CLOSE, close_payload(4321, "done here"))
    r.join(10)
    assert r.close == (4321, "")
    assert ws.read_to_eof(5)
    assert flood.ended.wait(10)  # the target's connection was closed too
    assert in_order(r.data)
    assert wait_for(lambda: status(n)["sessions"] == [])


def test_a_protocol_error_while_lent_fails_the_connection_with_1002(netwine, tcp_target):
    t = tcp_target("sink")
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    frame = encode_frame(OP_BINARY, pattern_bytes(64 * 1024))
    deadline = time.monotonic() + 20
    lent = False
    while not lent and time.monotonic() < deadline:
        for _ in range(64):  # 4 MiB, then look again
            ws.sock.sendall(frame)
        lent = bulk_flags(n) == [True]
    assert lent
    ws.sock.sendall(encode_frame(OP_BINARY, b"x", rsv=4))  # RSV3 without an extension
    code, reason = ws.expect_close()
    assert code == 1002 and "reserved bit" in reason
    assert ws.read_to_eof(5)


def test_the_targets_end_while_lent_delivers_every_byte_then_closes_1000(netwine, tcp_target):
    flood = Flood(limit=40 * MiB + 12345)
    t = tcp_target(flood)
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    r = Reader(ws)
    r.join(60)
    assert r.close == (1000, "target closed the connection")
    assert len(r.data) == 40 * MiB + 12345 and in_order(r.data)
    assert metric(n, "netwine_bulk_loans_total") >= 1


def test_a_slow_reader_stops_the_thread_reading_the_target(netwine, tcp_target):
    flood, n, ws, got = stalling_flood(netwine, tcp_target)
    base = n.rss_kib()
    assert wait_for(flood.stalled(quiet=0.5), timeout=20), "netwine kept reading the target"
    grown = n.rss_kib() - base
    assert grown < 24 * 1024, f"netwine grew by {grown} KiB with a stalled reader"
    # Reading again, every byte is there in order (the loan may have ended meanwhile).
    read_on_and_close(flood, ws, got)


def test_a_lent_binary_downstream_is_spliced_and_arrives_whole(netwine, tcp_target):
    # Server-to-client frames are unmasked: the thread moves target bytes through a
    # pipe (splice) instead of copying them; the frames around them stay whole.
    flood = Flood(limit=40 * MiB + 777)
    t = tcp_target(flood)
    n = start(netwine, t)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    r = Reader(ws)
    r.join(60)
    assert r.close == (1000, "target closed the connection")
    assert len(r.data) == 40 * MiB + 777 and in_order(r.data)
    spliced = metric(n, "netwine_bulk_spliced_bytes_total")
    assert 8 * MiB < spliced <= 40 * MiB + 777, spliced


@pytest.mark.parametrize("subprotocols", [["binary"], None])
def test_a_spliced_flood_reaches_the_websockets_library_whole(netwine, tcp_target, subprotocols):
    # The same path read by a client not written for this project (Python's
    # websockets), with and without the binary subprotocol (websockify's default).
    import asyncio
    import websockets.client
    total = 32 * MiB + 99
    t = tcp_target(Flood(limit=total))
    n = start(netwine, t)

    async def read_all():
        got = bytearray()
        async with websockets.client.connect(f"ws://{n.host}:{n.port}{path_to(t)}", subprotocols=subprotocols,
                                             max_size=None, ping_interval=None, compression=None) as ws:
            try:
                while True:
                    m = await asyncio.wait_for(ws.recv(), 30)
                    assert isinstance(m, bytes)
                    got += m
            except websockets.exceptions.ConnectionClosedOK as e:
                return bytes(got), e.rcvd.code
    data, code = asyncio.run(read_all())
    assert code == 1000
    assert len(data) == total and in_order(data)
    assert metric(n, "netwine_bulk_spliced_bytes_total") > 8 * MiB


def test_a_ping_while_a_spliced_message_is_half_sent_is_answered_after_it(netwine, tcp_target):
    # The client stops reading, so a message's payload waits in the pipe behind its
    # header (the loan lasts 0.25 s more); Pings now must be answered after that
    # message, not inside it.
    flood, n, ws, got = stalling_flood(netwine, tcp_target)
    pings = [b"behind the message %d" % i for i in range(8)]
    # One write: sent one by one, Nagle holds the second Ping until the first is
    # acknowledged, which a receiver that cannot send data may delay by up to
    # 40 ms; a Ping that reaches netwine after the flood's end (below) comes after
    # netwine's Close, and gets no Pong (RFC 6455 5.5.1).
    ws.sock.sendall(b"".join(encode_frame(OP_PING, p) for p in pings))
    assert bulk_flags(n) == [True]
    assert metric(n, "netwine_bulk_spliced_bytes_total") > 0
    r = read_on_and_close(flood, ws, got)
    assert r.pongs == pings


def test_a_loan_ending_with_bytes_in_the_pipe_hands_them_to_the_loop(netwine, tcp_target):
    # A stalled client: the loan ends (too few bytes a second) while a message's
    # payload is still in the pipe; the loop must send the rest of that message.
    flood, n, ws, got = stalling_flood(netwine, tcp_target)
    assert metric(n, "netwine_bulk_spliced_bytes_total") > 0
    assert wait_for(lambda: bulk_flags(n) == [False], timeout=20), "the loan did not end"
    read_on_and_close(flood, ws, got)


@pytest.mark.parametrize("flags, lent", [
    ((), True),                        # BULK_AFTER: the flood is busy enough
    (("--bulk-threads", "0"), False),  # no threads: every WebSocket stays on its loop
    (("--bulk-after", "64M"), False),  # a threshold past the whole 32 MiB transfer
])
def test_a_32_mib_flood_is_lent_or_not_as_the_options_say_and_arrives_whole(netwine, tcp_target, flags, lent):
    flood = Flood(limit=32 * MiB)
    t = tcp_target(flood)
    n = start(netwine, t, *flags)
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    r = Reader(ws)
    r.join(60)
    assert r.close == (1000, "target closed the connection")
    assert len(r.data) == 32 * MiB and in_order(r.data)
    loans = metric(n, "netwine_bulk_loans_total")
    assert loans >= 1 if lent else loans == 0


def test_bulk_threads_caps_the_loans_at_once(netwine, tcp_target):
    floods = [Flood(), Flood()]
    targets = [tcp_target(f) for f in floods]
    n = netwine("--access-log", "", "--target", targets[0].address, "--target", targets[1].address,
                "--bulk-after", BULK_AFTER, "--bulk-threads", "1")
    clients = [RawWs(n.host, n.port, path_to(t), ["binary"]) for t in targets]
    readers = [Reader(ws) for ws in clients]
    assert wait_for(lambda: sum(bulk_flags(n)) == 1)
    for _ in range(50):  # both stay busy; never more than one is lent
        assert sum(bulk_flags(n)) <= 1
        assert metric(n, "netwine_bulk_relays") <= 1
    for f, ws in zip(floods, clients):
        f.stop.set()
        ws.send(OP_CLOSE, close_payload(1000))
    for r in readers:
        r.join(10)
        assert r.close and r.close[0] == 1000 and in_order(r.data)


def test_shutdown_while_lent_closes_1001_and_exits(netwine, tcp_target):
    flood, n, ws, r = lent_flood(netwine, tcp_target)
    n.signal(signal.SIGTERM)
    r.join(20)
    assert r.close and r.close[0] == 1001 and "shutting down" in r.close[1]
    ws.send(OP_CLOSE, close_payload(1001))
    assert ws.read_to_eof(5)
    assert n.proc.wait(10) == 0
    flood.stop.set()
    assert in_order(r.data)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_several_busy_echoes_on_every_loop_stay_byte_exact(netwine, tcp_target, threads):
    t = tcp_target("echo")
    n = start(netwine, t, "--threads", threads)
    clients = [RawWs(n.host, n.port, path_to(t), ["binary"]) for _ in range(4)]
    datas = [pattern_bytes(12 * MiB + i * 777, seed=20 + i) for i in range(len(clients))]
    results = [None] * len(clients)

    def run(i):
        results[i] = echo_exactly(clients[i], datas[i], piece=100_000)

    runners = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(clients))]
    for th in runners:
        th.start()
    for th in runners:
        th.join(60)
    assert results == [True] * len(clients)
    assert metric(n, "netwine_bulk_loans_total") >= 1


def test_clients_dropping_mid_loan_leave_the_others_byte_exact(netwine, tcp_target):
    # More busy sessions than --bulk-threads: some lent, some on their loops, and
    # half of them cut (RST, no Close) at seeded random moments, some of those
    # after they stopped reading. The others' bytes stay exact; nothing is left over.
    import random
    rnd = random.Random(20261203)
    t = tcp_target("echo")
    n = start(netwine, t, "--bulk-threads", "3")
    steady = [RawWs(n.host, n.port, path_to(t), ["binary"]) for _ in range(4)]
    droppers = [RawWs(n.host, n.port, path_to(t), ["binary"]) for _ in range(4)]
    datas = [pattern_bytes(16 * MiB + i * 1001, seed=40 + i) for i in range(len(steady))]
    results = [None] * len(steady)

    def run_steady(i):
        results[i] = echo_exactly(steady[i], datas[i])

    def run_dropper(ws, cut_after, keep_reading):
        block = encode_frame(OP_BINARY, pattern_bytes(65536, seed=7))
        sent = 0
        stop_reading = threading.Event()

        def reader():
            try:
                while not stop_reading.is_set():
                    ws.recv_frame()
            except (OSError, EOFError):
                pass

        r = threading.Thread(target=reader, daemon=True)
        r.start()
        try:
            while sent < cut_after:
                if sent > cut_after // 2 and not keep_reading:
                    stop_reading.set()
                ws.sock.sendall(block)
                sent += len(block)
        except OSError:
            pass
        ws.abort()

    runners = [threading.Thread(target=run_steady, args=(i,), daemon=True) for i in range(len(steady))]
    runners += [threading.Thread(target=run_dropper,
                                 args=(ws, rnd.randint(2, 12) * MiB, i % 2 == 0), daemon=True)
                for i, ws in enumerate(droppers)]
    for th in runners:
        th.start()
    for th in runners:
        th.join(90)
    assert results == [True] * len(steady)
    assert metric(n, "netwine_bulk_loans_total") >= 1
    for ws in steady:
        ws.send(OP_CLOSE, close_payload(1000))
        assert ws.expect_close() == (1000, "")
    assert wait_for(lambda: status(n)["sessions"] == [], timeout=20), status(n)
    assert metric(n, "netwine_bulk_relays") == 0
    # Still serving.
    ws = RawWs(n.host, n.port, path_to(t), ["binary"])
    ws.send(OP_BINARY, b"still here")
    assert ws.recv_message() == (OP_BINARY, b"still here")


# ------------------------------------------------------------------ netwine.v1
# netwine.v1 sessions (what netwine.js speaks) are lent with their offsets, acks
# and kept bytes: the thread must keep every v1 promise the loop keeps.

def v1_path(target):
    return f"/netwine/ws?target={target.address}"


class V1Reader(threading.Thread):
    """Reads a netwine.v1 RawWs on its own thread: checks that downstream offsets
    are contiguous, acknowledges every 256 KiB (so the target keeps flowing),
    records the server's "A N" acks and its Close. `lock` serialises writes with
    the test's own sends."""

    def __init__(self, ws, start_offset=0, ack_every=256 * 1024):
        super().__init__(daemon=True)
        self.ws = ws
        self.lock = threading.Lock()
        self.data = bytearray()
        self.start_offset = start_offset
        self.ack_every = ack_every
        self.last_ack = start_offset  # the highest "A N" sent (under lock)
        self.up_acks = []
        self.close = None
        self.error = None
        self.start()

    def send(self, op, payload):
        with self.lock:
            self.ws.send(op, payload)

    def held(self):
        return self.start_offset + len(self.data)

    def stop_acking(self):
        """Acknowledges nothing more; returns the last offset acknowledged: the
        server keeps every byte from there on, for another transport to resume."""
        with self.lock:
            self.ack_every = 1 << 62
            return self.last_ack

    def run(self):
        try:
            while True:
                fin, op, payload = self.ws.recv_frame()
                if op == OP_BINARY:
                    off = struct.unpack("!Q", payload[:8])[0]
                    assert off == self.held(), f"downstream offset {off}, expected {self.held()}"
                    self.data += payload[8:]
                    with self.lock:
                        if self.held() - self.last_ack >= self.ack_every:
                            self.last_ack = self.held()
                            self.ws.send(OP_TEXT, f"A {self.last_ack}".encode())
                elif op == OP_TEXT:
                    word, n = payload.decode().split(" ")
                    assert word == "A"
                    self.up_acks.append(int(n))
                elif op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.close = (code, payload[2:].decode())
                    return
        except (OSError, EOFError, AssertionError) as e:
            self.error = e


def v1_open(n, target):
    """A netwine.v1 WebSocket to `target`: (ws, key) after the server's "OK key 0"."""
    ws = RawWs(n.host, n.port, v1_path(target), ["netwine.v1"])
    op, payload = ws.recv_message()
    word, key, up_next = payload.decode().split(" ")
    assert (op, word, up_next) == (OP_TEXT, "OK", "0")
    return ws, key


def v1_echo(netwine, tcp_target, size, seed, *flags):
    """netwine with an echo target and a V1Transfer of `size` bytes attached to it."""
    t = tcp_target("echo")
    n = start(netwine, t, *flags)
    x = V1Transfer(pattern_bytes(size, seed=seed))
    ws = RawWs(n.host, n.port, v1_path(t), ["netwine.v1"])
    x.attach(ws)
    return n, x, ws


def lent_v1_flood(netwine, tcp_target, target_handler=None):
    """A flooding target, a netwine.v1 client reading and acknowledging it, once lent."""
    flood = target_handler or Flood()
    t = tcp_target(flood)
    n = start(netwine, t)
    ws, key = v1_open(n, t)
    r = V1Reader(ws)
    assert wait_for(lambda: bulk_flags(n) == [True])
    return flood, n, ws, key, r


class FloodAndSink(Flood):
    """Floods the client like Flood and records every byte the client sends."""

    def __init__(self):
        super().__init__()
        self.got = bytearray()

    def __call__(self, conn):
        def drain():
            try:
                while True:
                    b = conn.recv(1 << 16)
                    if not b:
                        return
                    self.got += b
            except OSError:
                pass
        threading.Thread(target=drain, daemon=True).start()
        super().__call__(conn)


def test_v1_a_busy_echo_is_lent_and_every_byte_comes_back_exactly_once(netwine, tcp_target):
    n, x, ws = v1_echo(netwine, tcp_target, 40 * MiB + 4321, 17)
    data = x.data
    assert x.run(ws) == "done"
    assert bytes(x.received) == data  # offsets contiguous (V1Transfer checks), no byte lost or doubled
    assert x.up_acked == len(data)  # the thread acknowledged every upstream byte
    assert metric(n, "netwine_bulk_loans_total") >= 1
    assert metric(n, "netwine_bulk_spliced_bytes_total") == 0  # v1 keeps a copy: read, not spliced
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close()[0] == 1000


def test_v1_drops_mid_loan_resume_with_every_byte_exactly_once(netwine, tcp_target):
    n, x, ws = v1_echo(netwine, tcp_target, 48 * MiB, 23)
    data = x.data
    loans = 0
    for i in range(3):
        # Cut (RST) with bytes in flight both ways and unacknowledged ones kept.
        assert x.run(ws, stop_after_down=10 * MiB + 7777 * i, ack_every=300 * 1024) == "stopped"
        # This stretch was lent: from its attach on (the kept bytes resent at a
        # resume may already cross --bulk-after) to its cut.
        assert metric(n, "netwine_bulk_loans_total") > loans
        loans = metric(n, "netwine_bulk_loans_total")
        ws.abort()
        ws = RawWs(n.host, n.port, f"/netwine/{x.key}/ws?ack={len(x.received)}", ["netwine.v1"])
        assert x.attach(ws) <= len(data)
    assert x.run(ws) == "done"
    assert bytes(x.received) == data
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close()[0] == 1000


def test_v1_offsets_are_applied_on_the_thread_duplicates_skipped(netwine, tcp_target):
    flood, n, ws, key, r = lent_v1_flood(netwine, tcp_target, FloodAndSink())
    r.send(OP_BINARY, be64(0) + b"abc")
    r.send(OP_BINARY, be64(0) + b"abcdef")  # half a duplicate
    r.send(OP_BINARY, be64(3) + b"def")     # all a duplicate
    r.send(OP_BINARY, be64(6) + b"ghi")
    assert wait_for(lambda: bytes(flood.got) == b"abcdefghi")
    assert wait_for(lambda: r.up_acks and r.up_acks[-1] == 9)
    assert bulk_flags(n) == [True]  # all of it on the thread
    flood.stop.set()
    r.send(OP_CLOSE, close_payload(1000))
    r.join(10)
    assert r.error is None and r.close and r.close[0] == 1000
    assert in_order(r.data)
    assert bytes(flood.got) == b"abcdefghi"


@pytest.mark.parametrize("frame, code, reason", [
    ((OP_BINARY, be64(5) + b"x"), 4009, "upstream offset gap, expected 0"),
    ((OP_BINARY, b"1234"), 1002, "data message shorter than its 8-byte offset"),
    ((OP_TEXT, b"hello"), 1003, "unexpected text message"),
    ((OP_TEXT, b"A 12x"), 1002, "malformed acknowledgement"),
    ((OP_TEXT, b"A 999999999999"), 1002, "acknowledgement 999999999999 is past the data sent"),
])
def test_v1_protocol_errors_while_lent_close_as_on_the_loop(netwine, tcp_target, frame, code, reason):
    flood, n, ws, key, r = lent_v1_flood(netwine, tcp_target)
    r.send(*frame)
    r.join(10)
    assert r.close and r.close[0] == code and reason in r.close[1], r.close
    assert in_order(r.data)
    flood.stop.set()


def test_v1_another_websocket_takes_over_a_lent_session_at_its_offset(netwine, tcp_target):
    flood, n, ws, key, r = lent_v1_flood(netwine, tcp_target)
    assert bulk_flags(n) == [True]
    # With acknowledgements stopped the thread soon has nothing to move and gives
    # the session back after 0.25 s: the take-over below may find it lent or not,
    # and must continue at the offset either way.
    ack = r.stop_acking()
    ws2 = RawWs(n.host, n.port, f"/netwine/{key}/ws?ack={ack}", ["netwine.v1"])
    r.join(10)
    assert r.close and r.close[0] == 4002, r.close  # taken back from the thread, then replaced
    op, payload = ws2.recv_message()
    assert op == OP_TEXT and payload.decode().startswith(f"OK {key} ")
    r2 = V1Reader(ws2, start_offset=ack)  # checks that the first offset is `ack`
    assert wait_for(lambda: r2.held() > r.held() + MiB)
    # From `ack` on again, the kept bytes the first connection had included.
    assert in_order(r2.data, offset=ack)
    assert r2.data[:r.held() - ack] == r.data[ack:]
    flood.stop.set()
    r2.send(OP_CLOSE, close_payload(1000))
    r2.join(10)
    assert r2.error is None and r2.close and r2.close[0] == 1000


def test_v1_an_http_poll_takes_over_a_lent_session_at_its_offset(netwine, tcp_target):
    flood, n, ws, key, r = lent_v1_flood(netwine, tcp_target)
    assert bulk_flags(n) == [True]
    # With acknowledgements stopped the thread soon has nothing to move and gives
    # the session back after 0.25 s: the take-over below may find it lent or not,
    # and must continue at the offset either way.
    ack = r.stop_acking()
    with urllib.request.urlopen(f"{n.base}/netwine/{key}/poll?ack={ack}&framing=binary", timeout=10) as resp:
        body = resp.read()
    r.join(10)
    assert r.close and r.close[0] == 4002, r.close
    line, rest = body.split(b"\n", 1)
    word, offset, length = line.decode().split(" ")
    assert word == "D" and int(offset) == ack and int(length) > 0
    assert in_order(rest[:int(length)], offset=ack)
    k = min(int(length), r.held() - ack)  # what both saw: the same bytes
    assert rest[:k] == r.data[ack:ack + k]
    flood.stop.set()


@pytest.mark.parametrize("bulk_threads", ["0", "64"])
def test_v1_acks_held_back_then_sent_never_deadlock_an_echo(netwine, tcp_target, bulk_threads):
    # Acknowledgements travel behind data. The client holds its downstream acks
    # back: downstream fills the session buffer, netwine stops reading the echo
    # target, which stops reading upstream. Since netwine acknowledges upstream
    # only as the target's socket takes it and the client keeps at most 256 KiB
    # unacknowledged, netwine still reads everything the client sent, so the
    # acks sent next reach it. (Acknowledged as queued, the client would have
    # filled both ways and its acks would wait behind its data for ever.)
    n, x, ws = v1_echo(netwine, tcp_target, 24 * MiB, 29, "--bulk-threads", bulk_threads)
    data = x.data
    assert x.run(ws, ack_every=1 << 62, stall_s=1.0, deadline_s=30) == "stalled"
    assert x.up_pos - x.up_acked <= x.window
    assert x.run(ws, deadline_s=30) == "done"
    assert bytes(x.received) == data
    loans = metric(n, "netwine_bulk_loans_total")
    assert loans >= 1 if bulk_threads != "0" else loans == 0
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close()[0] == 1000
