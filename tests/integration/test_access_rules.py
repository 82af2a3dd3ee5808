"""Access control against the real binary over the HTTP transports: target rules
checked after DNS, client address rules, Origin rules, limits, reloads, trusted
proxies. (WebSocket-specific checks live in test_websocket.py.)"""
import json
import signal
import socket

from conftest import free_port, wait_for


def request(n, method, path, body=b"", headers=None, source="127.0.0.1", timeout=10):
    """One HTTP/1.1 request from `source` (any 127.0.0.0/8 address works on Linux)."""
    s = socket.create_connection((n.host, n.port), timeout=timeout, source_address=(source, 0))
    h = {"Host": f"{n.host}:{n.port}", "Connection": "close", "Content-Length": str(len(body))}
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    s.sendall(head.encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.settimeout(timeout)
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest, s


def open_poll(n, target, **kw):
    status, headers, body, s = request(n, "POST", f"/netwine/open?target={target}&mode=poll", **kw)
    # poll-mode answers are short: read to the end
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    s.close()
    return status, headers, body


def test_no_target_rules_refuses_everything_and_says_why(netwine, tcp_target):
    t = tcp_target("echo")
    n = netwine("--access-log", "")
    status, _, body = open_poll(n, t.address)
    assert status == 403
    err = json.loads(body)
    assert err["error"] == "target_not_allowed" and "no target rules" in err["message"]
    assert t.accepted == 0
    assert "every tunnel target will be refused" in n.logs()


def test_open_proxy_flag_is_loud_and_works(netwine, tcp_target):
    t = tcp_target("echo")
    n = netwine("--access-log", "", "--open-proxy")
    status, _, body = open_poll(n, t.address)
    assert status == 200 and body.startswith(b"OK ")
    assert "OPEN PROXY" in n.logs()


def test_forbidden_target_gets_403_and_no_connection(tmp_path, netwine, tcp_target):
    allowed, forbidden = tcp_target("echo"), tcp_target("echo")
    rules = tmp_path / "target-hosts"
    rules.write_text(f"127.0.0.1:{allowed.port}\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    status, _, body = open_poll(n, forbidden.address)
    assert status == 403 and json.loads(body)["error"] == "target_not_allowed"
    status, _, body = open_poll(n, allowed.address)
    assert status == 200
    assert allowed.wait_accepted(1) and forbidden.accepted == 0 and allowed.accepted == 1


def test_name_resolving_into_denied_range_is_refused(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    rules = tmp_path / "target-hosts"
    # The name is allowed, but it resolves into a denied range: DNS rebinding
    # (a harmless-looking name pointing at loopback) gets nowhere.
    rules.write_text(f"allow localhost:{t.port}\ndeny 127.0.0.0/8:*\ndeny [::1]:*\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    status, _, body = open_poll(n, f"localhost:{t.port}")
    assert status == 403
    assert t.accepted == 0


def test_address_rules_apply_to_names_after_dns(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    rules = tmp_path / "target-hosts"
    rules.write_text(f"127.0.0.0/8:{t.port}\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    status, _, body = open_poll(n, f"localhost:{t.port}")
    assert status == 200, body  # localhost -> 127.0.0.1 is inside the allowed range
    status, _, _ = open_poll(n, f"localhost:{free_port()}")
    assert status == 403


def test_named_targets_and_malformed_targets(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    rules = tmp_path / "target-hosts"
    rules.write_text(f"echo = 127.0.0.1:{t.port}\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    assert open_poll(n, "echo")[0] == 200
    for bad in ("nocolon", "host:99999", "%5B::1", "unknown-name"):
        status, _, body = open_poll(n, bad)
        assert status == 400, bad
        assert json.loads(body)["error"] == "bad_target"


def test_target_hosts_syntax_error_stops_startup_with_file_and_line(tmp_path):
    import subprocess
    from conftest import BINARY
    rules = tmp_path / "target-hosts"
    rules.write_text("# fine\n127.0.0.1:22\n127.0.0.1:70000\n")
    r = subprocess.run([str(BINARY), "--target-hosts", str(rules), "--listen", "127.0.0.1:0",
                        "--access-log", ""], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert f"{rules}:3:" in r.stderr


def test_client_address_rules(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    allowed = tmp_path / "allowed-hosts"
    allowed.write_text("allow 127.0.0.0/8\ndeny 127.0.0.2\n")
    n = netwine("--access-log", "", "--allowed-hosts", str(allowed), "--target", t.address)
    assert open_poll(n, t.address, source="127.0.0.1")[0] == 200
    status, _, body = open_poll(n, t.address, source="127.0.0.2")
    assert status == 403 and json.loads(body)["error"] == "client_not_allowed"
    assert t.wait_accepted(1) and t.accepted == 1


def test_origin_rules_for_http_transports_and_cors(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    n = netwine("--access-log", "", "--target", t.address, "--allow-origin", "https://app.example.com")
    # A cross-site page not allowed: refused.
    status, headers, body = open_poll(n, t.address, headers={"Origin": "https://evil.example"})
    assert status == 403 and json.loads(body)["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in headers
    # The allowed origin: works and gets CORS headers naming it.
    status, headers, body = open_poll(n, t.address, headers={"Origin": "https://app.example.com"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    # Same origin is always fine.
    status, _, _ = open_poll(n, t.address, headers={"Origin": f"http://{n.host}:{n.port}"})
    assert status == 200
    # CORS preflight.
    status, headers, _, s = request(n, "OPTIONS", "/netwine/open", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
    s.close()
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    status, _, _, s = request(n, "OPTIONS", "/netwine/open", headers={"Origin": "https://evil.example"})
    s.close()
    assert status == 403
    assert t.wait_accepted(2) and t.accepted == 2


def test_limits_per_client_and_in_all(netwine, tcp_target):
    t = tcp_target("echo")
    n = netwine("--access-log", "", "--target", t.address, "--max-sessions-per-client", "2",
                "--max-sessions", "3")
    assert open_poll(n, t.address)[0] == 200
    assert open_poll(n, t.address)[0] == 200
    status, _, body = open_poll(n, t.address)
    assert status == 429 and json.loads(body)["error"] == "too_many_sessions_for_client"
    assert open_poll(n, t.address, source="127.0.0.2")[0] == 200
    status, _, body = open_poll(n, t.address, source="127.0.0.3")
    assert status == 503 and json.loads(body)["error"] == "too_many_sessions"
    assert "max-sessions" in n.logs()


def test_reload_applies_to_new_sessions_and_keeps_live_ones(tmp_path, netwine, tcp_target):
    a, b = tcp_target("echo"), tcp_target("echo")
    rules = tmp_path / "target-hosts"
    rules.write_text(f"127.0.0.1:{a.port}\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    status, _, body = open_poll(n, a.address)
    assert status == 200
    key = body.split()[1].decode()
    rules.write_text(f"127.0.0.1:{b.port}\n")
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload: rules applied" in n.logs())
    assert open_poll(n, a.address)[0] == 403   # new sessions: new rules
    assert open_poll(n, b.address)[0] == 200
    # the live session to `a` still carries data
    status, _, body, s = request(n, "POST", f"/netwine/{key}/send?off=0", body=b"still here\n")
    s.close()
    assert status == 200
    status, _, body, s = request(n, "GET", f"/netwine/{key}/poll?ack=0")
    while b"\n" not in body:
        body += s.recv(65536)
    s.close()
    assert status == 200 and body.startswith(b"D 0 ")


def test_broken_reload_keeps_old_rules(tmp_path, netwine, tcp_target):
    a = tcp_target("echo")
    rules = tmp_path / "target-hosts"
    rules.write_text(f"127.0.0.1:{a.port}\n")
    n = netwine("--access-log", "", "--target-hosts", str(rules))
    rules.write_text("this is : not a rule\n")
    n.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in n.logs())
    assert f"{rules}:1:" in n.logs()
    assert open_poll(n, a.address)[0] == 200


def test_forwarded_for_only_from_trusted_proxies(tmp_path, netwine, tcp_target):
    t = tcp_target("echo")
    allowed = tmp_path / "allowed-hosts"
    allowed.write_text("allow 127.0.0.0/8\ndeny 192.0.2.66\n")
    n = netwine("--access-log", "", "--allowed-hosts", str(allowed), "--target", t.address,
                "--trusted-proxy", "127.0.0.5")
    xff = {"X-Forwarded-For": "192.0.2.66"}
    # From an untrusted peer the header is ignored: the peer's own address counts.
    assert open_poll(n, t.address, headers=xff, source="127.0.0.1")[0] == 200
    # From the trusted proxy, the forwarded client is the one checked.
    status, _, body = open_poll(n, t.address, headers=xff, source="127.0.0.5")
    assert status == 403 and b"192.0.2.66" in body
    status, _, body = open_poll(n, t.address, headers={"Forwarded": 'for="192.0.2.66"'}, source="127.0.0.5")
    assert status == 403


def test_status_only_for_admin_addresses(netwine):
    n = netwine("--access-log", "", "--admin-allow", "127.0.0.1")
    status, _, body, s = request(n, "GET", "/netwine/status")
    s.close()
    assert status == 200
    status, _, body, s = request(n, "GET", "/netwine/status", source="127.0.0.2")
    s.close()
    assert status == 403
    status, _, _, s = request(n, "GET", "/metrics", source="127.0.0.2")
    s.close()
    assert status == 403
