"""A netwine client for the HTTP transports, written from docs/PROTOCOL.md alone.

It knows the wire protocol and nothing of the server's code: open, stream, poll,
send and close (PROTOCOL.md §3), both framings, offsets and acknowledgements,
resuming after a broken connection (§1), and the JSON errors (§2). The integration
tests use it; it is also an example of a third-party client.

Only the standard library; HTTP/1.1 (or 1.0) over a plain socket so that a test
can read a streamed body piece by piece and cut the connection at any moment.

    c = Client("127.0.0.1", 8080)
    s = c.open("demo", mode="poll")          # a Session
    s.send(b"hello\\r\\n")                    # upstream, offset handled
    data = s.poll()                           # new downstream bytes
    s.close()
"""
import base64
import json
import socket
import struct
import time

DEFAULT_TIMEOUT = 10.0
# PROTOCOL.md §3: a reader must accept control lines up to 4096 bytes.
MAX_CONTROL_LINE = 4096


class ProtocolError(Exception):
    """The server sent something PROTOCOL.md does not allow."""


class HttpError(Exception):
    """A non-200 answer. `error`, `message` and `expected` come from the JSON body."""

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers
        self.json = None
        try:
            self.json = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            pass
        j = self.json if isinstance(self.json, dict) else {}
        self.error = j.get("error")
        self.message = j.get("message")
        self.expected = j.get("expected")
        super().__init__(f"HTTP {status} {self.error}: {self.message or body[:200]!r}")


# ----------------------------------------------------------------------- HTTP

class Response:
    """One HTTP response read incrementally from a socket.

    The body is decoded as chunked, Content-Length or close-delimited, whichever
    the headers say; read() gives body bytes as they arrive, b"" at the end.
    """

    def __init__(self, sock, method, timeout):
        self.sock = sock
        self._buf = bytearray()
        self._eof = False
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        head = self._read_head(deadline)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ProtocolError(f"bad status line {lines[0]!r}")
        self.version = parts[0]
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        te = ",".join(self.headers.get("transfer-encoding", [])).lower()
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            self.mode, self._left = "length", 0
        elif "chunked" in te:
            self.mode, self._left = "chunked", None  # None: at a chunk-size line
        elif "content-length" in self.headers:
            self.mode, self._left = "length", int(self.headers["content-length"][0])
        else:
            self.mode, self._left = "close", None
        self.done = self.mode == "length" and self._left == 0
        self.body_bytes = 0

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("response timed out")
        self.sock.settimeout(remaining)
        data = self.sock.recv(1 << 18)
        if not data:
            self._eof = True
        self._buf += data
        return len(data)

    def _read_head(self, deadline):
        while True:
            i = self._buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self._buf[:i])
                del self._buf[:i + 4]
                return head
            if len(self._buf) > 65536:
                raise ProtocolError("response head too long")
            if self._eof or not self._fill(deadline):
                raise ProtocolError("connection closed before the response head")

    def read(self, timeout=None):
        """The next body bytes (at least one), or b"" at the end of the body."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.done:
            if self.mode == "close":
                if self._buf:
                    out = bytes(self._buf)
                    self._buf.clear()
                    self.body_bytes += len(out)
                    return out
                if self._eof or not self._fill(deadline):
                    self.done = True
                continue
            if self.mode == "length":
                if self._buf:
                    out = bytes(self._buf[:self._left])
                    del self._buf[:len(out)]
                    self._left -= len(out)
                    self.done = self._left == 0
                    self.body_bytes += len(out)
                    return out
                if self._eof or not self._fill(deadline):
                    raise ProtocolError("connection closed inside a Content-Length body")
                continue
            # chunked
            if self._left is None:
                i = self._buf.find(b"\r\n")
                if i < 0:
                    if self._eof or not self._fill(deadline):
                        raise ProtocolError("connection closed inside a chunked body")
                    continue
                size = int(bytes(self._buf[:i]).split(b";")[0], 16)
                del self._buf[:i + 2]
                if size == 0:
                    self._left = -1  # trailers until an empty line
                else:
                    self._left = size
                continue
            if self._left == -1:
                i = self._buf.find(b"\r\n")
                if i < 0:
                    if self._eof or not self._fill(deadline):
                        raise ProtocolError("connection closed inside the chunked trailer")
                    continue
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                if not line:
                    self.done = True
                continue
            if self._left == 0:  # CRLF after a chunk's data
                if len(self._buf) < 2:
                    if self._eof or not self._fill(deadline):
                        raise ProtocolError("connection closed inside a chunked body")
                    continue
                if self._buf[:2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                del self._buf[:2]
                self._left = None
                continue
            if self._buf:
                out = bytes(self._buf[:self._left])
                del self._buf[:len(out)]
                self._left -= len(out)
                self.body_bytes += len(out)
                return out
            if self._eof or not self._fill(deadline):
                raise ProtocolError("connection closed inside a chunk")
        return b""

    def read_all(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = bytearray()
        while True:
            b = self.read(max(0.001, deadline - time.monotonic()))
            if not b:
                return bytes(out)
            out += b

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def kill(self):
        """Cuts the connection at once (RST), as a browser tab closing or a proxy dying."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


class Pending:
    """A request that has been sent but whose answer has not been read yet (a held
    long poll, say): response() waits for the head."""

    def __init__(self, sock, method, timeout):
        self.sock, self.method, self.timeout = sock, method, timeout

    def response(self, timeout=None):
        try:
            return Response(self.sock, self.method, self.timeout if timeout is None else timeout)
        except BaseException:
            self.sock.close()
            raise

    def close(self):
        self.sock.close()


def http_request(host, port, method, path, body=b"", headers=None, version="HTTP/1.1",
                 timeout=DEFAULT_TIMEOUT, wait=True):
    """Sends one request on a new connection; returns the Response once its head is
    in, or with wait=False a Pending at once."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        h = {"Host": f"{host}:{port}"}
        if version == "HTTP/1.1":
            h["Connection"] = "close"
        if method == "POST" or body:
            h["Content-Length"] = str(len(body))
        h.update(headers or {})
        head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        sock.sendall(head.encode("latin-1") + body)
    except BaseException:
        sock.close()
        raise
    pending = Pending(sock, method, timeout)
    return pending.response() if wait else pending


# --------------------------------------------------------------------- frames

class Frame:
    """One frame of PROTOCOL.md §3 "Frames". `type` is OK, D, H, R, C or P."""

    __slots__ = ("type", "key", "offset", "payload", "code", "reason", "new_bytes")

    def __init__(self, type, key=None, offset=None, payload=b"", code=None, reason=None):
        self.type, self.key, self.offset, self.payload = type, key, offset, payload
        self.code, self.reason = code, reason
        self.new_bytes = b""  # for data frames: the part past what the session held

    def __repr__(self):
        if self.type == "D":
            return f"Frame(D {self.offset} +{len(self.payload)})"
        if self.type == "C":
            return f"Frame(C {self.code} {self.reason!r})"
        return f"Frame({self.type}{' ' + self.key if self.key else ''})"


class FrameReader:
    """Incremental frame parser for framing=text or framing=binary."""

    def __init__(self, framing="text"):
        if framing not in ("text", "binary"):
            raise ValueError(framing)
        self.framing = framing
        self._buf = bytearray()

    def feed(self, data):
        """Adds body bytes; returns the frames now complete."""
        self._buf += data
        frames = []
        while True:
            f = self._next()
            if f is None:
                return frames
            frames.append(f)

    def pending(self):
        return len(self._buf)

    def _next(self):
        nl = self._buf.find(b"\n")
        if nl < 0:
            if self.framing == "binary" and len(self._buf) > MAX_CONTROL_LINE:
                raise ProtocolError("frame line longer than 4096 bytes")
            if self.framing == "text" and not self._buf.startswith(b"D ") and len(self._buf) > MAX_CONTROL_LINE:
                raise ProtocolError("control line longer than 4096 bytes")
            return None
        line = bytes(self._buf[:nl])
        if nl + 1 > MAX_CONTROL_LINE and not (self.framing == "text" and line.startswith(b"D ")):
            raise ProtocolError(f"frame line of {nl + 1} bytes (at most {MAX_CONTROL_LINE})")
        if self.framing == "binary" and line.startswith(b"D "):
            parts = line.split(b" ")
            if len(parts) != 3:
                raise ProtocolError(f"bad data frame line {line[:80]!r}")
            offset, length = int(parts[1]), int(parts[2])
            if len(self._buf) < nl + 1 + length:
                return None
            payload = bytes(self._buf[nl + 1:nl + 1 + length])
            del self._buf[:nl + 1 + length]
            return Frame("D", offset=offset, payload=payload)
        del self._buf[:nl + 1]
        text = line.decode("ascii")
        if text.startswith("D "):
            parts = text.split(" ")
            if len(parts) != 3:
                raise ProtocolError(f"bad data frame line {text[:80]!r}")
            return Frame("D", offset=int(parts[1]), payload=base64.b64decode(parts[2], validate=True))
        if text.startswith("OK "):
            return Frame("OK", key=text[3:])
        if text == "H":
            return Frame("H")
        if text == "R":
            return Frame("R")
        if text.startswith("P ") or text == "P":
            return Frame("P")
        if text.startswith("C "):
            code, _, reason = text[2:].partition(" ")
            return Frame("C", code=int(code), reason=reason)
        raise ProtocolError(f"unknown frame {text[:80]!r}")


# ------------------------------------------------------------------- sessions

class Stream:
    """A streaming response (open with mode=stream, or KEY/stream): frames as they come."""

    def __init__(self, session, response):
        self.session = session
        self.response = response
        self.reader = FrameReader(session.framing)
        self._frames = []
        self.ended = False      # the body ended
        self.recycled = False   # it ended with R
        self.frames_seen = 0

    def next_frame(self, timeout=DEFAULT_TIMEOUT):
        """The next frame, or None when the body has ended. Data frames are passed to
        the session (offsets checked); a C frame marks the session closed."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            if self.ended:
                return None
            chunk = self.response.read(max(0.001, deadline - time.monotonic()))
            if not chunk:
                self.ended = True
                if self.reader.pending():
                    raise ProtocolError(f"stream ended inside a frame ({self.reader.pending()} bytes)")
                return None
            self._frames.extend(self.reader.feed(chunk))
        f = self._frames.pop(0)
        self.frames_seen += 1
        self.session.accept(f)
        if f.type == "R":
            self.recycled = True
        return f

    def read_data(self, timeout=DEFAULT_TIMEOUT):
        """New downstream bytes (possibly b""), or None once the stream has ended."""
        f = self.next_frame(timeout)
        if f is None:
            return None
        return f.new_bytes if f.type == "D" else b""

    def kill(self):
        self.response.kill()
        self.ended = True

    def close(self):
        self.response.close()
        self.ended = True


class Session:
    """Client state of one session: its key, the downstream bytes held (`down`,
    the ack to give) and the next upstream offset (`up`)."""

    def __init__(self, client, key, framing="text"):
        self.client = client
        self.key = key
        self.framing = framing
        self.down = 0        # every downstream byte before this one is held
        self.up = 0          # next upstream offset to send
        self.closed = None   # (code, reason) once a C frame arrived
        self.duplicate_bytes = 0  # resent bytes skipped (PROTOCOL.md §1 allows them)

    # -- frames
    def accept(self, f):
        """Takes a frame into the session: a data frame's bytes past `down` become
        f.new_bytes (PROTOCOL.md §1: skip what you hold; a gap is a server bug)."""
        if f.type == "D":
            if f.offset > self.down:
                raise ProtocolError(f"gap in downstream: frame at {f.offset}, holding {self.down}")
            skip = self.down - f.offset
            f.new_bytes = f.payload[skip:]
            self.duplicate_bytes += min(skip, len(f.payload))
            self.down += len(f.new_bytes)
        elif f.type == "C":
            self.closed = (f.code, f.reason)

    def path(self, verb, **params):
        q = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
        return f"{self.client.prefix}{self.key}/{verb}" + (f"?{q}" if q else "")

    # -- downstream
    def stream(self, ack=None, pad=False, method="GET", version="HTTP/1.1", timeout=DEFAULT_TIMEOUT):
        """Attaches a stream acknowledging `ack` (default: all held). Raises HttpError."""
        ack = self.down if ack is None else ack
        r = self.client.request(method, self.path("stream", ack=ack, framing=self.framing,
                                                   pad=1 if pad else None),
                                version=version, timeout=timeout)
        if r.status != 200:
            body = r.read_all()
            r.close()
            raise HttpError(r.status, body, r.headers)
        return Stream(self, r)

    def poll_frames(self, ack=None, timeout=DEFAULT_TIMEOUT, method="GET"):
        """One poll; returns its frames (data already passed through the offsets)."""
        ack = self.down if ack is None else ack
        r = self.client.request(method, self.path("poll", ack=ack, framing=self.framing), timeout=timeout)
        try:
            body = r.read_all(timeout)
        finally:
            r.close()
        if r.status != 200:
            raise HttpError(r.status, body, r.headers)
        frames = FrameReader(self.framing).feed(body)
        for f in frames:
            self.accept(f)
        return frames

    def poll(self, ack=None, timeout=DEFAULT_TIMEOUT):
        """One poll; returns the new downstream bytes (b"" after poll-wait)."""
        return b"".join(f.new_bytes for f in self.poll_frames(ack, timeout) if f.type == "D")

    # -- upstream
    def send(self, data, off=None, ack=None, enc=None, timeout=DEFAULT_TIMEOUT):
        """One send of `data` at upstream offset `off` (default: self.up). Returns the
        server's next expected offset and advances self.up to it. Raises HttpError."""
        off = self.up if off is None else off
        body = base64.b64encode(data) if enc == "base64" else data
        r = self.client.request("POST", self.path("send", off=off, ack=ack, enc=enc), body=body,
                                headers={"Content-Type": "text/plain" if enc else "application/octet-stream"},
                                timeout=timeout)
        try:
            text = r.read_all(timeout)
        finally:
            r.close()
        if r.status != 200:
            raise HttpError(r.status, text, r.headers)
        if not text.startswith(b"OK "):
            raise ProtocolError(f"send answered {text[:80]!r}")
        nxt = int(text[3:].strip())
        self.up = max(self.up, nxt)
        return nxt

    def ack(self, timeout=DEFAULT_TIMEOUT):
        """A pure acknowledgement (an empty send) of everything held."""
        return self.send(b"", off=self.up, ack=self.down, timeout=timeout)

    def send_all(self, data, chunk=512 * 1024, ack_fn=None, deadline=None):
        """Sends `data` from self.up in chunks, resending from the server's `expected`
        after a 409 and waiting out 503/429 answers (Retry-After), as §1 and §3 say."""
        start = self.up
        deadline = deadline or time.monotonic() + 120
        while self.up - start < len(data):
            if time.monotonic() > deadline:
                raise TimeoutError("send_all did not finish")
            piece = data[self.up - start:self.up - start + chunk]
            try:
                self.send(piece, ack=ack_fn() if ack_fn else None)
            except HttpError as e:
                if e.status == 409 and e.expected is not None:
                    self.up = e.expected
                elif e.status in (429, 503):
                    time.sleep(min(float(e.headers.get("retry-after", ["1"])[0]), 1.0) / 10)
                else:
                    raise

    def close(self, timeout=DEFAULT_TIMEOUT):
        r = self.client.request("POST", self.path("close"), timeout=timeout)
        try:
            text = r.read_all(timeout)
        finally:
            r.close()
        if r.status != 200:
            raise HttpError(r.status, text, r.headers)
        return text


class Client:
    def __init__(self, host, port, prefix="/netwine/", timeout=DEFAULT_TIMEOUT):
        self.host, self.port, self.prefix, self.timeout = host, port, prefix, timeout

    def request(self, method, path, body=b"", headers=None, version="HTTP/1.1", timeout=None,
                wait=True):
        return http_request(self.host, self.port, method, path, body, headers, version,
                            timeout or self.timeout, wait)

    def open(self, target, mode="stream", framing="text", pad=False, version="HTTP/1.1",
             timeout=DEFAULT_TIMEOUT):
        """Opens a session. Returns the Session; with mode=stream its first stream is
        `session.first_stream`, already past the OK line. Raises HttpError."""
        q = f"target={target}&mode={mode}&framing={framing}" + ("&pad=1" if pad else "")
        r = self.request("POST", f"{self.prefix}open?{q}", version=version, timeout=timeout)
        if r.status != 200:
            body = r.read_all(timeout)
            r.close()
            raise HttpError(r.status, body, r.headers)
        session = Session(self, None, framing)
        if mode != "stream":
            body = r.read_all(timeout)
            r.close()
            frames = FrameReader(framing).feed(body)
            if not frames or frames[0].type != "OK":
                raise ProtocolError(f"open answered {body[:80]!r}")
            session.key = frames[0].key
            return session
        s = Stream(session, r)
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise ProtocolError("no OK frame in time")
            f = s.next_frame(timeout)
            if f is None:
                raise ProtocolError("stream ended before OK")
            if f.type == "P":
                continue
            if f.type != "OK":
                raise ProtocolError(f"first frame {f!r}")
            session.key = f.key
            break
        session.first_stream = s
        return session

    def status(self):
        r = self.request("GET", f"{self.prefix}status")
        try:
            body = r.read_all()
        finally:
            r.close()
        if r.status != 200:
            raise HttpError(r.status, body, r.headers)
        return json.loads(body)
