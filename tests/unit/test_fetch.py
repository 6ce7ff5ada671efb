"""fetch.py against real HTTP(S) servers on 127.0.0.1, and its refusals, which must come before any connection.

Two autouse guards keep every test on this machine whatever the code under test does: `resolver` answers
numeric hosts and `localhost` from the real resolver (no DNS traffic) plus the names a test gives it, and
refuses every other name; `connections` records every urllib3 pool fetch.py builds and blocks any aimed
anywhere but 127.0.0.1.
"""
from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest
import urllib3
from urllib3.exceptions import NewConnectionError

from clip_sagemaker.errors import ApiError
from clip_sagemaker.fetch import FetchPolicy, fetch_image, is_url
from images import encode, pattern

FIELD = "queries[2].img_uri"
CAT = encode(pattern(7))
MAX_BYTES = 256 * 1024
LOOPBACK = FetchPolicy(allowed_hosts=("127.0.0.1",), max_bytes=MAX_BYTES)
OPEN = FetchPolicy(max_bytes=MAX_BYTES)  # no allow-list: what a public endpoint runs with
SLOW_S = 5.0        # how long /slow stalls; teardown cuts it short
QUICK_S = 0.5       # a refusal made before any connection takes far less than this
JOIN_S = 5.0
# Never routed (TEST-NET-1); the connection guard makes connecting to it fail as a refused connection would.
REFUSING_ADDRESS = "192.0.2.1"


class BlockedConnection(Exception):
    """Raised by the test guard: fetch.py tried to connect somewhere other than 127.0.0.1."""


# --- the server ---------------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # for chunked bodies; every response still closes its connection

    def log_message(self, *args):
        pass

    def do_GET(self):
        owner: ImageServer = self.server.owner  # type: ignore[attr-defined]
        owner.record(self.path, self.headers.get("Host"))
        route = ROUTES.get(self.path.split("?")[0], _not_found)
        try:
            route(self, owner)
        except (OSError, ssl.SSLError):
            pass  # the client hung up on purpose (a refused body, a timeout)
        self.close_connection = True

    def head(self, status: int, content_type: Optional[str] = None, length: Optional[int] = None,
             **extra: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Connection", "close")
        self.end_headers()

    def body(self, content: bytes, content_type: Optional[str] = "image/png", status: int = 200) -> None:
        self.head(status, content_type, len(content))
        self.wfile.write(content)

    def redirect(self, location: str) -> None:
        self.head(302, length=0, Location=location)


def _not_found(h: _Handler, owner: "ImageServer") -> None:
    h.body(b"not found", "text/plain", status=404)


def _zeros(h: _Handler, owner: "ImageServer", total: int, chunked: bool) -> None:
    block = bytes(64 * 1024)
    sent = 0
    while sent < total and not owner.stop.is_set():
        h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        sent += len(block)
    if chunked:
        h.wfile.write(b"0\r\n\r\n")


def _huge(h, owner):
    h.head(200, "image/png", 4 * MAX_BYTES)
    _zeros(h, owner, 4 * MAX_BYTES, chunked=False)


def _huge_chunked(h, owner):
    h.head(200, "image/png", Transfer_Encoding="chunked")
    _zeros(h, owner, 4 * MAX_BYTES, chunked=True)


def _huge_unbounded(h, owner):
    # Neither Content-Length nor chunked: the body ends when the connection does.
    h.head(200, "image/png")
    _zeros(h, owner, 4 * MAX_BYTES, chunked=False)


def _slow(h, owner):
    owner.stop.wait(SLOW_S)
    h.body(CAT)


def _slow_body(h, owner):
    h.head(200, "image/png", len(CAT))
    h.wfile.write(CAT[:100])
    h.wfile.flush()
    owner.stop.wait(SLOW_S)
    h.wfile.write(CAT[100:])


def _drip(h, owner):
    h.head(200, "image/png", 60)
    for _ in range(60):  # 3 s at most, however the client behaves
        if owner.stop.wait(0.05):
            return
        h.wfile.write(b"\0")
        h.wfile.flush()


ROUTES: dict[str, Callable[[_Handler, Any], None]] = {
    "/cat.png": lambda h, o: h.body(CAT),
    "/no-type": lambda h, o: h.body(CAT, content_type=None),
    "/octet": lambda h, o: h.body(CAT, "application/octet-stream; charset=binary"),
    "/html": lambda h, o: h.body(b"<html>not a cat</html>", "text/html; charset=utf-8"),
    "/404": _not_found,
    "/500": lambda h, o: h.body(b"oops", "text/plain", status=500),
    "/redirect-to-cat": lambda h, o: h.redirect("/cat.png"),
    "/dir/redirect-relative": lambda h, o: h.redirect("../cat.png?size=small"),
    "/redirect-to-metadata": lambda h, o: h.redirect("http://169.254.169.254/latest/meta-data/"),
    "/redirect-to-file": lambda h, o: h.redirect("file:///etc/passwd"),
    "/redirect-loop": lambda h, o: h.redirect("/redirect-loop"),
    "/redirect-nowhere": lambda h, o: h.head(302, length=0),
    "/huge": _huge,
    "/huge-chunked": _huge_chunked,
    "/huge-unbounded": _huge_unbounded,
    "/slow": _slow,
    "/slow-body": _slow_body,
    "/drip": _drip,
}


class _HTTPServer(http.server.ThreadingHTTPServer):
    block_on_close = False  # teardown joins the handler threads itself, with a timeout

    def __init__(self, owner: "ImageServer"):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="test-image-server-handler", daemon=True)
        self.owner.threads.append(thread)
        thread.start()

    def handle_error(self, request, client_address):
        pass  # failed TLS handshakes and clients hanging up are part of the tests


class ImageServer:
    """A threaded HTTP(S) server on 127.0.0.1 that remembers every request it was sent."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None):
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.requests: list[tuple[str, Optional[str]]] = []
        self.server_names: list[Optional[str]] = []
        self._lock = threading.Lock()
        self.httpd = _HTTPServer(self)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            # Handshakes happen in the handler threads, so a failing one never stalls the accept loop.
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._serve = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-image-server", daemon=True)
        self._serve.start()

    def record(self, path: str, host: Optional[str]) -> None:
        with self._lock:
            self.requests.append((path, host))

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def close(self) -> None:
        self.stop.set()
        stopper = threading.Thread(target=self.httpd.shutdown, daemon=True)
        stopper.start()
        deadline = time.monotonic() + JOIN_S
        for thread in [stopper, self._serve, *self.threads]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.httpd.server_close()
        alive = [t.name for t in [stopper, self._serve, *self.threads] if t.is_alive()]
        assert not alive, f"server threads still running after {JOIN_S} s: {alive}"


@pytest.fixture()
def server():
    srv = ImageServer()
    yield srv
    srv.close()


# --- the guards ---------------------------------------------------------------------------------------------

class Resolver:
    """Stands in for socket.getaddrinfo: real answers for numeric hosts and localhost, made-up ones for the
    names a test adds, and 'no such name' for everything else, so no test ever sends a DNS query."""

    def __init__(self, real):
        self.real = real
        self.names: dict[str, Callable[[], list[str]]] = {}
        self.calls: Counter[str] = Counter()

    def add(self, name: str, *addresses: str) -> None:
        self.names[name] = lambda: list(addresses)

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name in self.names:
            self.calls[name] += 1
            answer = []
            for address in self.names[name]():
                inet6 = ":" in address
                sockaddr = (address, port, 0, 0) if inet6 else (address, port)
                answer.append((socket.AF_INET6 if inet6 else socket.AF_INET, socket.SOCK_STREAM,
                               socket.IPPROTO_TCP, "", sockaddr))
            return answer
        try:
            return self.real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            if name == "localhost":
                return self.real(host, port, family, type, proto, flags)
            raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (test resolver: {name})")


@pytest.fixture(autouse=True)
def resolver(monkeypatch) -> Resolver:
    fake = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@dataclass
class Attempt:
    scheme: str
    host: str
    kwargs: dict


class _RefusingPool:
    def __init__(self, host):
        self.host = host

    def urlopen(self, *args, **kwargs):
        raise NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")

    def close(self):
        pass


@pytest.fixture(autouse=True)
def connections(monkeypatch) -> list[Attempt]:
    """Every pool fetch.py builds, in order; any not aimed at 127.0.0.1 raises BlockedConnection instead."""
    attempts: list[Attempt] = []

    def guard(real, scheme):
        def build(host, *args, **kwargs):
            attempts.append(Attempt(scheme, host, kwargs))
            if host == REFUSING_ADDRESS:
                return _RefusingPool(host)
            if host != "127.0.0.1":
                raise BlockedConnection(f"{scheme} connection to {host}")
            return real(host, *args, **kwargs)
        return build

    monkeypatch.setattr(urllib3, "HTTPConnectionPool", guard(urllib3.HTTPConnectionPool, "http"))
    monkeypatch.setattr(urllib3, "HTTPSConnectionPool", guard(urllib3.HTTPSConnectionPool, "https"))
    return attempts


def refused(url: str, policy: FetchPolicy, code: str, status: int = 400) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch_image(url, FIELD, policy)
    error = caught.value
    assert (error.code, error.status) == (code, status), error.message
    assert error.field == FIELD and FIELD in error.message
    return error


# --- fetching -----------------------------------------------------------------------------------------------

def test_is_url_is_true_for_any_scheme():
    for value in ["http://a/b.png", "HTTPS://a", "s3://bucket/key", "file:///etc/passwd", "ftp://x/y",
                  "gopher://x"]:
        assert is_url(value), value
    for value in ["data:image/png;base64,iVBORw0KGgo=", "iVBORw0KGgo=", "//host/cat.png", "", "http:/x"]:
        assert not is_url(value), value


def test_fetches_the_exact_bytes(server):
    assert fetch_image(f"{server.url}/cat.png", FIELD, LOOPBACK) == CAT
    assert server.requests == [("/cat.png", f"127.0.0.1:{server.port}")]


@pytest.mark.parametrize("path", ["/no-type", "/octet"])
def test_untyped_and_octet_stream_bodies_are_accepted(server, path):
    assert fetch_image(f"{server.url}{path}", FIELD, LOOPBACK) == CAT


def test_follows_a_redirect(server):
    assert fetch_image(f"{server.url}/redirect-to-cat", FIELD, LOOPBACK) == CAT
    assert server.paths() == ["/redirect-to-cat", "/cat.png"]


def test_relative_redirects_resolve_against_the_current_url(server):
    assert fetch_image(f"{server.url}/dir/redirect-relative", FIELD, LOOPBACK) == CAT
    assert server.paths() == ["/dir/redirect-relative", "/cat.png?size=small"]


def test_a_redirect_to_the_metadata_service_is_refused_before_connecting(server, connections):
    error = refused(f"{server.url}/redirect-to-metadata", LOOPBACK, "image_url_forbidden", 403)
    assert "169.254.169.254" in error.message
    assert [a.host for a in connections] == ["127.0.0.1"]


def test_a_redirect_to_another_scheme_is_refused(server):
    refused(f"{server.url}/redirect-to-file", LOOPBACK, "unsupported_url_scheme")


def test_redirects_stop_at_the_limit(server):
    error = refused(f"{server.url}/redirect-loop", LOOPBACK, "image_fetch_failed")
    assert "redirects" in error.message
    assert server.paths() == ["/redirect-loop"] * (LOOPBACK.max_redirects + 1)


def test_no_redirects_when_the_limit_is_zero(server):
    policy = FetchPolicy(allowed_hosts=("127.0.0.1",), max_redirects=0)
    assert "redirects" in refused(f"{server.url}/redirect-to-cat", policy, "image_fetch_failed").message
    assert server.paths() == ["/redirect-to-cat"]


def test_a_redirect_without_location_fails(server):
    assert "Location" in refused(f"{server.url}/redirect-nowhere", LOOPBACK, "image_fetch_failed").message


@pytest.mark.parametrize("path", ["/huge", "/huge-chunked", "/huge-unbounded"])
def test_bodies_over_the_limit_are_refused(server, path):
    started = time.monotonic()
    error = refused(f"{server.url}{path}", LOOPBACK, "image_too_large", 413)
    assert str(MAX_BYTES) in error.message
    # A declared length over the limit is refused before reading; the others once the body passes it.
    assert ("Content-Length" in error.message) == (path == "/huge")
    assert time.monotonic() - started < 2


def test_html_is_not_an_image(server):
    assert "text/html" in refused(f"{server.url}/html", LOOPBACK, "invalid_image").message


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_name_the_status(server, status):
    assert str(status) in refused(f"{server.url}/{status}", LOOPBACK, "image_fetch_failed").message


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
def test_a_stalled_server_times_out(server, path):
    policy = FetchPolicy(allowed_hosts=("127.0.0.1",), read_timeout_s=0.5)
    started = time.monotonic()
    refused(f"{server.url}{path}", policy, "image_fetch_timeout")
    assert time.monotonic() - started < 2


def test_a_dripping_server_hits_the_total_timeout(server):
    policy = FetchPolicy(allowed_hosts=("127.0.0.1",), read_timeout_s=2, total_timeout_s=0.5)
    started = time.monotonic()
    assert "in total" in refused(f"{server.url}/drip", policy, "image_fetch_timeout").message
    assert time.monotonic() - started < 2


def test_connection_refused_fails(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused(f"http://127.0.0.1:{closed_port}/cat.png", LOOPBACK, "image_fetch_failed")


def test_non_ascii_paths_are_percent_encoded(server):
    refused(f"{server.url}/caf\u00e9.png", LOOPBACK, "image_fetch_failed")
    assert server.paths() == ["/caf%C3%A9.png"]


# --- the allow-list -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["127.0.0.0/8", "127.0.0.1/32", "127.0.0.1"])
def test_allow_listed_networks_work_like_exact_addresses(server, entry):
    policy = FetchPolicy(allowed_hosts=(entry,))
    assert fetch_image(f"{server.url}/cat.png", FIELD, policy) == CAT


def test_allow_listed_host_names_match_case_insensitively(server, resolver):
    resolver.add("images.internal", "127.0.0.1")
    policy = FetchPolicy(allowed_hosts=("IMAGES.Internal",))
    assert fetch_image(f"http://Images.Internal:{server.port}/cat.png", FIELD, policy) == CAT
    # Sent to the vetted address, but named as the client named it.
    assert server.requests == [("/cat.png", f"images.internal:{server.port}")]


def test_international_host_names_are_sent_as_idna(server, resolver):
    resolver.add("xn--caf-dma.test", "127.0.0.1")
    policy = FetchPolicy(allowed_hosts=("caf\u00e9.test",))
    assert fetch_image(f"http://CAF\u00c9.test:{server.port}/cat.png", FIELD, policy) == CAT
    assert server.requests == [("/cat.png", f"xn--caf-dma.test:{server.port}")]


def test_a_name_not_on_the_list_is_checked_by_address(server, resolver):
    resolver.add("images.internal", "127.0.0.1")
    policy = FetchPolicy(allowed_hosts=("other.internal",))
    error = refused(f"http://images.internal:{server.port}/cat.png", policy, "image_url_forbidden", 403)
    # The reason is given, but not the internal address a name resolved to (that would map the network).
    assert "loopback" in error.message and "127.0.0.1" not in error.message
    assert server.requests == []


def test_the_connection_goes_to_the_vetted_address_without_a_second_lookup(server, resolver):
    answers = iter([["127.0.0.1"]])
    # A rebinding resolver: the first answer passes the check, every later one points inside the network.
    resolver.names["rebind.test"] = lambda: next(answers, ["10.0.0.1"])
    policy = FetchPolicy(allowed_hosts=("127.0.0.0/8",))
    assert fetch_image(f"http://rebind.test:{server.port}/cat.png", FIELD, policy) == CAT
    assert resolver.calls["rebind.test"] == 1
    assert server.requests == [("/cat.png", f"rebind.test:{server.port}")]


def test_every_resolved_address_is_checked(resolver, connections):
    resolver.add("mixed.test", "93.184.216.34", "10.1.2.3")
    error = refused("http://mixed.test/cat.png", OPEN, "image_url_forbidden", 403)
    assert "private" in error.message and "10.1.2.3" not in error.message
    assert connections == []


@pytest.mark.parametrize("address, connected", [("93.184.216.34", "93.184.216.34"),
                                                 ("::ffff:93.184.216.34", "93.184.216.34"),
                                                 ("2606:4700::1111", "2606:4700::1111")])
def test_a_public_address_passes_and_is_what_gets_connected_to(resolver, connections, address, connected):
    resolver.add("public.test", address)
    # The guard stops the connection itself: only where it would have gone is checked.
    with pytest.raises(BlockedConnection):
        fetch_image("http://public.test/cat.png", FIELD, OPEN)
    assert [(a.scheme, a.host, a.kwargs["port"]) for a in connections] == [("http", connected, 80)]


def test_an_ipv4_mapped_spelling_of_an_allowed_address_is_allowed(server, connections):
    url = f"http://[::ffff:127.0.0.1]:{server.port}/cat.png"
    assert fetch_image(url, FIELD, LOOPBACK) == CAT
    assert [a.host for a in connections] == ["127.0.0.1"]


def test_https_verifies_the_certificate_against_the_real_host_name(resolver, connections):
    resolver.add("public.test", "2606:4700::1111")
    with pytest.raises(BlockedConnection):
        fetch_image("https://public.test:8443/cat.png", FIELD, OPEN)
    [attempt] = connections
    assert (attempt.scheme, attempt.host, attempt.kwargs["port"]) == ("https", "2606:4700::1111", 8443)
    assert attempt.kwargs["server_hostname"] == attempt.kwargs["assert_hostname"] == "public.test"
    assert attempt.kwargs["cert_reqs"] == "CERT_REQUIRED"


def test_an_address_that_refuses_falls_back_to_the_next(server, resolver, connections):
    resolver.add("dual.test", REFUSING_ADDRESS, "127.0.0.1")
    policy = FetchPolicy(allowed_hosts=("dual.test",))
    assert fetch_image(f"http://dual.test:{server.port}/cat.png", FIELD, policy) == CAT
    assert [a.host for a in connections] == [REFUSING_ADDRESS, "127.0.0.1"]


def test_unknown_names_fail(resolver):
    assert "nowhere.test" in refused("http://nowhere.test/cat.png", OPEN, "image_fetch_failed").message


def test_a_slow_resolver_times_out(resolver):
    release = threading.Event()

    def stalled():
        release.wait(JOIN_S)
        return ["93.184.216.34"]

    resolver.names["slow-dns.test"] = stalled
    policy = FetchPolicy(connect_timeout_s=0.2)
    started = time.monotonic()
    try:
        refused("http://slow-dns.test/cat.png", policy, "image_fetch_timeout")
        assert time.monotonic() - started < 2
    finally:
        release.set()
        for thread in threading.enumerate():
            if thread.name == "image-fetch-dns":
                thread.join(JOIN_S)
                assert not thread.is_alive()


# --- refusals without the allow-list ------------------------------------------------------------------------

def test_loopback_is_refused_and_never_contacted(server, connections):
    error = refused(f"{server.url}/cat.png", OPEN, "image_url_forbidden", 403)
    assert "127.0.0.1" in error.message
    assert server.requests == [] and connections == []


# The same loopback server, spelled every way a resolver accepts, and the address the refusal must name.
HOSTILE_SPELLINGS = {
    "2130706433": "127.0.0.1", "0x7f000001": "127.0.0.1", "0177.0.0.1": "127.0.0.1", "127.1": "127.0.0.1",
    "[::ffff:127.0.0.1]": "127.0.0.1", "[::ffff:7f00:1]": "127.0.0.1", "[0:0:0:0:0:ffff:127.0.0.1]": "127.0.0.1",
    "localhost": "127.0.0.1", "LocalHost": "127.0.0.1", "localhost.": "127.0.0.1", "127.0.0.1.": "127.0.0.1",
    "0": "0.0.0.0", "0.0.0.0": "0.0.0.0", "[::]": "::", "[::1]": "::1",
}


@pytest.mark.parametrize("host", sorted(HOSTILE_SPELLINGS))
def test_every_spelling_of_this_machine_is_refused(server, connections, host):
    started = time.monotonic()
    error = refused(f"http://{host}:{server.port}/cat.png", OPEN, "image_url_forbidden", 403)
    assert time.monotonic() - started < QUICK_S
    assert "only fetched from public addresses" in error.message
    assert "loopback" in error.message or "unspecified" in error.message
    assert server.requests == [] and connections == []


# host -> what the refusal must say about it
INTERNAL = {
    "169.254.169.254": "169.254.169.254 is a cloud metadata",
    "[fd00:ec2::254]": "fd00:ec2::254 is a cloud metadata",
    "10.0.0.1": "10.0.0.1 is a private",
    "192.168.1.1": "192.168.1.1 is a private",
    "172.16.0.1": "172.16.0.1 is a private",
    "[fd12:3456::1]": "fd12:3456::1 is a private",
    "100.64.0.1": "100.64.0.1 is a shared",
    "169.254.1.1": "169.254.1.1 is a link-local",
    "[fe80::1]": "fe80::1 is a link-local",
    "224.0.0.1": "224.0.0.1 is a multicast",
    "[ff02::1]": "ff02::1 is a multicast",
    "240.0.0.1": "240.0.0.1 is a reserved",
    "192.0.2.1": "192.0.2.1 is a non-public",
    "[2002:a9fe:a9fe::1]": "is a cloud metadata address (169.254.169.254) wrapped",  # 6to4
    "[64:ff9b::a00:1]": "is a private address (10.0.0.1) wrapped",                  # NAT64
}


@pytest.mark.parametrize("host", sorted(INTERNAL))
def test_internal_addresses_are_refused_before_any_connection(connections, host):
    started = time.monotonic()
    error = refused(f"http://{host}/latest/meta-data/", OPEN, "image_url_forbidden", 403)
    assert time.monotonic() - started < QUICK_S
    assert INTERNAL[host] in error.message
    assert connections == []


def test_refused_addresses_never_reach_urllib3_or_a_socket(monkeypatch):
    """The guard fixtures aside: with urllib3's pools and socket connections made to fail the test outright,
    every refusal still comes back as the 403 (it happens before any of them is touched)."""
    def no_connection(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args} {kwargs}")

    monkeypatch.setattr(urllib3, "HTTPConnectionPool", no_connection)
    monkeypatch.setattr(urllib3, "HTTPSConnectionPool", no_connection)
    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", no_connection)
    for host in ["169.254.169.254", "10.0.0.1", "192.168.1.1", "[fd00:ec2::254]", "localhost", "127.0.0.1"]:
        for scheme in ["http", "https"]:
            refused(f"{scheme}://{host}/", OPEN, "image_url_forbidden", 403)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y", "gopher://x", "FILE:///etc/passwd",
                                 "javascript:alert(1)", "dict://127.0.0.1:11211/stat"])
def test_other_schemes_are_refused(connections, url):
    refused(url, LOOPBACK, "unsupported_url_scheme")
    assert connections == []


def test_s3_is_not_this_fetchers_scheme(connections):
    error = refused("s3://bucket/cat.png", LOOPBACK, "unsupported_url_scheme")
    assert "s3://" in error.message
    assert connections == []


@pytest.mark.parametrize("netloc", ["user:pass@127.0.0.1:{port}", "127.0.0.1:{port}@127.0.0.1:{port}",
                                    "@127.0.0.1:{port}"])
def test_urls_with_credentials_are_refused(server, connections, netloc):
    refused(f"http://{netloc.format(port=server.port)}/cat.png", LOOPBACK, "invalid_field")
    assert server.requests == [] and connections == []


@pytest.mark.parametrize("url", ["http:///cat.png", "http://127.0.0.1:99999/cat.png", "http://127.0.0.1/a b",
                                 "http://127.0.0.1/\r\nX-Injected: 1", "http://" + "a" * 9000])
def test_malformed_urls_are_refused(connections, url):
    refused(url, LOOPBACK, "invalid_field")
    assert connections == []


# --- the policy ---------------------------------------------------------------------------------------------

def test_policy_accepts_the_environment_variable_form():
    policy = FetchPolicy(allowed_hosts="images.internal, 10.0.0.0/8  [::1]")
    assert policy.allowed_hosts == ("images.internal", "10.0.0.0/8", "[::1]")


@pytest.mark.parametrize("kwargs", [{"allowed_hosts": ("10.0.0.0/33",)}, {"max_bytes": 0},
                                    {"read_timeout_s": -1}, {"max_redirects": -1}])
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        FetchPolicy(**kwargs)


# --- TLS ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for secure.test (P-256, valid for two days), made in-process with the
    `cryptography` package as `openssl req -x509` makes one: a CA certificate that is its own issuer."""
    x509 = pytest.importorskip("cryptography.x509", reason="needs the cryptography package to make a test "
                                                           "certificate")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture()
def tls_server(certificate, resolver):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    resolver.add("secure.test", "127.0.0.1")
    resolver.add("impostor.test", "127.0.0.1")
    srv = ImageServer(tls=context)
    yield srv
    srv.close()


@pytest.fixture()
def trust_test_certificate(certificate, monkeypatch):
    import certifi
    monkeypatch.setattr(certifi, "where", lambda: str(certificate[0]))


def test_https_fetches_from_a_trusted_server(tls_server, trust_test_certificate):
    url = f"https://secure.test:{tls_server.port}/cat.png"
    assert fetch_image(url, FIELD, LOOPBACK) == CAT
    assert tls_server.server_names == ["secure.test"]
    assert tls_server.requests == [("/cat.png", f"secure.test:{tls_server.port}")]


def test_https_refuses_an_untrusted_certificate(tls_server):
    error = refused(f"https://secure.test:{tls_server.port}/cat.png", LOOPBACK, "image_fetch_failed")
    assert "TLS" in error.message
    assert tls_server.server_names == ["secure.test"] and tls_server.requests == []


def test_https_refuses_a_certificate_for_another_name(tls_server, trust_test_certificate):
    # Trusted certificate, right address, wrong name: the check uses the URL's host, not the IP.
    error = refused(f"https://impostor.test:{tls_server.port}/cat.png", LOOPBACK, "image_fetch_failed")
    assert "TLS" in error.message
    assert tls_server.requests == []
