"""Chaos against the real binary: many sessions over all three transports moving
data both ways through a proxy that delays, splits and cuts their connections.

A seeded asyncio proxy sits between the clients and netwine. Every connection
through it has its data split into random pieces and delayed a little, and many
are cut (aborted on both sides) after a random number of bytes or a random time.
The clients resume after every cut the way docs/PROTOCOL.md §1 says: a WebSocket
re-attaches with /netwine/KEY/ws?ack=N, streams and polls re-attach with their
ack, sends are repeated with the same offsets. At the end, each session's bytes
match both ways (SHA-256 of what the target received and of what came back),
nothing was lost or duplicated, and netwine's memory is back near where it started.

NETWINE_CHAOS_SEED picks another seed; the seed is in every failure message.
"""
import asyncio
import hashlib
import os
import random
import socket
import struct
import threading
import time
import traceback

from conftest import SANITIZED, TcpTarget
from nwclient import Client, FrameReader, HttpError, ProtocolError
from wsclient_util import (OP_CLOSE, HandshakeError, RawWs, V1Transfer, close_payload)

SEED = int(os.environ.get("NETWINE_CHAOS_SEED", "20261122"))
MiB = 1 << 20
SESSION_BYTES = 4 * MiB          # per session and direction
SESSIONS = {"ws": 4, "stream": 4, "poll": 4}
SEND_CHUNK = 96 * 1024           # upstream bytes per HTTP send
ACK_EVERY = 192 * 1024           # pure acks from a stream reader: under a quarter of --session-buffer
TEST_DEADLINE = 120              # seconds for the whole data phase
RSS_GROWTH_BOUND_KIB = 32 * 1024  # after every session has closed
# A sanitizer build keeps freed memory in quarantine: its RSS says nothing about
# netwine's, so the memory bound is checked on plain builds only.
# Errors a cut produces on the client side; anything else (an assertion about
# offsets, an unexpected HTTP status or close code) fails the test.
CUT_ERRORS = (OSError, EOFError, ProtocolError, ValueError, IndexError)


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ the proxy

class ChaosProxy:
    """A TCP proxy on loopback running an asyncio loop in its own thread.

    Each accepted connection gets its own random.Random seeded from (seed,
    connection number). Data is forwarded in random pieces, sometimes after a
    short delay. With `cut=True` every connection is cut after a random number of
    forwarded bytes up to 1 MiB (both directions counted) and some, sooner, after a
    random time up to 1 s: both sockets are aborted (RST half of the time, FIN
    otherwise), as a dying proxy or network would. Short requests mostly get through;
    a WebSocket moving 2 x 4 MiB is cut at least 8 times.
    """

    def __init__(self, upstream_port, seed, cut):
        self.upstream_port = upstream_port
        self.seed = seed
        self.cut = cut
        self.accepted = 0
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("chaos proxy did not start")

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def close(self):
        async def stop():
            self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _plan(self, rng):
        """(cut after this many bytes or None, cut after this many seconds or None)."""
        if not self.cut:
            return None, None
        return rng.randint(1, MiB), (rng.uniform(0.01, 1.0) if rng.random() < 0.15 else None)

    async def _handle(self, creader, cwriter):
        index = self.accepted
        self.accepted += 1
        rng = random.Random(f"{self.seed}:{index}")
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cwriter.transport.abort()
            return
        cut_bytes, cut_after = self._plan(rng)
        state = {"bytes": 0, "broken": False}
        cut = asyncio.Event()
        pumps = [asyncio.ensure_future(self._pump(creader, swriter, random.Random(rng.random()), state,
                                                  cut_bytes, cut)),
                 asyncio.ensure_future(self._pump(sreader, cwriter, random.Random(rng.random()), state,
                                                  cut_bytes, cut))]
        waiter = asyncio.ensure_future(cut.wait())
        try:
            stop_at = None if cut_after is None else self.loop.time() + cut_after
            pending = set(pumps) | {waiter}
            while not cut.is_set() and not all(p.done() for p in pumps):
                timeout = None if stop_at is None else max(0.0, stop_at - self.loop.time())
                done, pending = await asyncio.wait(pending, timeout=timeout,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    cut.set()  # the time plan
            if cut.is_set():
                self.cuts += 0 if state["broken"] else 1
                rst = rng.random() < 0.5
                for w in (cwriter, swriter):
                    if rst:
                        sock = w.get_extra_info("socket")
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        except OSError:
                            pass
                    w.transport.abort()
            else:
                for w in (cwriter, swriter):
                    w.close()
        finally:
            for t in pumps + [waiter]:
                t.cancel()
            await asyncio.gather(*pumps, waiter, return_exceptions=True)

    async def _pump(self, reader, writer, rng, state, cut_bytes, cut):
        try:
            while not cut.is_set():
                data = await reader.read(65536)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                while data and not cut.is_set():
                    n = rng.randint(1, len(data)) if rng.random() < 0.5 else len(data)
                    piece, data = data[:n], data[n:]
                    if cut_bytes is not None and state["bytes"] + len(piece) >= cut_bytes:
                        writer.write(piece[:cut_bytes - state["bytes"]])
                        cut.set()
                        return
                    state["bytes"] += len(piece)
                    writer.write(piece)
                    await writer.drain()
                    if rng.random() < 0.1:
                        await asyncio.sleep(rng.uniform(0, 0.004))  # network delay, not synchronisation
        except (ConnectionError, OSError):
            state["broken"] = True  # one side went away: tear down the other, not a cut of ours
            cut.set()


# ------------------------------------------------------------------ the target

class HashingEcho:
    """Echo target handler that records (bytes, SHA-256) of everything each
    connection received, once the connection sends EOF."""

    def __init__(self):
        self.finished = []
        self.lock = threading.Lock()

    def __call__(self, conn):
        h = hashlib.sha256()
        n = 0
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            h.update(data)
            n += len(data)
            conn.sendall(data)
        with self.lock:
            self.finished.append((n, h.hexdigest()))
        conn.shutdown(socket.SHUT_WR)


# ------------------------------------------------------------------ the sessions

class Outcome:
    def __init__(self, name, data):
        self.name = name
        self.data = data
        self.received = b""
        self.resumes = 0
        self.error = None
        self.state = lambda: ""  # what the client holds, for failure messages


def _deadline_left(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("chaos data phase ran out of time")
    return left


def ws_session(env, out, deadline):
    """netwine.v1 over WebSocket: opened through the calm proxy, re-attached
    through the chaos proxy after every cut."""
    t = V1Transfer(out.data)
    ws = RawWs("127.0.0.1", env.calm.port, f"/netwine/ws?target={env.target.address}", ["netwine.v1"])
    t.attach(ws)
    ws.abort()  # from here on, through the chaos proxy only
    first = True
    while True:
        while True:
            _deadline_left(deadline)
            out.resumes += 0 if first else 1
            first = False
            try:
                ws = RawWs("127.0.0.1", env.chaos.port, f"/netwine/{t.key}/ws?ack={len(t.received)}",
                           ["netwine.v1"])
                t.attach(ws)
                break
            except HandshakeError as e:
                raise AssertionError(f"{out.name}: re-attach answered {e.status} {e.body!r}")
            except CUT_ERRORS:
                continue
        try:
            if t.run(ws, deadline_s=min(60, _deadline_left(deadline))) == "done":
                break
        except CUT_ERRORS:
            assert t.closed is None, f"{out.name}: the server closed the WebSocket: {t.closed}"
            ws.abort()
    out.received = bytes(t.received)
    # The end: a close 1000 on a calm connection (re-attached) ends the session.
    ws.abort()
    ws = RawWs("127.0.0.1", env.calm.port, f"/netwine/{t.key}/ws?ack={len(t.received)}", ["netwine.v1"])
    t.attach(ws)
    ws.sock.setblocking(True)
    ws.send(OP_CLOSE, close_payload(1000))
    code, _ = ws.expect_close()
    assert code == 1000, f"{out.name}: closing answered {code}"
    ws.close()


def pure_ack(client, session, down):
    """An empty send acknowledging `down`: answered 200 while the session exists."""
    r = client.request("POST", session.path("send", off=0, ack=down), timeout=10)
    try:
        body = r.read_all(10)
    finally:
        r.close()
    if r.status != 200:
        raise HttpError(r.status, body, r.headers)


def poll_frames_as_they_come(s, name):
    """One poll whose frames are taken as they arrive: a poll answer cut half-way
    still delivers its complete frames (their offsets say where they belong)."""
    r = s.client.request("GET", s.path("poll", ack=s.down, framing=s.framing), timeout=15)
    got = bytearray()
    try:
        if r.status != 200:
            raise HttpError(r.status, r.read_all(15), r.headers)
        reader = FrameReader(s.framing)
        while True:
            chunk = r.read(15)
            if not chunk:
                assert reader.pending() == 0, f"{name}: poll answer ended inside a frame"
                return bytes(got)
            for f in reader.feed(chunk):
                assert f.type in ("D", "H"), f"{name}: poll got {f!r}"
                s.accept(f)
                got += f.new_bytes
    except CUT_ERRORS:
        if got:
            return bytes(got)
        raise
    finally:
        r.close()


def http_session(env, out, deadline, mode, framing):
    """Streaming or polling: one thread sends upstream, this one reads downstream."""
    calm = Client("127.0.0.1", env.calm.port)
    chaos = Client("127.0.0.1", env.chaos.port)
    s = calm.open(env.target.address, mode="none", framing=framing)
    s.client = chaos
    sender_error = []

    def sender():
        try:
            while s.up < len(out.data):
                _deadline_left(deadline)
                off = s.up
                try:
                    s.send(out.data[off:off + SEND_CHUNK], off=off, ack=s.down)
                except HttpError as e:
                    # 503 target_busy, 429 send_in_progress (a cut send still held):
                    # both say "again later".
                    assert e.status in (429, 503), f"{out.name}: send answered {e}"
                    env.stop.wait(0.02)
                except CUT_ERRORS:
                    out.resumes += 1
        except BaseException as e:  # reported by the reader thread
            sender_error.append(e)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    out.state = lambda: f"up={s.up} down={s.down} key={s.key[:6]} sender_alive={th.is_alive()}"
    n = len(out.data)
    received = bytearray()
    acked = 0
    while s.down < n:
        _deadline_left(deadline)
        if sender_error:
            raise sender_error[0]
        try:
            if s.down - acked >= ACK_EVERY:
                pure_ack(chaos, s, s.down)
                acked = s.down
            if mode == "poll":
                acked = s.down
                received += poll_frames_as_they_come(s, out.name)
                continue
            st = s.stream(ack=s.down, timeout=15)
            acked = s.down
            try:
                while s.down < n:
                    if s.down - acked >= ACK_EVERY:
                        pure_ack(chaos, s, s.down)
                        acked = s.down
                    f = st.next_frame(15)
                    if f is None:
                        break  # recycled, or taken over: attach again
                    assert f.type in ("D", "H", "R", "P"), f"{out.name}: stream got {f!r}"
                    received += f.new_bytes
            finally:
                st.close()
        except HttpError as e:
            raise AssertionError(f"{out.name}: {mode} answered {e}")
        except CUT_ERRORS:
            out.resumes += 1
    th.join(max(1, deadline - time.monotonic()))
    assert not th.is_alive(), f"{out.name}: the sender did not finish"
    if sender_error:
        raise sender_error[0]
    out.received = bytes(received)
    for attempt in range(5):
        try:
            s.client = calm
            s.close()
            break
        except HttpError as e:
            assert e.status == 404, e  # an earlier close went through
            break
        except CUT_ERRORS:
            if attempt == 4:
                raise


class Env:
    pass


def test_chaos_many_sessions_all_transports_cut_at_random(netwine):
    """12 sessions (4 netwine.v1 WebSockets, 4 streaming, 4 polling; text and binary
    framing) each move 4 MiB both ways through an echo target while the chaos proxy
    cuts their connections: every byte arrives once, in order, both ways; every
    session ends; RSS ends less than 32 MiB above where it started."""
    echo = HashingEcho()
    target = TcpTarget(echo)
    n = netwine("--access-log", "", "--target", target.address, "--poll-wait", "2",
                "--heartbeat-interval", "2", "--session-idle-timeout", "60",
                "--stream-recycle-bytes", "512K")
    env = Env()
    env.target = target
    env.stop = threading.Event()
    env.calm = ChaosProxy(n.port, SEED, cut=False)
    env.chaos = ChaosProxy(n.port, SEED, cut=True)
    try:
        rss_start = n.rss_kib()
        rng = random.Random(SEED)
        outcomes = []
        jobs = []
        i = 0
        for kind, count in SESSIONS.items():
            for _ in range(count):
                out = Outcome(f"{kind}#{i} (seed {SEED})", rng.randbytes(SESSION_BYTES))
                outcomes.append(out)
                framing = "binary" if i % 2 else "text"
                jobs.append((kind, framing, out))
                i += 1
        deadline = time.monotonic() + TEST_DEADLINE

        def run(kind, framing, out):
            try:
                if kind == "ws":
                    ws_session(env, out, deadline)
                else:
                    http_session(env, out, deadline, kind, framing)
            except BaseException as e:
                out.error = "".join(traceback.format_exception(e)[-4:])
                env.stop.set()

        threads = [threading.Thread(target=run, args=j, daemon=True) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, deadline + 30 - time.monotonic()))
        env.stop.set()
        errors = [f"{o.name}: {o.error} {o.state()}" for o in outcomes if o.error]
        if errors:
            errors.append(repr(Client(n.host, n.port).status()))
        assert not errors, "\n".join(errors)
        assert not any(t.is_alive() for t in threads), "a session thread did not finish"

        # Downstream: exactly the bytes sent, in order (the echo sends them back).
        for o in outcomes:
            assert len(o.received) == len(o.data), (o.name, len(o.received))
            assert sha(o.received) == sha(o.data), f"{o.name}: downstream bytes differ"
        # Upstream: each target connection received exactly one session's bytes.
        want = sorted((len(o.data), sha(o.data)) for o in outcomes)
        t_end = time.monotonic() + 20
        while len(echo.finished) < len(outcomes) and time.monotonic() < t_end:
            time.sleep(0.05)  # polling the target's records, bounded by t_end
        assert sorted(echo.finished) == want, "upstream bytes at the target differ"

        # The chaos was real: many connections were cut and every session resumed.
        assert env.chaos.cuts >= 3 * len(outcomes), env.chaos.cuts
        # A WebSocket is cut at least once per MiB it moves (8 MiB: 4 each way);
        # HTTP requests are short and cut by chance.
        resumes = [(o.name, o.resumes) for o in outcomes]
        assert all(r >= 8 for name, r in resumes if name.startswith("ws")), resumes
        for kind in ("stream", "poll"):
            assert sum(r for name, r in resumes if name.startswith(kind)) >= 2 * SESSIONS[kind], resumes

        # Every session ended; memory is back near where it started.
        c = Client(n.host, n.port)
        t_end = time.monotonic() + 20
        while c.status()["sessions_open"] and time.monotonic() < t_end:
            time.sleep(0.05)  # polling netwine's status, bounded by t_end
        assert c.status()["sessions_open"] == 0, c.status()
        grown = n.rss_kib() - rss_start
        print(f"chaos seed {SEED}: {env.chaos.accepted} connections, {env.chaos.cuts} cut, "
              f"resumes {sum(o.resumes for o in outcomes)}, rss {rss_start} KiB -> +{grown} KiB")
        if not SANITIZED:
            assert grown < RSS_GROWTH_BOUND_KIB, f"RSS grew by {grown} KiB"
    finally:
        env.stop.set()
        env.calm.close()
        env.chaos.close()
        target.close()
