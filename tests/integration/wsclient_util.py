"""A small raw-socket WebSocket client for tests that need control no library
gives: unmasked frames, bytes sent with the handshake, an abrupt TCP drop, and
the netwine.v1 framing (offsets and acks) driven from one non-blocking loop.
"""
import base64
import hashlib
import os
import select
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def mask_bytes(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, fast for large payloads (big-int XOR)."""
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return bytes(head) + key + mask_bytes(payload, key)
    return bytes(head) + payload


def close_payload(code=None, reason=""):
    if code is None:
        return b""
    return struct.pack("!H", code) + reason.encode()


class HandshakeError(Exception):
    def __init__(self, status, headers, body):
        super().__init__(f"handshake answered {status}: {body[:200]!r}")
        self.status, self.headers, self.body = status, headers, body


def handshake_request(host, port, path, protocols=None, version="13", key=None, extra=None):
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade"]
    if key != "":
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def parse_head(raw: bytes):
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


class RawWs:
    """One client WebSocket over a plain socket."""

    def __init__(self, host, port, path, protocols=None, send_with_handshake=b"", timeout=10,
                 wrap=None, **kw):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if wrap:  # e.g. an ssl context's wrap_socket: the same WebSocket over TLS
            self.sock = wrap(self.sock)
        req, key = handshake_request(host, port, path, protocols, **kw)
        self.sock.sendall(req + send_with_handshake)
        raw = b""
        while b"\r\n\r\n" not in raw:
            b = self.sock.recv(65536)
            if not b:
                self.sock.close()
                raise EOFError(f"connection closed inside the handshake response: {raw[:200]!r}")
            raw += b
        status, headers, rest = parse_head(raw)
        if status != 101:
            # Error answers keep the connection alive: read Content-Length bytes.
            body = rest
            want = int(headers.get("content-length", "0"))
            try:
                while len(body) < want:
                    b = self.sock.recv(65536)
                    if not b:
                        break
                    body += b
            except OSError:
                pass
            self.sock.close()
            raise HandshakeError(status, headers, body)
        expect = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expect
        self.headers = headers
        self.subprotocol = headers.get("sec-websocket-protocol")
        self.buf = bytearray(rest)
        self.out = bytearray()  # queued for a non-blocking send loop
        self.eof = False

    # -- blocking helpers -------------------------------------------------
    def send(self, opcode, payload=b"", **kw):
        self.sock.sendall(encode_frame(opcode, payload, **kw))

    def _fill(self):
        b = self.sock.recv(1 << 20)
        if not b:
            self.eof = True
            raise EOFError("connection closed")
        self.buf += b

    def try_frame(self):
        """Parses one frame from the buffer: (fin, opcode, payload) or None."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, op = b[0] & 0x80, b[0] & 0x0F
        assert not (b[1] & 0x80), "server frames must not be masked"
        n, pos = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack_from("!H", b, 2)[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack_from("!Q", b, 2)[0], 10
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        return bool(fin), op, payload

    def recv_frame(self):
        while True:
            f = self.try_frame()
            if f:
                return f
            self._fill()

    def recv_message(self):
        """Next message: (opcode, payload); control frames are returned as they come."""
        op0, parts = None, []
        while True:
            fin, op, payload = self.recv_frame()
            if op >= 8:
                return op, payload
            if op != OP_CONT:
                op0 = op
            parts.append(payload)
            if fin:
                return op0, b"".join(parts)

    def expect_close(self):
        """Reads until the server's Close; returns (code, reason). Data is skipped."""
        while True:
            op, payload = self.recv_message()
            if op == OP_CLOSE:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
                return 1005, ""

    def read_to_eof(self, timeout=10):
        """Reads until the server closes TCP; True if it did within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drops the connection without a Close frame (RST, like a dead network)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def be64(n):
    return struct.pack("!Q", n)


class V1Transfer:
    """Drives a netwine.v1 echo transfer: sends `data` upstream with offsets,
    keeping at most `window` bytes unacknowledged by the server (as netwine.js
    does: PROTOCOL.md section 4), collects the echo downstream, acknowledges as it
    goes. Survives drops: call run() again on a new RawWs attached with
    ack=len(received)."""

    CHUNK = 48 * 1024

    def __init__(self, data: bytes, window=256 * 1024):
        self.data = data
        self.window = window
        self.received = bytearray()
        self.up_pos = 0          # next upstream byte to send
        self.up_acked = 0        # highest "A N" from the server
        self.down_acked = 0      # highest "A N" sent
        self.down_msgs = 0
        self.key = None
        self.closed = None       # (code, reason) of the server's Close

    def attach(self, ws: RawWs):
        op, payload = ws.recv_message()
        assert op == OP_TEXT, (op, payload)
        word, key, up_next = payload.decode().split(" ")
        assert word == "OK"
        if self.key:
            assert key == self.key
        self.key = key
        up_next = int(up_next)
        assert up_next <= self.up_pos or self.up_pos == 0
        self.up_pos = up_next   # resend what the server does not hold
        return up_next

    def run(self, ws: RawWs, stop_after_down=None, ack_every=128 * 1024, deadline_s=60, stall_s=None):
        """Returns 'done' when everything came back, 'stopped' when
        `stop_after_down` downstream bytes have been received in this run, or
        'stalled' when nothing moved either way for `stall_s` seconds."""
        sock = ws.sock
        sock.setblocking(False)
        start_down = len(self.received)
        if self.down_acked < len(self.received):  # what an earlier run held back
            self.down_acked = len(self.received)
            ws.out += encode_frame(OP_TEXT, f"A {self.down_acked}".encode())
        deadline = time.monotonic() + deadline_s
        moved = time.monotonic()
        # Frames may already sit in ws.buf, read along with the OK message by
        # attach(): parse them before waiting for the socket, which may stay quiet.
        unparsed = bool(ws.buf)
        while len(self.received) < len(self.data):
            if time.monotonic() > deadline:
                raise TimeoutError(f"transfer stalled at up={self.up_pos} down={len(self.received)}")
            room = self.window - (self.up_pos - self.up_acked)  # from the last "A N", not up_next
            if not ws.out and self.up_pos < len(self.data) and room > 0:
                chunk = self.data[self.up_pos:self.up_pos + min(self.CHUNK, room)]
                ws.out += encode_frame(OP_BINARY, be64(self.up_pos) + chunk)
                self.up_pos += len(chunk)
            want_w = [sock] if ws.out else []
            if stall_s is not None and time.monotonic() - moved > stall_s:
                return "stalled"
            r, w, _ = select.select([sock], want_w, [], 0 if unparsed else 0.1)
            if w:
                try:
                    n = sock.send(ws.out)
                    del ws.out[:n]
                    moved = time.monotonic()
                except BlockingIOError:
                    pass
            if r or unparsed:
                unparsed = False
                if r:
                    b = sock.recv(1 << 20)
                    if not b:
                        raise EOFError("server closed the connection")
                    ws.buf += b
                    moved = time.monotonic()
                while True:
                    f = ws.try_frame()
                    if not f:
                        break
                    fin, op, payload = f
                    assert fin, "netwine sends unfragmented messages"
                    if op == OP_BINARY:
                        off = struct.unpack("!Q", payload[:8])[0]
                        body = payload[8:]
                        have = len(self.received)
                        assert off <= have, f"downstream gap: got offset {off}, hold {have}"
                        self.received += body[have - off:]
                        self.down_msgs += 1
                    elif op == OP_TEXT:
                        word, n = payload.decode().split(" ")
                        assert word == "A"
                        assert int(n) >= self.up_acked
                        self.up_acked = int(n)
                    elif op == OP_PING:
                        ws.out += encode_frame(OP_PONG, payload)
                    elif op == OP_CLOSE:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        self.closed = (code, payload[2:].decode())
                        raise EOFError(f"server closed: {self.closed}")
                if (len(self.received) - self.down_acked >= ack_every or
                        len(self.received) == len(self.data) > self.down_acked):
                    self.down_acked = len(self.received)
                    ws.out += encode_frame(OP_TEXT, f"A {self.down_acked}".encode())
                if stop_after_down is not None and len(self.received) - start_down >= stop_after_down:
                    return "stopped"
        # Flush the final ack.
        sock.setblocking(True)
        if ws.out:
            sock.sendall(ws.out)
            ws.out.clear()
        return "done"


def push_until_refused(sock, data, limit):
    """Writes `data` over and over to the non-blocking `sock` until a whole second
    passes without room (the peer has stopped reading) or `limit` bytes went out.
    Returns how many bytes the peer took."""
    out = bytearray()
    pushed = 0
    while pushed < limit:
        if not out:
            out += data
        _, w, _ = select.select([], [sock], [], 1.0)
        if not w:
            break
        try:
            sent = sock.send(out)
        except BlockingIOError:
            continue
        del out[:sent]
        pushed += sent
    return pushed
