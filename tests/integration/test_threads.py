"""Worker threads (--threads, server.hpp "Threads"): new connections take turns
between the main thread and the workers, so WebSockets do (on a TLS port too:
test_tls.py); every limit, status, metrics and the SIGTERM drain still see the
whole process. (The HTTP transports across loops: test_loops.py.)

Which thread holds a session is read from /netwine/status ("thread": 0 is the
main thread), so every test knows it exercised a worker, not just the main loop.
"""
import asyncio
import base64
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
import websockets.client

from conftest import pattern_bytes, recv_all
from wsclient_util import (OP_BINARY, OP_CLOSE, OP_TEXT, HandshakeError, RawWs, close_payload,
                           encode_frame)


def status(n):
    with urllib.request.urlopen(f"{n.base}/netwine/status", timeout=10) as r:
        return json.load(r)


def metrics(n):
    with urllib.request.urlopen(f"{n.base}/metrics", timeout=10) as r:
        return r.read().decode()


def path_to(target, extra=""):
    return f"/netwine/ws?target={target.address}{extra}"


def echo_round(ws, payload, opcode=OP_BINARY):
    ws.send(opcode, payload)
    got = b""
    while len(got) < len(payload):
        op, p = ws.recv_message()
        assert op == opcode
        got += p
    return got


def threads_of(n):
    return sorted(s["thread"] for s in status(n)["sessions"])


def test_websockets_take_turns_between_threads_and_each_relays_its_own_bytes(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "3")
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(6)]
    # Round robin over 3 loops: two sessions each, on threads 0, 1 and 2.
    assert threads_of(n) == [0, 0, 1, 1, 2, 2]
    payloads = [pattern_bytes(200_000 + i * 1000, seed=i) for i in range(len(conns))]
    for ws, data in zip(conns, payloads):
        ws.send(OP_BINARY, data)
    for ws, data in zip(conns, payloads):
        got = b""
        while len(got) < len(data):
            op, p = ws.recv_message()
            assert op == OP_BINARY
            got += p
        assert got == data
    st = status(n)
    assert st["sessions_open"] == 6
    assert st["bytes_up_total"] >= sum(map(len, payloads))
    m = metrics(n)
    assert "netwine_sessions_open 6\n" in m
    up = int(next(l for l in m.splitlines() if l.startswith('netwine_bytes_total{direction="up"}')).split()[-1])
    assert up >= sum(map(len, payloads))
    for ws in conns:
        ws.send(OP_CLOSE, close_payload(1000))
        assert ws.expect_close()[0] == 1000
        assert ws.read_to_eof()
        ws.close()
    # Every session ended, on whichever thread, and the totals keep their bytes.
    deadline = time.monotonic() + 10  # a worker ends its sessions on its own thread
    while (st := status(n))["sessions_open"] != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert st["sessions_open"] == 0 and st["sessions_opened_total"] == 6
    assert st["bytes_down_total"] >= sum(map(len, payloads))


def test_base64_and_library_clients_work_on_a_worker(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2")
    first = RawWs(n.host, n.port, path_to(echo), ["base64"])   # main thread's turn
    second = RawWs(n.host, n.port, path_to(echo), ["base64"])  # the worker's
    assert threads_of(n) == [0, 1]
    for ws in (first, second):
        text = base64.b64encode(b"\x00\xffbytes on a thread").decode()
        assert echo_round(ws, text.encode(), OP_TEXT) == text.encode()

    async def library_echo():
        url = f"ws://{n.host}:{n.port}{path_to(echo)}"
        async with websockets.client.connect(url, subprotocols=["binary"], max_size=None,
                                             ping_interval=None, compression=None) as ws:
            data = pattern_bytes(3 << 20, seed=9)
            await ws.send(data)
            got = b""
            while len(got) < len(data):
                got += await ws.recv()
            assert got == data
            return [s["thread"] for s in status(n)["sessions"]]
    # The third WebSocket is the main thread's turn again, the fourth a worker's.
    assert 0 in asyncio.run(library_echo())
    assert 1 in asyncio.run(library_echo())
    first.close()
    second.close()


def test_a_frame_sent_with_the_handshake_reaches_the_target_from_a_worker(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2")
    main = RawWs(n.host, n.port, path_to(echo), ["binary"])
    # Bytes after the request, in the same packet: evhttp has read them already,
    # so the WebSocket must take them over.
    early = RawWs(n.host, n.port, path_to(echo), ["binary"],
                  send_with_handshake=encode_frame(OP_BINARY, b"sent with the handshake"))
    assert threads_of(n) == [0, 1]
    op, p = early.recv_message()
    assert (op, p) == (OP_BINARY, b"sent with the handshake")
    main.close()
    early.close()


def test_session_limits_count_every_thread(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2",
                "--max-sessions-per-client", "3")
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(3)]
    assert threads_of(n) == [0, 0, 1]
    with pytest.raises(HandshakeError) as e:
        RawWs(n.host, n.port, path_to(echo), ["binary"])
    assert e.value.status == 429
    # Ending the worker's session frees its place for the next client session.
    worker_ws = conns[1]
    worker_ws.send(OP_CLOSE, close_payload(1000))
    assert worker_ws.expect_close()[0] == 1000
    worker_ws.close()
    deadline = time.monotonic() + 10
    while status(n)["sessions_open"] != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status(n)["sessions_open"] == 2
    again = RawWs(n.host, n.port, path_to(echo), ["binary"])
    assert echo_round(again, b"room again") == b"room again"
    for ws in conns[::2] + [again]:
        ws.close()


def test_max_connections_counts_sockets_relayed_by_workers(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2",
                "--max-connections", "2")
    on_main = RawWs(n.host, n.port, path_to(echo), ["binary"])     # round robin: main,
    on_worker = RawWs(n.host, n.port, path_to(echo), ["binary"])   # then the worker
    waiting = socket.create_connection((n.host, n.port), timeout=10)
    waiting.sendall(b"GET /netwine/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    waiting.settimeout(1.0)
    # Both places are taken (one socket lives on the worker): accepting is paused,
    # so the request is not read, let alone answered.
    with pytest.raises(socket.timeout):
        waiting.recv(1)
    # Closing the worker's socket gives its place back, and the waiting request
    # is served: it finds the main thread's session alone.
    on_worker.send(OP_CLOSE, close_payload(1000))
    assert on_worker.expect_close()[0] == 1000
    assert on_worker.read_to_eof()
    on_worker.close()
    waiting.settimeout(10)
    answer = recv_all(waiting)
    assert answer.startswith(b"HTTP/1.1 200")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert [s["thread"] for s in body["sessions"]] == [0]
    assert echo_round(on_main, b"still relaying") == b"still relaying"
    on_main.close()


def test_sigterm_drains_the_workers_websockets_too(netwine, tcp_target):
    echo = tcp_target("echo")
    # A drain deadline far beyond the wait below: exiting in time shows the drain
    # saw every thread finish, not the deadline.
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "3", "--drain-timeout", "60")
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(3)]
    assert threads_of(n) == [0, 1, 2]
    for ws in conns:
        assert echo_round(ws, b"before") == b"before"
    n.signal(signal.SIGTERM)
    for ws in conns:
        code, reason = ws.expect_close()
        assert code == 1001 and "shutting down" in reason
        ws.send(OP_CLOSE, close_payload(1001))
    assert n.proc.wait(timeout=30) == 0
    for ws in conns:
        ws.close()


def test_one_thread_keeps_everything_on_the_main_loop(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "1")
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(3)]
    assert threads_of(n) == [0, 0, 0]
    for ws in conns:
        assert echo_round(ws, b"x" * 1000) == b"x" * 1000
        ws.close()


def test_netwine_v1_sessions_live_on_their_loop_and_resume_there(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "4")
    conns = [RawWs(n.host, n.port, path_to(echo), ["netwine.v1"]) for _ in range(4)]
    keys = []
    for ws in conns:
        op, p = ws.recv_message()
        assert op == OP_TEXT and p.startswith(b"OK ")
        keys.append(p.decode().split(" ")[1])
    # Each on its connection's loop, which its key's first character names.
    assert threads_of(n) == [0, 1, 2, 3]
    for ws in conns:
        ws.send(OP_CLOSE, close_payload(1001))  # keeps the session for a resume
        assert ws.expect_close()[0] == 1001
        ws.close()
    # Resumed over new connections, which the turns put on other loops: each
    # handshake moves to its session's loop and relays there.
    for i, key in enumerate(reversed(keys)):
        ws = RawWs(n.host, n.port, f"/netwine/{key}/ws?ack=0", ["netwine.v1"])
        assert ws.recv_message() == (OP_TEXT, f"OK {key} 0".encode())
        msg = f"resumed {i}".encode()
        ws.send(OP_BINARY, (0).to_bytes(8, "big") + msg)
        op, p = ws.recv_message()
        while op == OP_TEXT:  # acknowledgements
            op, p = ws.recv_message()
        assert (op, p) == (OP_BINARY, (0).to_bytes(8, "big") + msg)
        ws.close()
    assert threads_of(n) == [0, 1, 2, 3]


def test_refusals_stay_http_answers_on_a_workers_turn(netwine, tcp_target):
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2")
    first = RawWs(n.host, n.port, path_to(echo), ["binary"])  # main's turn; next is the worker's
    with pytest.raises(HandshakeError) as e:  # on the worker
        RawWs(n.host, n.port, path_to(echo), ["binary"], extra={"Origin": "http://evil.example"})
    assert e.value.status == 403
    with pytest.raises(HandshakeError) as e:  # on the main loop
        RawWs(n.host, n.port, "/netwine/ws?target=no%20such%20target", ["binary"])
    assert e.value.status == 400
    # Every connection takes a turn: this one is the worker's.
    second = RawWs(n.host, n.port, path_to(echo), ["binary"])
    assert threads_of(n) == [0, 1]
    # A target outside the rules is refused by address after the upgrade, as
    # websockify does (1008), on whichever thread: here the main's, then a worker's.
    for _ in range(2):
        ws = RawWs(n.host, n.port, "/netwine/ws?target=127.0.0.1:1", ["binary"])
        code, reason = ws.expect_close()
        assert code == 1008 and "not allowed" in reason
        ws.close()
    first.close()
    second.close()


def test_unreachable_target_closes_with_1011_from_a_worker(netwine, tcp_target):
    echo = tcp_target("echo")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    n = netwine("--access-log", "", "--target", echo.address, "--target", f"127.0.0.1:{dead_port}",
                "--threads", "2")
    first = RawWs(n.host, n.port, path_to(echo), ["binary"])
    ws = RawWs(n.host, n.port, f"/netwine/ws?target=127.0.0.1:{dead_port}", ["binary"])
    code, reason = ws.expect_close()
    assert code == 1011 and reason
    ws.close()
    first.close()


def epoll_registrations(pid):
    """{socket inode: number of the process's epoll sets watching it}."""
    counts = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        for ino in re.findall(r"^tfd:.*\bino:([0-9a-f]+)", info, re.M):
            counts[int(ino, 16)] = counts.get(int(ino, 16), 0) + 1
    return counts


def test_each_websockets_socket_is_in_one_loops_epoll_set(netwine, tcp_target):
    # Every socket is watched by the loop it was given to only: the main loop
    # accepts it without watching it. (Sockets that move between loops:
    # test_loops.py, test_a_moved_socket_leaves_its_first_loops_epoll_set.)
    echo = tcp_target("echo")
    n = netwine("--access-log", "", "--target", echo.address, "--threads", "2")
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(4)]
    assert threads_of(n) == [0, 0, 1, 1]
    for ws in conns:
        assert echo_round(ws, b"registered") == b"registered"
    watched = epoll_registrations(n.pid)
    sockets = [int(os.readlink(f"/proc/{n.pid}/fd/{fd}")[8:-1]) for fd in os.listdir(f"/proc/{n.pid}/fd")
               if os.readlink(f"/proc/{n.pid}/fd/{fd}").startswith("socket:[")]
    assert sockets
    # Each socket is watched by one loop at most: its own.
    twice = {ino: k for ino, k in watched.items() if ino in sockets and k > 1}
    assert not twice, f"sockets in more than one epoll set: {twice}"
    for ws in conns:
        ws.close()


def test_the_default_counts_the_cpus_netwine_may_run_on(netwine, tcp_target):
    # Started under a one-CPU affinity mask, the default (--threads 0) is one loop.
    echo = tcp_target("echo")
    cpus = sorted(os.sched_getaffinity(0))
    os_affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})  # inherited by the child started below
        n = netwine("--access-log", "", "--target", echo.address)
    finally:
        os.sched_setaffinity(0, os_affinity)
    conns = [RawWs(n.host, n.port, path_to(echo), ["binary"]) for _ in range(3)]
    assert threads_of(n) == [0, 0, 0]
    for ws in conns:
        ws.close()
    if len(cpus) >= 2:
        m = netwine("--access-log", "", "--target", echo.address)  # every CPU: two loops or more
        conns = [RawWs(m.host, m.port, path_to(echo), ["binary"]) for _ in range(2)]
        assert threads_of(m) == [0, 1]
        for ws in conns:
            ws.close()
