"""The foundation against the real binary: command line, config errors, signals,
the demo service, HTTP hardening (head size, body size, slowloris, smuggling)."""
import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import BINARY, http_raw


@pytest.fixture
def site(tmp_path):
    """A small web root and client dir, so these tests do not depend on www/'s contents."""
    www = tmp_path / "www"
    js = tmp_path / "js"
    www.mkdir()
    js.mkdir()
    (www / "index.html").write_text("<!doctype html><title>t</title>hello")
    (js / "netwine.js").write_text("var Netwine = {};\n")
    return ["--www", str(www), "--js-client", str(js)]


def run_cli(*args, timeout=10):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_help_lists_every_option_with_default():
    r = run_cli("--help")
    assert r.returncode == 0
    for opt in ("--listen", "--www", "--max-header-size", "--max-body-size", "--header-timeout",
                "--poll-wait", "--allowed-hosts", "--target-hosts", "--access-log"):
        assert opt in r.stdout
    assert "(default: 127.0.0.1:8080)" in r.stdout


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("netwine ")


def built_with_tcmalloc():
    """What meson found for this binary's build (meson.build, option `allocator`)."""
    deps = BINARY.parent / "meson-info" / "intro-dependencies.json"
    if not deps.exists():
        pytest.fail(f"{deps} missing: cannot tell how {BINARY} was built")
    return any(d["name"] == "libtcmalloc_minimal" for d in json.loads(deps.read_text()))


def test_allocator_named_and_in_use(netwine):
    """--version and /netwine/status name the malloc the process really runs on:
    tcmalloc when the build found it (bound as malloc, not merely loaded), the
    system malloc otherwise (sanitizer builds, -Dallocator=system)."""
    import urllib.request
    r = run_cli("--version")
    named = r.stdout.strip().split(" (", 1)[1].rstrip(")")
    if built_with_tcmalloc():
        assert named.startswith("tcmalloc ") and "not in use" not in named, r.stdout
    else:
        assert named == "system malloc", r.stdout
    n = netwine()
    with urllib.request.urlopen(f"{n.base}/netwine/status", timeout=10) as resp:
        assert json.loads(resp.read())["allocator"] == named
    maps = open(f"/proc/{n.pid}/maps").read()
    assert ("libtcmalloc_minimal" in maps) == named.startswith("tcmalloc "), named


def test_allocator_bound_elsewhere_is_reported():
    """If another malloc is bound first (LD_PRELOAD of glibc's own debugging malloc),
    --version does not claim tcmalloc."""
    if not built_with_tcmalloc():
        pytest.skip("built without tcmalloc (a sanitizer build): its runtime refuses a preloaded malloc")
    other = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"  # part of Debian 12's libc6
    r = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=10,
                       env={**os.environ, "LD_PRELOAD": other})
    assert r.returncode == 0, r.stderr
    assert "linked but not in use" in r.stdout, r.stdout


def test_bad_flag_exits_2_naming_it():
    r = run_cli("--no-such-flag")
    assert r.returncode == 2
    assert "--no-such-flag" in r.stderr


def test_bad_value_names_flag():
    r = run_cli("--max-body-size", "huge")
    assert r.returncode == 2
    assert "--max-body-size" in r.stderr


def test_bad_config_key_names_file_and_key(tmp_path):
    cfg = tmp_path / "netwine.json"
    cfg.write_text(json.dumps({"listen": ["127.0.0.1:0"], "max-bodysize": 5}))
    r = run_cli("--config", str(cfg))
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "max-bodysize" in r.stderr


def test_unreadable_config_file(tmp_path):
    r = run_cli("--config", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    assert "missing.json" in r.stderr


def test_config_file_values_apply_and_flags_override(tmp_path, netwine):
    cfg = tmp_path / "netwine.json"
    cfg.write_text(json.dumps({"max-body-size": "1K", "access-log": ""}))
    n = netwine("--config", str(cfg), "--max-body-size", "2K")
    body = b"x" * 1500  # over the file's 1K, under the flag's 2K
    req = (b"POST /netwine/open?target=nowhere:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    assert status_of(http_raw(n.host, n.port, req)) != 413


def test_sigterm_exits_zero(netwine):
    n = netwine("--access-log", "")
    n.signal(signal.SIGTERM)
    assert n.proc.wait(15) == 0


def test_sigint_exits_zero(netwine):
    n = netwine("--access-log", "")
    n.signal(signal.SIGINT)
    assert n.proc.wait(15) == 0


def test_sighup_keeps_serving(netwine, site):
    n = netwine("--access-log", "", *site)
    n.signal(signal.SIGHUP)
    r = http_raw(n.host, n.port, b"GET /netwine.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200
    assert "SIGHUP" in n.logs()


def test_demo_service_answers_a_plain_tcp_client(netwine):
    n = netwine("--demo", "--access-log", "")
    host, port = n.demo.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rwb")
        assert b"netwine demo" in f.readline()
        f.write(b"hello there\r\n")
        f.flush()
        assert f.readline() == b"echo: hello there\r\n"
        f.write(b"upper abc\r\n")
        f.flush()
        assert f.readline() == b"ABC\r\n"
        f.write(b"quit\r\n")
        f.flush()
        assert f.readline() == b"bye\r\n"
        assert f.read() == b""  # the service closes after bye


def test_index_and_client_library_served(netwine, site):
    n = netwine("--demo", "--access-log", "", *site)
    r = http_raw(n.host, n.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200 and b"text/html" in r.split(b"\r\n\r\n")[0]
    r = http_raw(n.host, n.port, b"GET /netwine.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = r.split(b"\r\n\r\n")[0].lower()
    assert status_of(r) == 200 and b"javascript" in head


def test_oversize_head_refused_and_server_keeps_serving(netwine, site):
    n = netwine("--access-log", "", "--max-header-size", "4K", *site)
    r = http_raw(n.host, n.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert status_of(r) in (400, 431)
    r = http_raw(n.host, n.port, b"GET /netwine.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200


def test_oversize_body_gets_413(netwine):
    n = netwine("--access-log", "", "--max-body-size", "4K")
    body = b"y" * 10000
    r = http_raw(n.host, n.port, b"POST /netwine/open HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body)
    assert status_of(r) == 413


def test_dribbled_head_is_cut_off_by_the_deadline(netwine, site):
    n = netwine("--access-log", "", "--header-timeout", "1", "--http-idle-timeout", "30", *site)
    s = n.connect()
    start = time.monotonic()
    closed = False
    # Send one byte every 0.2 s (well under the idle timeout) for at most 6 s;
    # the server must close the connection near the 1 s head deadline.
    for i in range(30):
        try:
            s.sendall(b"GET / HTTP/1.1\r\nX-Slow: "[i:i + 1] or b"a")
        except OSError:
            closed = True
            break
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except OSError:
                closed = True
                break
    elapsed = time.monotonic() - start
    s.close()
    assert closed, "the server kept a dribbling client"
    assert elapsed < 5
    # and it still serves others
    r = http_raw(n.host, n.port, b"GET /netwine.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200


def test_duplicate_content_length_rejected(netwine):
    n = netwine("--access-log", "")
    r = http_raw(n.host, n.port, b"POST /netwine/open HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Content-Length: 5\r\n\r\nhello")
    assert status_of(r) == 400


def test_content_length_with_transfer_encoding_rejected(netwine):
    n = netwine("--access-log", "")
    r = http_raw(n.host, n.port, b"POST /netwine/open HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(r) == 400


def test_access_log_records_each_request(tmp_path, netwine):
    log = tmp_path / "access.log"
    n = netwine("--access-log", str(log), "--log-format", "json")
    http_raw(n.host, n.port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    n.stop()
    records = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    rec = next(r for r in records if r.get("path") == "/nope")
    assert rec["status"] == 404 and rec["method"] == "GET" and rec["client"] == "127.0.0.1"
    assert "duration" in rec and "bytes" in rec and "time" in rec


def test_listen_on_ipv6_loopback(netwine, site):
    n = netwine("--access-log", "", "--listen", "[::1]:0", *site)
    with socket.create_connection(("::1", n.port), timeout=10) as s:
        s.sendall(b"GET /netwine.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(12).startswith(b"HTTP/1.1 200")


def test_bad_listen_address_fails_clearly():
    r = run_cli("--listen", "nonsense", "--access-log", "")
    assert r.returncode != 0
    assert "nonsense" in r.stderr
