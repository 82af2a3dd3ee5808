"""bench/nwbench, the load generator behind the README's performance table, checked
against a real netwine and a real echo target: a benchmark number is only as good
as the client that produced it. And the reference bridges the table compares netwine
with (bench/refws.c, bench/refpoll.c), built as bench/run.sh builds them: a reference
that dropped or reordered bytes would flatter itself.
"""
import asyncio
import os
import pathlib
import random
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets.client

from conftest import ROOT, free_port

NWBENCH = pathlib.Path(os.environ.get("NWBENCH_BIN", ROOT / "build" / "bench" / "nwbench"))


def nwbench(*args, timeout=60):
    """Runs nwbench; returns its key=value result line as a dict (and the exit code)."""
    p = subprocess.run([str(NWBENCH), *args], capture_output=True, text=True, timeout=timeout)
    line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    return kv, p.returncode, p.stderr


@pytest.fixture(autouse=True)
def _need_nwbench():
    if not NWBENCH.exists():
        pytest.fail(f"{NWBENCH} is missing: build the project first (ninja -C build)")


@pytest.mark.parametrize("size", ["1K", "4K"])
def test_small_messages_keep_flowing_through_many_windows(netwine, tcp_target, size):
    # The window must count payload both ways. It once counted sent wire bytes
    # (headers included) against echoed payload, so the headers piled up as if in
    # flight and the run stopped for good after ~96 windows (6 MiB here) with 1 KiB
    # messages, while the table's 1 KiB row reported the stall as a rate.
    target = tcp_target("echo")
    n = netwine("--target", target.address, "--threads", "1")
    url = f"ws://{n.host}:{n.port}/netwine/ws?target={target.address}"
    total = 64 << 20  # 1024 windows of 64 KiB (4 KiB messages stalled after ~385)
    kv, rc, err = nwbench("ws-tput", "--url", url, "--proto", "binary", "-s", size, "-w", "64K",
                          "-m", str(total), "-t", "60", timeout=90)
    assert rc == 0, err
    assert kv.get("ok") == "1" and kv.get("verify") == "ok", kv
    assert kv.get("done") == "1", f"the client stalled before sending everything: {kv}"
    assert int(kv["bytes"]) == total


def test_the_same_window_over_plain_tcp(tcp_target):
    # tcp:// has no headers: the reference side of every ratio moves the same bytes.
    target = tcp_target("echo")
    total = 8 << 20
    kv, rc, err = nwbench("ws-tput", "--url", f"tcp://{target.address}", "-s", "1K", "-w", "64K",
                          "-m", str(total), "-t", "20")
    assert rc == 0, err
    assert kv.get("done") == "1" and int(kv["bytes"]) == total, kv


@pytest.mark.parametrize("size", ["1000", "1K", "37"])
def test_small_messages_on_a_bulk_thread_stay_byte_exact(netwine, tcp_target, size):
    # Small messages share one upstream buffer per read on the relay thread
    # (evbuffer_expand before decoding); sizes that are no multiple of the 32-byte
    # unmasking step check the tails. nwbench compares every echoed byte.
    target = tcp_target("echo")
    # --bulk-after as test_bulk.py lowers it: lent even on a slow sanitizer build.
    n = netwine("--target", target.address, "--access-log", "", "--bulk-after", "256K")
    url = f"ws://{n.host}:{n.port}/netwine/ws?target={target.address}"
    total = (96 << 20) if size != "37" else (24 << 20)
    kv, rc, err = nwbench("ws-tput", "--url", url, "--proto", "binary", "-s", size, "-m", str(total), "-t", "60",
                          timeout=90)
    assert rc == 0, err
    assert kv.get("verify") == "ok" and kv.get("done") == "1", kv
    assert int(kv["bytes"]) >= total
    with urllib.request.urlopen(f"{n.base}/metrics", timeout=10) as r:
        loans = next(int(l.split()[1]) for l in r.read().decode().splitlines()
                     if l.startswith("netwine_bulk_loans_total "))
    assert loans >= 1, "the connection was never lent: the test did not reach the relay thread"


@pytest.fixture(scope="module")
def throwaway_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("mode,size", [("ws-tput", "64K"), ("ws-tput", "1K"), ("ws-up", "64K")])
def test_wss_runs_move_every_byte_through_tls(netwine, tcp_target, throwaway_cert, mode, size):
    # The TLS rows of the table (wss:// and tls:// URLs): SSL_write takes one record
    # per call, so the client must come back for the rest of each write. It once
    # stopped after its first 1 MiB write in ws-up (the write event was not armed).
    cert, key = throwaway_cert
    target = tcp_target("echo" if mode == "ws-tput" else "sink")
    n = netwine("--target", target.address, "--tls-cert", str(cert), "--tls-key", str(key))
    total = 32 << 20
    args = ["-m", str(total), "-t", "30"] if mode == "ws-tput" else ["-t", "3"]
    kv, rc, err = nwbench(mode, "--url", f"wss://{n.host}:{n.port}/netwine/ws?target={target.address}",
                          "--proto", "binary", "-s", size, *args, timeout=60)
    assert rc == 0, err
    assert kv.get("ok") == "1" and kv.get("verify") == "ok", kv
    if mode == "ws-tput":
        assert kv.get("done") == "1" and int(kv["bytes"]) == total, kv
    else:  # 3 s, even of a sanitizer build: far more than the 1 MiB of the stuck client
        assert int(kv["bytes"]) > 16 << 20, kv


def start_fixture(tmp_path, source, libs, *args):
    """Builds a bench/ C fixture as bench/run.sh does and starts it; returns (process, port)."""
    exe = tmp_path / pathlib.Path(source).stem
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-pthread", str(ROOT / "bench" / source), "-o", str(exe), *libs],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen([str(exe), str(port), *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:  # until it listens (bounded)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{source} did not listen: {proc.stderr.read().decode()}")
            time.sleep(0.02)


@pytest.mark.parametrize("bridge", ["netwine", "ref-evhttp"])
def test_poll_round_trips_are_verified_on_netwine_and_on_the_reference(netwine, tcp_target, tmp_path, bridge):
    # The long-polling row of the table (poll-rtt) and its reference, bench/refpoll.c
    # (run.sh's ref-evhttp): the client checks every echoed byte and its offset.
    target = tcp_target("echo")
    proc = None
    if bridge == "netwine":
        n = netwine("--target", target.address, "--access-log", "")
        url = f"{n.base}/netwine/"
    else:
        proc, port = start_fixture(tmp_path, "refpoll.c", ["-levent"])
        url = f"http://127.0.0.1:{port}/netwine/"
    try:
        kv, rc, err = nwbench("poll-rtt", "--url", url, "--target", target.address, "-c", "2", "-t", "1",
                              timeout=60)
    finally:
        if proc:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    assert kv.get("ok") == "1" and kv.get("verify") == "ok" and kv.get("failed") == "0", kv
    assert int(kv["rounds"]) > 0, kv


def test_the_reference_refuses_what_it_does_not_know(tmp_path):
    proc, port = start_fixture(tmp_path, "refpoll.c", ["-levent"])
    try:
        for path, status in [("/netwine/12345/poll", 404), ("/elsewhere", 404),
                             ("/netwine/open?target=nohost", 400)]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == status, path
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("size", ["64K", "37"])
def test_the_reference_websocket_bridge_relays_every_byte(tcp_target, tmp_path, size):
    # bench/refws.c (run.sh's ref-ws) against the load client netwine gets: its
    # handshake, its decoding of frames split anywhere by the reads (37-byte
    # messages), its unmasking; nwbench compares every echoed byte.
    target = tcp_target("echo")
    proc, port = start_fixture(tmp_path, "refws.c", ["-lcrypto"], str(target.port))
    try:
        kv, rc, err = nwbench("ws-tput", "--url", f"ws://127.0.0.1:{port}/", "--proto", "binary", "-c", "2",
                              "-s", size, "-m", str(4 << 20), "-t", "30", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 0, err
    assert kv.get("verify") == "ok" and kv.get("done") == "2", kv  # both connections sent all
    assert int(kv["bytes"]) >= 2 * (4 << 20)


def test_the_reference_websocket_bridge_answers_pings_and_speaks_to_a_library_client(tcp_target, tmp_path):
    target = tcp_target("echo")
    proc, port = start_fixture(tmp_path, "refws.c", ["-lcrypto"], str(target.port))

    async def talk():
        async with websockets.client.connect(f"ws://127.0.0.1:{port}/", subprotocols=["binary"],
                                             ping_interval=None) as ws:
            assert ws.subprotocol == "binary"
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 10)
            await ws.send(b"x" * 70000)
            got = b""
            while len(got) < 70000:
                got += await asyncio.wait_for(ws.recv(), 10)
            assert got == b"x" * 70000
    try:
        asyncio.run(talk())
    finally:
        proc.kill()
        proc.wait()


def test_latency_runs_report_the_bridges_cpu_with_every_round_trip(netwine, tcp_target):
    # ws-lat's CPU fields and rts= (round trips of warm-up and measurement alike),
    # from which bench/ab.sh derives the bridge's CPU per round trip.
    target = tcp_target("echo")
    n = netwine("--target", target.address, "--access-log", "")
    kv, rc, err = nwbench("ws-lat", "--url", f"ws://{n.host}:{n.port}/netwine/ws?target={target.address}",
                          "--proto", "binary", "-t", "1", "--warm", "0.2", "--pid", str(n.pid), timeout=60)
    assert rc == 0, err
    assert kv.get("ok") == "1" and kv.get("verify") == "ok", kv
    assert int(kv["rts"]) >= int(kv["count"]) >= 10, kv  # the warm-up's round trips come on top
    assert float(kv["server_cpu_s"]) > 0 and float(kv["client_cpu_s"]) > 0, kv


def ab(mode, a, b, tmp_path):
    """bench/ab.sh, one alternation of 1 s runs; returns {label: {figure: median}} and the A/B line."""
    for attempt in range(3):  # ab.sh listens on BASE_PORT+1, +11, +12: another base if one is taken
        env = dict(os.environ, MODE=mode, N="1", T="1", NWBENCH=str(NWBENCH),
                   BASE_PORT=str(random.randrange(20000, 30000)), TMPDIR=str(tmp_path))
        p = subprocess.run(["bash", str(ROOT / "bench" / "ab.sh"), a, b], capture_output=True, text=True,
                           env=env, timeout=120)
        if "busy" not in p.stderr:
            break
    assert p.returncode == 0, p.stdout + p.stderr
    rows, ratio = {}, None
    for line in p.stdout.splitlines():
        label, _, rest = line.partition(": ")
        if label in ("A", "B"):  # "NAME MEDIAN [MIN-MAX]" pairs, two spaces apart
            rows[label] = {f.rsplit(" ", 2)[0]: float(f.rsplit(" ", 2)[1]) for f in rest.split("  ")[:-1]}
        elif label == "A/B":
            ratio = rest
    assert set(rows) == {"A", "B"} and ratio, p.stdout
    return rows, ratio


def test_ab_compares_netwine_with_the_reference_bridge_per_round_trip(tmp_path):
    from conftest import BINARY
    rows, _ = ab("ws-lat", str(BINARY), "ref-ws", tmp_path)
    for label in "AB":
        r = rows[label]
        assert 0 < r["p50 us"] <= r["p99 us"], rows
        assert r["bridge CPU-us/rt"] > 0, rows


def test_ab_counts_the_whole_machines_cpu_per_gb_beside_socat(tmp_path):
    # "all CPU-s/GB" adds the client's and the target's CPU to the bridge's.
    from conftest import BINARY
    rows, ratio = ab("ws-tput", str(BINARY), "socat", tmp_path)
    for label in "AB":
        r = rows[label]
        assert r["MB/s"] > 0, rows
        assert r["all CPU-s/GB"] > r["bridge CPU-s/GB"] > 0, rows
    assert "MB/s per pair" in ratio


def test_mailbox_hop_measures_round_trips_between_two_loops():
    # bench/experiments/mailbox_hop.cpp, the cost of a hand-over between event loops
    # quoted in docs/PERFORMANCE.md: every chain's hops arrive, and each thread's CPU
    # is counted per round trip.
    exe = NWBENCH.parent / "mailbox-hop"
    for in_flight in ("1", "16"):
        p = subprocess.run([str(exe), "0.3", in_flight], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        kv = dict(f.split("=", 1) for f in p.stdout.split())
        assert kv["in_flight"] == in_flight and int(kv["round_trips"]) >= int(in_flight), kv
        assert float(kv["a_cpu_us_per_rt"]) > 0 and float(kv["b_cpu_us_per_rt"]) > 0, kv
    p = subprocess.run([str(exe), "0", "1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "usage" in p.stderr


def test_poll_clients_compares_one_loop_with_two(tmp_path):
    # bench/experiments/poll-clients.sh, the long-polling figures of docs/PERFORMANCE.md
    # ("HTTP on every loop"): both servers answer every client's round trips, each
    # run counts its server's CPU, and the medians are compared.
    from conftest import BINARY
    for attempt in range(3):  # it listens on BASE_PORT+1, +10, +11: another base if one is taken
        env = dict(os.environ, N="2", K="1", SECS="0.5", REPS="2", NETWINE=str(BINARY), NWB=str(NWBENCH),
                   BASE_PORT=str(random.randrange(20000, 30000)), TMPDIR=str(tmp_path))
        p = subprocess.run(["bash", str(ROOT / "bench" / "experiments" / "poll-clients.sh")], capture_output=True,
                           text=True, env=env, timeout=120)
        if "busy" not in p.stderr:
            break
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [line.split() for line in p.stdout.splitlines() if line.startswith(("one ", "two "))]
    assert sorted(r[0] for r in runs) == ["one", "one", "two", "two"], p.stdout
    for name, rtps, cpu in runs:
        assert float(rtps.split("=")[1]) > 0 and float(cpu.split("=")[1]) > 0, p.stdout
    assert "two/one" in p.stdout.splitlines()[-1], p.stdout
