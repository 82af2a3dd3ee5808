"""WebSocket tunnels against the real binary: the subprotocols binary, base64,
none and netwine.v1 (offsets, acks, resume after a drop), the handshake's error
answers, RFC 6455 failures (unmasked frames, UTF-8, size), control frames,
heartbeats, closes that carry the session's reason, and bounded memory.

Library clients (python3-websockets 10.4, asyncio) check interoperability; the
raw client in wsclient_util checks what a library will not send.
"""
import asyncio
import base64
import hashlib
import json
import signal
import socket
import struct
import threading
import time
import urllib.request

import pytest
import websockets.client
import websockets.exceptions

from conftest import free_port, pattern_bytes
from wsclient_util import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, HandshakeError, RawWs,
                           V1Transfer, be64, close_payload, encode_frame, handshake_request,
                           parse_head)

MiB = 1 << 20


def sha(b):
    return hashlib.sha256(b).hexdigest()


def start(netwine, target, *extra):
    return netwine("--access-log", "", "--target", target.address, *extra)


def ws_url(n, target):
    return f"ws://{n.host}:{n.port}/netwine/ws?target={target.address}"


def raw(n, path, protocols=None, **kw):
    return RawWs(n.host, n.port, path, protocols, **kw)


def sessions_open(n):
    with urllib.request.urlopen(f"{n.base}/netwine/status", timeout=10) as r:
        return json.load(r)["sessions_open"]


def new_path(target):
    return f"/netwine/ws?target={target.address}"


def recv_data(ws):
    """netwine.v1: the next binary message, skipping the server's "A N" acks."""
    while True:
        op, p = ws.recv_message()
        if op == OP_TEXT and p.startswith(b"A "):
            continue
        return op, p


def source_handler(payload):
    """Target that sends `payload` and closes."""
    def handle(conn):
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
    return handle


# ----------------------------------------------------------- bulk echo

async def _echo_16mib(url, subprotocol):
    data = pattern_bytes(16 * MiB, seed=3)
    chunk = 64 * 1024
    protos = [subprotocol] if subprotocol else None
    async with websockets.client.connect(url, subprotocols=protos, max_size=None,
                                         ping_interval=None, compression=None) as ws:
        assert ws.subprotocol == subprotocol

        async def sender():
            for i in range(0, len(data), chunk):
                piece = data[i:i + chunk]
                await ws.send(base64.b64encode(piece).decode() if subprotocol == "base64" else piece)

        got = bytearray()
        task = asyncio.ensure_future(sender())
        while len(got) < len(data):
            m = await asyncio.wait_for(ws.recv(), 30)
            if subprotocol == "base64":
                assert isinstance(m, str)
                got += base64.b64decode(m, validate=True)
            else:
                assert isinstance(m, bytes)
                got += m
        await task
        return sha(bytes(got)) == sha(data), len(got)


@pytest.mark.parametrize("subprotocol", ["binary", "base64", None])
def test_echo_16mib_each_way(netwine, tcp_target, subprotocol):
    t = tcp_target("echo")
    n = start(netwine, t)
    ok, size = asyncio.run(_echo_16mib(ws_url(n, t), subprotocol))
    assert size == 16 * MiB and ok


class Gate:
    """Target that reads nothing until `go` is set, then reads `total` bytes, then
    sends them back in 1000-byte writes (counted in `sent`) and waits for the end."""

    def __init__(self, total):
        self.total = total
        self.go = threading.Event()
        self.got = bytearray()
        self.sent = 0
        self.done = threading.Event()

    def __call__(self, conn):
        if not self.go.wait(60):
            return
        conn.settimeout(30)
        while len(self.got) < self.total:
            b = conn.recv(65536)
            if not b:
                return
            self.got += b
        for i in range(0, len(self.got), 1000):
            conn.sendall(self.got[i:i + 1000])
            self.sent = min(i + 1000, len(self.got))
        self.done.set()
        try:
            conn.recv(1)  # until netwine closes
        except OSError:
            pass


async def _until_quiet(value, finished, quiet=0.3, limit=30):
    """Waits until finished() or until value() has not changed for `quiet` s."""
    last, since = value(), time.monotonic()
    deadline = since + limit
    while not finished() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        v = value()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since > quiet:
            return


async def _small_messages_through_stalls(url, proto, data, gate):
    sizes = [1, 37, 1000, 4096, 16 * 1024, 16 * 1024 + 1, 700, 12000]
    async with websockets.client.connect(url, subprotocols=[proto], max_size=None, max_queue=1,
                                         ping_interval=None, compression=None) as ws:
        progress = [0]

        async def sender():
            i = k = 0
            while i < len(data):
                piece = data[i:i + sizes[k % len(sizes)]]
                await ws.send(base64.b64encode(piece).decode() if proto == "base64" else piece)
                i += len(piece)
                k += 1
                progress[0] = i

        task = asyncio.ensure_future(sender())
        # The target reads nothing yet: sends fill its socket, then queue in netwine.
        await _until_quiet(lambda: progress[0], task.done)
        gate.go.set()
        await asyncio.wait_for(task, 60)
        # We read nothing yet: the echo fills our socket, then queues in netwine.
        await _until_quiet(lambda: gate.sent, gate.done.is_set)
        got = bytearray()
        while len(got) < len(data):
            m = await asyncio.wait_for(ws.recv(), 30)
            got += base64.b64decode(m, validate=True) if proto == "base64" else m
        return bytes(got)


@pytest.mark.parametrize("proto", ["binary", "base64"])
def test_small_messages_through_stalled_sockets_keep_their_order(netwine, tcp_target, proto):
    """Small messages are written straight to an idle socket (docs/PERFORMANCE.md);
    when a socket stops taking them, the rest queue behind what it took. Both
    directions are stalled on purpose; every byte must arrive once, in order."""
    data = pattern_bytes(3 * MiB, seed=11)
    gate = Gate(len(data))
    t = tcp_target(gate)
    n = start(netwine, t, "--bulk-threads", "0")
    try:
        got = asyncio.run(_small_messages_through_stalls(ws_url(n, t), proto, data, gate))
    finally:
        gate.go.set()
    assert bytes(gate.got) == data, "upstream bytes differ"
    assert len(got) == len(data) and sha(got) == sha(data), "downstream bytes differ"


def test_server_prefers_its_own_order(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["base64", "binary"])  # noVNC's offer
    assert ws.subprotocol == "binary"
    ws.close()


def test_target_close_delivers_everything_then_1000(netwine, tcp_target):
    payload = pattern_bytes(3 * MiB + 17, seed=9)
    t = tcp_target(source_handler(payload))
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    got = bytearray()
    while True:
        op, p = ws.recv_message()
        if op == OP_CLOSE:
            code = struct.unpack("!H", p[:2])[0]
            break
        assert op == OP_BINARY
        got += p
    assert bytes(got) == payload
    assert code == 1000 and b"target closed" in p
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.read_to_eof(5)


def test_target_speaking_first_is_heard_before_the_client_sends(netwine, tcp_target):
    def banner(conn):
        conn.sendall(b"220 welcome\r\n")
        while conn.recv(65536):
            pass
    t = tcp_target(banner)
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    assert ws.recv_message() == (OP_BINARY, b"220 welcome\r\n")
    ws.close()


def test_target_reset_delivers_what_came_before_then_1011(netwine, tcp_target):
    # The target's read error (ECONNRESET), after bytes it sent: those arrive,
    # then a Close that names the failure. Other sessions go on.
    go = threading.Event()

    def reset_after_hello(conn):
        conn.sendall(b"hello")
        go.wait(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    t = tcp_target(reset_after_hello)
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", t.address, "--target", echo.address)
    other = raw(n, new_path(echo), ["binary"])
    ws = raw(n, new_path(t), ["binary"])
    assert ws.recv_message() == (OP_BINARY, b"hello")
    go.set()
    code, reason = ws.expect_close()
    assert code == 1011 and "target connection failed" in reason, (code, reason)
    other.send(OP_BINARY, b"still here")
    assert other.recv_message() == (OP_BINARY, b"still here")
    other.close()
    ws.close()


def test_client_reset_mid_stream_ends_its_session_only(netwine, tcp_target):
    # The client's read error (ECONNRESET) on netwine's own read event: its
    # target connection is closed, and another session is untouched.
    t = tcp_target("echo")
    n = start(netwine, t)
    keep = raw(n, new_path(t), ["binary"])
    gone = raw(n, new_path(t), ["binary"])
    gone.send(OP_BINARY, b"x" * 1000)
    assert gone.recv_message() == (OP_BINARY, b"x" * 1000)
    assert t.wait_accepted(2)
    gone.send(OP_BINARY, b"y" * 100000)  # in flight while the socket resets
    gone.abort()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sessions_open(n) != 1:
        time.sleep(0.05)  # polling state only visible by asking, bounded
    assert sessions_open(n) == 1
    keep.send(OP_BINARY, b"z" * 10)
    assert keep.recv_message() == (OP_BINARY, b"z" * 10)
    keep.close()


def test_frame_in_the_handshake_packet_is_processed(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"], send_with_handshake=encode_frame(OP_BINARY, b"early bird"))
    assert ws.recv_message() == (OP_BINARY, b"early bird")
    ws.close()


def test_text_messages_go_to_the_target_in_binary_mode(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_TEXT, "héllo".encode())
    assert ws.recv_message() == (OP_BINARY, "héllo".encode())
    ws.close()


def test_fragmented_message_with_ping_between(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"abc", fin=False)
    ws.send(OP_PING, b"mid")
    ws.send(0, b"def", fin=True)
    # Pieces of a message go to the target as they arrive, so the echo of
    # "abc" may come before or after the pong.
    got, pongs = b"", []
    while len(got) < 6 or not pongs:
        op, p = ws.recv_message()
        if op == OP_PONG:
            pongs.append(p)
        else:
            assert op == OP_BINARY
            got += p
    assert got == b"abcdef" and pongs == [b"mid"]
    ws.close()


# ------------------------------------------------------------ base64 mode

def test_base64_invalid_closes_1007(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["base64"])
    ws.send(OP_TEXT, b"QUJD")  # "ABC"
    assert ws.recv_message() == (OP_TEXT, b"QUJD")
    ws.send(OP_TEXT, b"QUJ*")
    assert ws.expect_close() == (1007, "invalid base64")
    assert ws.read_to_eof(5)


def test_base64_split_across_frames(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["base64"])
    ws.send(OP_TEXT, b"aGVsbG8g", fin=False)   # cut on a quad boundary ...
    ws.send(0, b"d29y", fin=False)
    ws.send(0, b"bGQ=", fin=True)              # ... and ending with padding
    got = b""
    while len(got) < 11:
        op, p = ws.recv_message()
        assert op == OP_TEXT
        got += base64.b64decode(p)
    assert got == b"hello world"
    ws.send(OP_TEXT, b"aGk", fin=False)        # a quad cut between frames
    ws.send(0, b"=", fin=True)
    op, p = ws.recv_message()
    assert base64.b64decode(p) == b"hi"
    ws.close()


def test_base64_binary_message_closes_1003(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["base64"])
    ws.send(OP_BINARY, b"raw")
    assert ws.expect_close()[0] == 1003


# ------------------------------------------------------------- netwine.v1

def test_v1_echo_with_offsets_and_acks(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    data = pattern_bytes(8 * MiB, seed=5)
    x = V1Transfer(data)
    ws = raw(n, new_path(t), ["netwine.v1"])
    assert ws.subprotocol == "netwine.v1"
    assert x.attach(ws) == 0
    assert len(x.key) >= 22
    assert x.run(ws) == "done"
    assert sha(bytes(x.received)) == sha(data)
    assert x.up_acked > 0
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close() == (1000, "")
    # A 1000 close ends the session: it cannot be attached any more.
    with pytest.raises(HandshakeError) as e:
        raw(n, f"/netwine/{x.key}/ws?ack={len(data)}", ["netwine.v1"])
    assert e.value.status == 404 and b"unknown_session" in e.value.body


def test_v1_duplicate_upstream_is_applied_once(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    ws.recv_message()  # OK
    ws.send(OP_BINARY, be64(0) + b"hello")
    ws.send(OP_BINARY, be64(0) + b"hello")      # full duplicate: ignored
    ws.send(OP_BINARY, be64(3) + b"lo world")   # overlap: applied from offset 5
    got, acks = b"", []
    while got != b"hello world":
        op, p = ws.recv_message()
        if op == OP_TEXT:
            acks.append(p)
            continue
        assert op == OP_BINARY
        off = struct.unpack("!Q", p[:8])[0]
        assert off == len(got)
        got += p[8:]
        assert len(got) <= 11
    assert b"A 11" in acks or ws.recv_message() == (OP_TEXT, b"A 11")
    ws.close()


def test_v1_upstream_gap_closes_4009(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    ws.recv_message()
    ws.send(OP_BINARY, be64(5) + b"x")
    assert ws.expect_close() == (4009, "upstream offset gap, expected 0")


@pytest.mark.parametrize("text,code", [(b"hello", 1003), (b"A x", 1002), (b"A 999", 1002)])
def test_v1_bad_text_messages(netwine, tcp_target, text, code):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    ws.recv_message()
    ws.send(OP_TEXT, text)
    assert ws.expect_close()[0] == code


def test_v1_short_binary_message_closes_1002(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    ws.recv_message()
    ws.send(OP_BINARY, b"1234")
    assert ws.expect_close()[0] == 1002


@pytest.mark.parametrize("drops", [1, 3])
def test_v1_resume_after_abrupt_drop(netwine, tcp_target, drops):
    t = tcp_target("echo")
    n = start(netwine, t)
    data = pattern_bytes(8 * MiB, seed=11)
    x = V1Transfer(data)
    ws = raw(n, new_path(t), ["netwine.v1"])
    x.attach(ws)
    for i in range(drops):
        # Drop mid-transfer, with data in flight both ways and unacked bytes.
        assert x.run(ws, stop_after_down=(1 + i) * 700 * 1024 + 12345, ack_every=300 * 1024) == "stopped"
        ws.abort()
        held = len(x.received)
        ws = raw(n, f"/netwine/{x.key}/ws?ack={held}", ["netwine.v1"])
        up_next = x.attach(ws)
        assert up_next <= len(data)
    assert x.run(ws) == "done"
    assert len(x.received) == len(data)
    assert sha(bytes(x.received)) == sha(data)  # nothing lost, nothing duplicated
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close()[0] == 1000


def test_v1_close_1001_keeps_the_session(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    key = ws.recv_message()[1].decode().split(" ")[1]
    ws.send(OP_BINARY, be64(0) + b"ping")
    while ws.recv_message()[0] != OP_BINARY:
        pass
    ws.send(OP_CLOSE, close_payload(1001, "page left"))
    assert ws.expect_close() == (1001, "")
    assert ws.read_to_eof(5)
    ws2 = raw(n, f"/netwine/{key}/ws?ack=4", ["netwine.v1"])
    assert ws2.recv_message() == (OP_TEXT, f"OK {key} 4".encode())
    ws2.send(OP_BINARY, be64(4) + b"pong")
    op, p = recv_data(ws2)
    assert op == OP_BINARY and p == be64(4) + b"pong"
    ws2.close()


def test_v1_second_attach_replaces_first_with_4002(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    key = ws.recv_message()[1].decode().split(" ")[1]
    ws2 = raw(n, f"/netwine/{key}/ws?ack=0", ["netwine.v1"])
    assert ws2.recv_message()[0] == OP_TEXT
    assert ws.expect_close()[0] == 4002
    ws2.send(OP_BINARY, be64(0) + b"still here")
    assert recv_data(ws2) == (OP_BINARY, be64(0) + b"still here")
    ws2.close()


def test_attach_errors(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["netwine.v1"])
    key = ws.recv_message()[1].decode().split(" ")[1]
    with pytest.raises(HandshakeError) as e:
        raw(n, f"/netwine/{key}/ws?ack=0", ["binary"])
    assert e.value.status == 400
    with pytest.raises(HandshakeError) as e:
        raw(n, f"/netwine/{key}/ws?ack=0")
    assert e.value.status == 400
    with pytest.raises(HandshakeError) as e:
        raw(n, f"/netwine/{key}/ws?ack=99", ["netwine.v1"])
    assert e.value.status == 409 and b"bad_offset" in e.value.body
    with pytest.raises(HandshakeError) as e:
        raw(n, "/netwine/AAAAAAAAAAAAAAAAAAAAAAAA/ws?ack=0", ["netwine.v1"])
    assert e.value.status == 404 and b"unknown_session" in e.value.body
    ws.close()


def test_binary_session_cannot_be_attached(netwine, tcp_target):
    # A binary WebSocket's session is not resumable; its key is never told to the
    # client, but even a guessed one must not attach. The key is only in the
    # status page (redacted), so this checks the refusal path with netwine.v1 on
    # an unknown key instead, and that the binary socket keeps working.
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"x")
    assert ws.recv_message() == (OP_BINARY, b"x")
    ws.close()


# ------------------------------------------------------- target failures

def test_target_refused_closes_1011_with_reason(netwine, tcp_target):
    port = free_port()
    n = netwine("--access-log", "", "--target", f"127.0.0.1:{port}")

    async def go():
        url = f"ws://{n.host}:{n.port}/netwine/ws?target=127.0.0.1:{port}"
        async with websockets.client.connect(url, subprotocols=["binary"]) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            return e.value.rcvd

    rcvd = asyncio.run(go())
    assert rcvd.code == 1011
    assert "refused" in rcvd.reason.lower()


def test_target_not_allowed_closes_1008_after_upgrade(netwine, tcp_target):
    # The address rules are checked after DNS, while connecting: after the upgrade.
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, "/netwine/ws?target=127.0.0.1:1", ["binary"])
    code, reason = ws.expect_close()
    assert code == 1008 and "not allowed" in reason
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.read_to_eof(5)


def test_websockify_token_path(netwine, tcp_target, tmp_path):
    t = tcp_target("echo")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"vnc1: {t.address}\n")
    n = netwine("--access-log", "", "--token-source", str(tokens))
    ws = raw(n, "/websockify?token=vnc1", ["binary", "base64"])
    assert ws.subprotocol == "binary"
    ws.send(OP_BINARY, b"RFB 003.008\n")
    assert ws.recv_message() == (OP_BINARY, b"RFB 003.008\n")
    ws.close()


# ------------------------------------------------------------ handshakes

def raw_upgrade(n, path, **kw):
    req, _ = handshake_request(n.host, n.port, path, **kw)
    with socket.create_connection((n.host, n.port), timeout=10) as s:
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return parse_head(data)


def test_wrong_version_is_426_with_version_header(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    status, headers, _ = raw_upgrade(n, new_path(t), version="8")
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


def test_missing_key_is_400(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    status, _, _ = raw_upgrade(n, new_path(t), key="")
    assert status == 400


def test_bad_key_is_400(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    status, _, _ = raw_upgrade(n, new_path(t), key="dG9vIHNob3J0")
    assert status == 400


def test_unsupported_subprotocol_is_400(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    status, _, body = raw_upgrade(n, new_path(t), protocols=["mqtt", "chat"])
    assert status == 400


def test_disallowed_origin_is_403(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    status, _, _ = raw_upgrade(n, new_path(t), extra={"Origin": "http://evil.example"})
    assert status == 403


# ----------------------------------------------------- RFC 6455 failures

def test_unmasked_client_frame_closes_1002(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"x" * 1000, mask=False)
    code, _ = ws.expect_close()
    assert code == 1002
    assert ws.read_to_eof(5)


def test_ping_gets_pong_with_payload(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_PING, b"are you there?")
    assert ws.recv_message() == (OP_PONG, b"are you there?")
    ws.close()


def test_message_too_big_closes_1009(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t, "--ws-max-message", "4K")
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"a" * 4096)
    assert ws.recv_message() == (OP_BINARY, b"a" * 4096)
    ws.send(OP_BINARY, b"b" * 4097)
    assert ws.expect_close()[0] == 1009


def test_invalid_utf8_text_closes_1007(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_TEXT, b"ok \xc3\x28")
    assert ws.expect_close()[0] == 1007


def test_reserved_bits_close_1002(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"x", rsv=4)
    assert ws.expect_close()[0] == 1002


def test_client_close_is_echoed_and_tcp_closed(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_CLOSE, close_payload(4321, "bye"))
    assert ws.expect_close() == (4321, "")
    assert ws.read_to_eof(5)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_CLOSE, b"")
    assert ws.expect_close() == (1005, "")  # a Close without code is answered in kind
    assert ws.read_to_eof(5)


def test_client_close_flushes_upstream_to_target(netwine, tcp_target):
    got = bytearray()
    done = threading.Event()

    def collect(conn):
        while True:
            b = conn.recv(65536)
            if not b:
                break
            got.extend(b)
        done.set()

    t = tcp_target(collect)
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    payload = pattern_bytes(2 * MiB, seed=1)
    for i in range(0, len(payload), 60000):
        ws.send(OP_BINARY, payload[i:i + 60000])
    ws.send(OP_CLOSE, close_payload(1000))
    assert ws.expect_close()[0] == 1000
    assert done.wait(10)
    assert bytes(got) == payload


# ---------------------------------------------------------- heartbeats

def test_server_pings_and_drops_silent_peer(netwine, tcp_target):
    t = tcp_target("echo")
    # A pong timeout with room for a slow (sanitizer) build to answer in time.
    n = start(netwine, t, "--ws-ping-interval", "0.5", "--ws-pong-timeout", "2")
    ws = raw(n, new_path(t), ["netwine.v1"])
    key = ws.recv_message()[1].decode().split(" ")[1]
    # Answering keeps the connection alive across several intervals.
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 3:
        op, p = ws.recv_message()
        if op == OP_PING:
            pings += 1
            ws.send(OP_PONG, p)
    assert pings >= 3
    # Silence: dropped within interval + timeout (+ slack), without a Close.
    t1 = time.monotonic()
    assert ws.read_to_eof(10)
    assert time.monotonic() - t1 < 5.0
    # netwine.v1: a drop leaves the session resumable.
    ws2 = raw(n, f"/netwine/{key}/ws?ack=0", ["netwine.v1"])
    assert ws2.recv_message()[0] == OP_TEXT
    ws2.close()


def test_v1_client_ignoring_the_window_stalls_only_itself(netwine, tcp_target):
    # A netwine.v1 client that pushes upstream with no window and holds its acks
    # back, against an echoing target: both directions fill and its acks (and
    # Pongs) wait behind its own data (PROTOCOL.md section 4). netwine drops that
    # connection once a ping goes unanswered, the session waits to be resumed,
    # and every other session goes on meanwhile.
    t = tcp_target("echo")
    n = start(netwine, t, "--ws-ping-interval", "0.5", "--ws-pong-timeout", "0.5")
    greedy = V1Transfer(pattern_bytes(64 * 1024 * 1024, seed=3), window=1 << 62)
    ws = raw(n, new_path(t), ["netwine.v1"])
    greedy.attach(ws)
    t0 = time.monotonic()
    with pytest.raises((EOFError, OSError)):  # dropped (no Close: its Pong never came)
        greedy.run(ws, ack_every=1 << 62, deadline_s=60)
    assert time.monotonic() - t0 < 45  # ~3 s normally; room for a sanitizer build
    assert len(greedy.received) < len(greedy.data)
    # Another session, meanwhile and after: unaffected.
    other = V1Transfer(pattern_bytes(4 * 1024 * 1024, seed=4))
    ws2 = raw(n, new_path(t), ["netwine.v1"])
    other.attach(ws2)
    assert other.run(ws2, deadline_s=60) == "done"
    assert bytes(other.received) == other.data
    # The session waited for it: it can be resumed at the client's offset. (Its
    # target still holds the excess it was given, so a resumed transfer may stall
    # and be dropped again: the window is the client's to keep.)
    sent = greedy.up_pos
    ws3 = raw(n, f"/netwine/{greedy.key}/ws?ack={len(greedy.received)}", ["netwine.v1"])
    assert 0 < greedy.attach(ws3) <= sent  # OK <key> <up_next>: it holds what it read
    ws3.close()


# ------------------------------------------------------ memory bounds

def test_slow_reader_does_not_grow_memory(netwine, tcp_target):
    stop = threading.Event()

    def firehose(conn):
        block = pattern_bytes(256 * 1024)
        while not stop.is_set():
            conn.sendall(block)

    t = tcp_target(firehose)
    n = start(netwine, t)
    base = n.rss_kib()
    ws = raw(n, new_path(t), ["binary"])
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    time.sleep(1.5)  # the client reads nothing; netwine must stop reading the target
    grown = n.rss_kib() - base
    stop.set()
    ws.abort()
    assert grown < 24 * 1024, f"netwine grew by {grown} KiB with a stalled reader"


def test_stalled_target_stops_reading_client(netwine, tcp_target):
    release = threading.Event()

    def stalled(conn):
        release.wait(30)
        while conn.recv(65536):
            pass

    t = tcp_target(stalled)
    n = start(netwine, t)
    base = n.rss_kib()
    ws = raw(n, new_path(t), ["binary"])
    ws.sock.setblocking(False)
    frame = encode_frame(OP_BINARY, pattern_bytes(64 * 1024))
    pending = b""
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 64 * MiB:
        if not pending:
            pending = frame
        try:
            k = ws.sock.send(pending)
            pending = pending[k:]
            sent += k
        except BlockingIOError:
            time.sleep(0.01)
    grown = n.rss_kib() - base
    release.set()
    ws.abort()
    assert sent < 48 * MiB, "the client was never slowed down"
    assert grown < 24 * 1024, f"netwine grew by {grown} KiB with a stalled target"


# ------------------------------------------------------------- shutdown

def test_shutdown_closes_1001(netwine, tcp_target):
    t = tcp_target("echo")
    n = start(netwine, t)
    ws = raw(n, new_path(t), ["binary"])
    ws.send(OP_BINARY, b"x")
    assert ws.recv_message() == (OP_BINARY, b"x")
    n.signal(signal.SIGTERM)
    code, reason = ws.expect_close()
    assert code == 1001 and "shutting down" in reason
    ws.send(OP_CLOSE, close_payload(1001))
    assert ws.read_to_eof(5)
    assert n.proc.wait(10) == 0  # drained: exits by itself, cleanly


@pytest.mark.parametrize("subprotocol", ["binary", "netwine.v1"])
def test_shutdown_with_unresponsive_clients_exits_cleanly(netwine, tcp_target, subprotocol):
    # Clients that neither read nor answer the Close: netwine still exits by
    # itself, cleanly, once drain-timeout has passed (the sanitizer build checks
    # that the connections are freed without use-after-free or leaks).
    stop = threading.Event()

    def firehose(conn):
        block = pattern_bytes(64 * 1024)
        while not stop.is_set():
            conn.sendall(block)

    t = tcp_target(firehose)
    n = start(netwine, t, "--drain-timeout", "1")
    clients = [raw(n, new_path(t), [subprotocol]) for _ in range(3)]
    quiet = raw(n, new_path(t), [subprotocol])
    time.sleep(0.3)
    n.signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = n.proc.wait(15)
    stop.set()
    assert rc == 0, n.logs()
    assert time.monotonic() - t0 < 1 + 8  # the drain timeout, and room for a sanitizer build's exit
    for c in clients + [quiet]:
        c.abort()
