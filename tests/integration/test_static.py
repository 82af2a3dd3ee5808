"""Static files from the real binary: statuses, caching, ranges, and every
traversal form failing to reach a secret planted next to the web root."""
import os
import socket

import pytest

from conftest import recv_all

SECRET = b"TOP-SECRET-DO-NOT-SERVE"


@pytest.fixture
def served(tmp_path, netwine):
    root = tmp_path / "site"
    www = root / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_bytes(b"<!doctype html><title>home</title>")
    (www / "app.js").write_bytes(b"console.log('x');\n")
    (www / "data.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    (www / "sub" / "index.html").write_bytes(b"sub index")
    (root / "secret.txt").write_bytes(SECRET)                # next to the root
    os.symlink(root / "secret.txt", www / "leak.txt")        # symlink out of the root
    os.symlink(www / "app.js", www / "inside-link.js")       # symlink within the root
    js = tmp_path / "js"
    js.mkdir()
    (js / "netwine.js").write_bytes(b"var Netwine = {};\n")
    n = netwine("--www", str(www), "--js-client", str(js), "--access-log", "")
    return n


def get(n, path, method="GET", headers=None):
    h = {"Host": "x", "Connection": "close"}
    h.update(headers or {})
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    with socket.create_connection((n.host, n.port), timeout=10) as s:
        s.sendall(req.encode("latin-1"))
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def test_index_mime_and_cache_headers(served):
    status, h, body = get(served, "/")
    assert status == 200 and body == b"<!doctype html><title>home</title>"
    assert h["content-type"].startswith("text/html")
    assert h["cache-control"] == "no-cache" and "etag" in h and "last-modified" in h
    status, h, body = get(served, "/app.js")
    assert status == 200 and "javascript" in h["content-type"]
    assert "max-age" in h["cache-control"]


def test_client_library_alias(served):
    status, h, body = get(served, "/netwine.js")
    assert status == 200 and body == b"var Netwine = {};\n" and "javascript" in h["content-type"]


def test_conditional_requests_304(served):
    _, h, _ = get(served, "/app.js")
    status, h2, body = get(served, "/app.js", headers={"If-None-Match": h["etag"]})
    assert status == 304 and body == b""
    status, _, _ = get(served, "/app.js", headers={"If-Modified-Since": h["last-modified"]})
    assert status == 304
    status, _, _ = get(served, "/app.js", headers={"If-None-Match": '"other"'})
    assert status == 200


def test_ranges_206_and_416(served):
    full = bytes(range(256)) * 40
    status, h, body = get(served, "/data.bin", headers={"Range": "bytes=100-199"})
    assert status == 206 and body == full[100:200]
    assert h["content-range"] == "bytes 100-199/10240"
    status, h, body = get(served, "/data.bin", headers={"Range": "bytes=-10"})
    assert status == 206 and body == full[-10:]
    status, h, body = get(served, "/data.bin", headers={"Range": "bytes=20000-"})
    assert status == 416 and h["content-range"] == "bytes */10240"


def test_head_has_headers_and_no_body(served):
    status, h, body = get(served, "/data.bin", method="HEAD")
    assert status == 200 and body == b"" and h["content-length"] == "10240"


def test_missing_404_and_bad_method_405(served):
    status, _, body = get(served, "/nope.html")
    assert status == 404 and body
    status, h, body = get(served, "/index.html", method="DELETE")
    assert status == 405 and "GET" in h.get("allow", "")


def test_allowed_methods_option(netwine):
    """--allowed-methods decides which methods are served at all; the others get
    405 with an Allow header listing the allowed ones, on every path."""
    n = netwine("--access-log", "")
    status, h, body = get(n, "/netwine/open?target=x", method="PUT", headers={"Content-Length": "0"})
    assert status == 405 and body
    assert h.get("allow") == "GET, HEAD, POST, OPTIONS"
    status, h, _ = get(n, "/", method="TRACE")
    assert status == 405 and h.get("allow") == "GET, HEAD, POST, OPTIONS"
    status, _, _ = get(n, "/", method="BREW")
    assert status == 501
    only_get = netwine("--allowed-methods", "GET,HEAD", "--access-log", "")
    status, h, _ = get(only_get, "/netwine/open?target=x", method="POST", headers={"Content-Length": "0"})
    assert status == 405 and h.get("allow") == "GET, HEAD"
    status, h, _ = get(only_get, "/netwine.js", method="OPTIONS")
    assert status == 405
    status, _, body = get(only_get, "/netwine.js")
    assert status == 200 and body


def test_directory_redirect_and_index(served):
    status, h, _ = get(served, "/sub")
    assert status == 301 and h["location"].endswith("/sub/")
    status, _, body = get(served, "/sub/")
    assert status == 200 and body == b"sub index"


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt",
    "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/%2e%2e%5csecret.txt",
    "/..\\secret.txt", "/%c0%ae%c0%ae/secret.txt", "/secret.txt%00.html", "//../secret.txt",
    "/./../secret.txt", "/leak.txt",
])
def test_traversal_never_reaches_the_secret(served, path):
    status, _, body = get(served, path)
    assert SECRET not in body
    assert status in (400, 403, 404)


def test_symlink_inside_root_is_served(served):
    status, _, body = get(served, "/inside-link.js")
    assert status == 200 and body == b"console.log('x');\n"


def test_head_of_an_error_has_no_body(served):
    with socket.create_connection((served.host, served.port), timeout=10) as s:
        s.sendall(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    # The HEAD answer must not carry a body: the pipelined GET's answer follows at once.
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 404")
    assert rest.startswith(b"HTTP/1.1 200")
