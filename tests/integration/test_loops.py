"""Every event loop serves HTTP (front.hpp): new connections take turns between
the loops; a session lives on the loop that opened it, whose number its key's
first character gives; a request for it that arrives on another loop moves its
connection there, between requests, with the request and whatever the client
sent after it.

nwclient opens a new connection per request, so with the turns going round a
session's requests keep arriving on loops that are not its own; the raw-socket
tests below hold one keep-alive connection and send it requests for sessions on
every loop, one at a time and pipelined.
"""
import hashlib
import json
import os
import socket
import time

import pytest

from conftest import pattern_bytes, recv_all
from nwclient import Client, FrameReader

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def start(netwine, echo, threads, *extra):
    n = netwine("--access-log", "", "--target", echo.address, "--threads", str(threads), *extra)
    return n, Client(n.host, n.port)


def sessions_by_thread(client):
    """{key prefix (6 characters, as status shows it): thread}."""
    return {s["id"][:6]: s["thread"] for s in client.status()["sessions"]}


def open_on_every_loop(client, echo, loops):
    """Opens polling sessions until every loop has one; returns {thread: Session}."""
    found = {}
    for _ in range(4 * loops):
        s = client.open(echo.address, mode="poll")
        found.setdefault(ALPHABET.index(s.key[0]), s)
        if len(found) == loops:
            break
    assert sorted(found) == list(range(loops)), f"sessions only on loops {sorted(found)}"
    return found


def echo_back(session, data, timeout=10):
    session.send(data)
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < len(data):
        assert time.monotonic() < deadline, f"echoed {len(got)} of {len(data)} bytes"
        got += session.poll()
    return got


class KeepAlive:
    """One HTTP/1.1 connection, kept open, with its answers read in order."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def request(self, method, path, body=b""):
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def send(self, raw):
        self.sock.sendall(raw)

    def answer(self):
        """(status, body) of the next answer (Content-Length framed)."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed; had {self.buf[:200]!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next(int(l.split(":", 1)[1]) for l in lines[1:] if l.lower().startswith("content-length:"))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed in a body"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def close(self):
        self.sock.close()


def test_sessions_spread_over_the_loops_and_their_keys_name_their_loop(netwine, tcp_target):
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 3)
    sessions = [c.open(echo.address, mode="poll") for _ in range(9)]
    where = sessions_by_thread(c)
    assert sorted(set(where.values())) == [0, 1, 2]
    for s in sessions:
        assert where[s.key[:6]] == ALPHABET.index(s.key[0])
    # Every request is on a new connection: most land on another loop than their
    # session's and move there. The bytes come back whole and in order.
    for i, s in enumerate(sessions):
        data = pattern_bytes(20000 + i * 997, seed=i)
        assert echo_back(s, data) == data
    for s in sessions:
        s.close()


def test_one_keep_alive_connection_serves_sessions_on_every_loop(netwine, tcp_target):
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 3)
    on = open_on_every_loop(c, echo, 3)
    conn = KeepAlive(n.host, n.port)
    # One at a time: the connection moves to each session's loop and on again.
    for rnd in range(3):
        for loop, s in on.items():
            msg = f"round {rnd} loop {loop}\n".encode()
            conn.send(conn.request("POST", s.path("send", off=s.up), msg))
            status, body = conn.answer()
            assert status == 200 and body == f"OK {s.up + len(msg)}\n".encode(), body
            s.up += len(msg)
            got = b""
            while len(got) < len(msg):
                conn.send(conn.request("GET", s.path("poll", ack=s.down)))
                status, body = conn.answer()
                assert status == 200
                for f in FrameReader("text").feed(body):
                    s.accept(f)
                    got += f.new_bytes if f.type == "D" else b""
            assert got == msg
    # Pipelined: sends for every loop's session in one write. Each moves the
    # connection with the requests behind it; the answers come back in order.
    raw = b""
    expect = []
    for loop, s in on.items():
        msg = f"pipelined to loop {loop}\n".encode()
        raw += conn.request("POST", s.path("send", off=s.up), msg)
        s.up += len(msg)
        expect.append(f"OK {s.up}\n".encode())
    conn.send(raw)
    assert [conn.answer() for _ in expect] == [(200, e) for e in expect]
    conn.close()
    for s in on.values():
        s.close()


def test_a_large_send_moves_with_its_whole_body(netwine, tcp_target):
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 2)
    s = c.open(echo.address, mode="poll")
    data = pattern_bytes(3 * 1024 * 1024, seed=7)
    # 768 KiB per send, each on a new connection: half of them arrive on the
    # other loop and move with their body.
    s.send_all(data, chunk=768 * 1024)
    got = b""
    deadline = time.monotonic() + 30
    while len(got) < len(data):
        assert time.monotonic() < deadline, f"echoed {len(got)} of {len(data)}"
        got += s.poll()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    s.close()


def test_a_key_naming_no_loop_is_unknown(netwine, tcp_target):
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 2)
    s = c.open(echo.address, mode="poll")
    for first in ("C", "z", "_"):  # loops 2, 51 and 63: none of them here
        fake = first + s.key[1:]
        r = c.request("GET", f"/netwine/{fake}/poll")
        body = r.read_all()
        r.close()
        assert r.status == 404 and json.loads(body)["error"] == "unknown_session"
    s.close()


def test_moving_connections_keeps_the_connection_count(netwine, tcp_target):
    # --max-connections counts sockets: a move must neither leak a place (accepting
    # would stop early) nor give one away (a third connection would be served).
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 2, "--max-connections", "2")
    s = c.open(echo.address, mode="poll")
    for _ in range(20):  # every other one lands off the session's loop and moves
        s.send(b"x")
    for _ in range(10):
        c.status()  # status is answered on the main loop: half of these move
    a = KeepAlive(n.host, n.port)
    b = KeepAlive(n.host, n.port)
    for conn in (a, b):  # both served, whichever loop they landed on
        conn.send(conn.request("GET", "/netwine/status"))
        assert conn.answer()[0] == 200
    third = socket.create_connection((n.host, n.port), timeout=10)
    third.sendall(b"GET /netwine/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    third.settimeout(1.0)
    with pytest.raises(socket.timeout):  # both places taken: not accepted, not answered
        third.recv(1)
    a.close()
    third.settimeout(10)
    assert recv_all(third).startswith(b"HTTP/1.1 200")
    third.close()
    b.close()
    s.close()


def test_a_moved_socket_leaves_its_first_loops_epoll_set(netwine, tcp_target):
    # A move takes the socket out of one loop's evhttp before another's gets it
    # (front.hpp, detach_socket()): each socket must end up in one epoll set only.
    from test_threads import epoll_registrations
    echo = tcp_target("echo")
    n, c = start(netwine, echo, 2)
    on = open_on_every_loop(c, echo, 2)
    conns = [KeepAlive(n.host, n.port) for _ in range(4)]
    for rnd in range(3):  # back and forth between the loops
        for conn in conns:
            for loop, s in on.items():
                conn.send(conn.request("POST", s.path("send", off=s.up), b"m"))
                assert conn.answer() == (200, f"OK {s.up + 1}\n".encode())
                s.up += 1
    watched = epoll_registrations(n.pid)
    fds = os.listdir(f"/proc/{n.pid}/fd")
    sockets = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{n.pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            sockets.add(int(link[8:-1]))
    twice = {ino: k for ino, k in watched.items() if ino in sockets and k > 1}
    assert not twice, f"sockets in more than one epoll set: {twice}"
    for conn in conns:
        conn.close()
    for s in on.values():
        s.close()
