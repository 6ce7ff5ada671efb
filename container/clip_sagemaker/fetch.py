"""Downloading images that clients name by http(s) URL, without letting the URL reach our own network.

This module owns one thing: turning `http://...` / `https://...` into the response body's bytes, under a
FetchPolicy. A public endpoint that fetches arbitrary URLs is a server-side request forgery tool unless it
refuses to, so every hop of every fetch is checked before any connection is made:

* Only http and https. file://, ftp://, gopher:// and every other scheme are refused with
  `unsupported_url_scheme` (400). (s3:// URLs never get here: inputs.UrlReader sends them to s3_images.py.)
* URLs carrying credentials (`http://user:pass@host/`) are refused with `invalid_field` (400): they are
  never needed for public images, and `http://trusted.example@10.0.0.1/` is a classic way to disguise the
  real host from people reading logs.
* The host is resolved once with socket.getaddrinfo and EVERY address it resolves to is checked; any one
  that is loopback, private (RFC 1918, fc00::/7), link-local, multicast, unspecified, reserved, shared
  (100.64.0.0/10), another non-public special-purpose range, or a cloud metadata address is refused with
  `image_url_forbidden` (403), naming the address. IPv4-mapped IPv6 (::ffff:a.b.c.d), 6to4 and NAT64
  addresses are judged by the IPv4 address inside them. Because the address is what is checked, no
  spelling of the host (2130706433, 0x7f000001, 0177.0.0.1, 127.1, [::ffff:127.0.0.1]) gets around it.
* The connection goes to the exact address that was checked: the host name is never looked up a second
  time, so DNS rebinding cannot swap in another address between the check and the connection. The
  original host name is still sent in the Host header and, for https, used for SNI and for verifying the
  certificate.
* Redirects are followed here, not by urllib3: at most `max_redirects`, each Location resolved against the
  current URL and put through every check above again.
* `FetchPolicy.allowed_hosts` exempts hosts from the address checks (not from the scheme or credential
  checks): an entry matches a host name exactly (case-insensitively), or is an IP address or CIDR network
  that contains the resolved address. Operators list internal image hosts there; tests list 127.0.0.1.

Other failures: `image_fetch_failed` (400: the name does not resolve, the connection is refused, TLS fails,
HTTP status other than 2xx, too many redirects), `image_fetch_timeout` (400: connect, read, name
resolution or the whole fetch took too long), `image_too_large` (413: Content-Length or the body itself
goes past `max_bytes`; reading stops there), `invalid_image` (400: a Content-Type that is neither image/*
nor application/octet-stream nor binary/octet-stream; a missing Content-Type is accepted and left to the
image decoder). Every error is an ApiError naming the request field the URL came from.

Not done here: decoding the bytes (inputs.decode_image does that), caching, and s3:// (s3_images.py).
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field as dataclass_field
from typing import Optional, Union
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError, SSLError)

from .errors import ApiError, invalid
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# Whitespace and control characters have no business in a URL, and http.client would refuse some of them
# only after we had already connected.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_MAX_URL_CHARS = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_GENERIC_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "clip-sagemaker-image-fetch/1"

# Instance metadata services hand out credentials. Most sit in link-local space and would be refused
# anyway; listing them gives the refusal a clearer reason, and covers Azure's, which is a public address.
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack IMDS
    "169.254.170.2",    # AWS ECS task credentials
    "fd00:ec2::254",    # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",    # Azure WireServer
))
_SHARED_NET = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                         "fc00::/7"))
_SIXTOFOUR_NET = ipaddress.ip_network("2002::/16")
_NAT64_NETS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48"))


def is_url(value: str) -> bool:
    """True for anything of the form `scheme://...`, whatever the scheme (so callers can route it here and
    let fetch_image refuse the schemes it does not fetch)."""
    return bool(_URL.match(value))


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. `allowed_hosts` entries are host names, IP addresses or CIDR networks that are
    exempt from the address checks; a single string is split on commas and whitespace (the form an
    environment variable takes). A malformed network ("10.0.0.0/33") raises ValueError here rather than
    silently matching nothing.

    `total_timeout_s` bounds the whole fetch, redirects included, so a server that drips one byte per
    read timeout cannot hold a worker for hours; it is checked between reads, so a fetch can overrun it
    by up to one read timeout."""
    allowed_hosts: tuple[str, ...] = ()
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 3
    total_timeout_s: float = 30.0
    _allowed_names: frozenset[str] = dataclass_field(init=False, repr=False, compare=False)
    _allowed_networks: tuple[IPNetwork, ...] = dataclass_field(init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchPolicy":
        """The policy the IMAGE_* settings ask for; a malformed IMAGE_URL_ALLOWED_HOSTS is a SettingsError."""
        try:
            return cls(allowed_hosts=settings.image_url_allowed_hosts, max_bytes=settings.max_image_bytes,
                       read_timeout_s=min(10.0, settings.image_fetch_timeout_s),
                       total_timeout_s=settings.image_fetch_timeout_s)
        except ValueError as exc:
            raise SettingsError(f"IMAGE_URL_ALLOWED_HOSTS: {exc}") from None

    def __post_init__(self):
        entries = self.allowed_hosts
        if isinstance(entries, str):
            entries = re.split(r"[\s,]+", entries)
        entries = tuple(e.strip() for e in entries if e and e.strip())
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                if "/" in entry or ":" in entry:
                    raise ValueError(f"allowed host {entry!r} is neither a host name nor an IP network") from None
            try:
                names.add(_normal_host(entry))
            except UnicodeError:
                raise ValueError(f"allowed host {entry!r} is not a valid host name") from None
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "max_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be 0 or more, not {self.max_redirects!r}")
        object.__setattr__(self, "allowed_hosts", entries)
        object.__setattr__(self, "_allowed_names", frozenset(names))
        object.__setattr__(self, "_allowed_networks", tuple(networks))


@dataclass(frozen=True)
class _Target:
    """One hop's URL, split into what the connection needs."""
    scheme: str
    host: str         # ASCII (IDNA), lower case, no brackets, no trailing dot
    port: int
    request_target: str
    host_header: str


def fetch_image(url: str, field: str, policy: FetchPolicy) -> bytes:
    """The body of the image at `url` (http or https), fetched under `policy`; an ApiError naming `field`
    for anything refused or failed (see the module docstring for which code means what)."""
    deadline = time.monotonic() + policy.total_timeout_s
    current = url
    for hop in range(policy.max_redirects + 1):
        if _remaining(deadline) <= 0:
            raise _timeout(field, f"the fetch took longer than {policy.total_timeout_s:g} s in total")
        target = _parse(current, field)
        addresses = _vetted_addresses(target, policy, field, deadline, redirected=hop > 0)
        response, pool = _connect(target, addresses, policy, field, deadline)
        try:
            if response.status in _REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location or not location.strip():
                    raise _failed(field, f"{target.host} answered HTTP {response.status} without a Location")
                current = urljoin(current, location.strip())
                continue
            _check_headers(response, target, policy, field)
            return _read_body(response, target, policy, field, deadline)
        finally:
            # The pool is ours alone; closing (not releasing) means a half-read body is never reused.
            response.close()
            pool.close()
    raise _failed(field, f"gave up after {policy.max_redirects} redirects (the limit); last redirect "
                         f"was to {_short(current)}")


def _parse(url: str, field: str) -> _Target:
    if len(url) > _MAX_URL_CHARS:
        raise invalid(field, f"the URL is longer than {_MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise invalid(field, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise invalid(field, f"{shown} is not supported; image URLs must be http:// or https://",
                      code="unsupported_url_scheme")
    if _UNSAFE_URL_CHARS.search(url):
        raise invalid(field, "the URL contains whitespace or control characters")
    if "@" in parts.netloc:
        raise invalid(field, "URLs with credentials (user:password@host) are not accepted")
    if not parts.hostname:
        raise invalid(field, "the URL has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise invalid(field, "the URL has an invalid port") from None
    try:
        host = _normal_host(parts.hostname)
    except UnicodeError:
        raise invalid(field, f"the URL's host {parts.hostname!r} is not a valid host name") from None
    if not host:
        raise invalid(field, "the URL has no host")
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # urllib3 percent-encodes any non-ASCII left in the target.
    return _Target(scheme=scheme, host=host, port=port, host_header=host_header, request_target=request_target)


def _normal_host(host: str) -> str:
    """The form host names are compared, resolved and sent in: lower case, ASCII (IDNA), no trailing dot."""
    host = host.strip().strip("[]").rstrip(".").lower()
    return host if ":" in host else host.encode("idna").decode("ascii")


def _vetted_addresses(target: _Target, policy: FetchPolicy, field: str, deadline: float,
                      redirected: bool) -> list[str]:
    """Every address the host resolves to, checked; the ones to connect to, in resolver order."""
    exempt_by_name = target.host in policy._allowed_names
    vetted: list[str] = []
    for resolved in _resolve(target, field, min(policy.connect_timeout_s, _remaining(deadline))):
        address = _unmapped(resolved)
        exempt = exempt_by_name or any(address in network for network in policy._allowed_networks)
        if not exempt:
            reason = _refusal(address)
            if reason:
                # A name's internal address stays in the log: telling clients would map the internal network.
                if target.host in (str(address), str(resolved)):
                    where = f"the address {address} is"
                else:
                    where = f"{target.host} resolves to"
                    log.info("%s: refused %s, which resolves to %s (%s)", field, target.host, address, reason)
                article = "an" if reason[0] in "aeiou" else "a"
                via = f"the URL redirected to {target.host}; " if redirected else ""
                raise ApiError(f"{field}: {via}{where} {article} {reason} address; images are only fetched from "
                               f"public addresses, unless the endpoint's operator allows the host in "
                               f"IMAGE_URL_ALLOWED_HOSTS", code="image_url_forbidden", field=field, status=403)
        if str(address) not in vetted:
            vetted.append(str(address))
    return vetted


def _resolve(target: _Target, field: str, timeout: float) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(target.host)]
    except ValueError:
        pass
    # getaddrinfo has no timeout of its own and a slow resolver would hold the worker, so it runs in a
    # helper thread we stop waiting for (the thread ends when the resolver gives up).
    outcome: dict[str, object] = {}

    def lookup():
        try:
            outcome["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, name="image-fetch-dns", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if thread.is_alive():
        raise _timeout(field, f"looking up {target.host} took longer than {timeout:g} s")
    error = outcome.get("error")
    if error is not None:
        raise _failed(field, f"could not resolve {target.host} ({error})")
    addresses = []
    for _family, _type, _proto, _canon, sockaddr in outcome["infos"]:  # type: ignore[union-attr]
        try:
            addresses.append(ipaddress.ip_address(sockaddr[0]))
        except ValueError:
            # An address we cannot parse is an address we cannot vet.
            raise _failed(field, f"{target.host} resolved to an unrecognised address {sockaddr[0]!r}") from None
    if not addresses:
        raise _failed(field, f"could not resolve {target.host} (no addresses)")
    return addresses


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d); both reach the same host."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _refusal(address: IPAddress) -> Optional[str]:
    """Why nothing may be fetched from `address`, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        # 6to4 and NAT64 gateways forward to the IPv4 address embedded in these; judge that one too.
        embedded = None
        if address in _SIXTOFOUR_NET:
            embedded = address.sixtofour
        elif any(address in network for network in _NAT64_NETS):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _refusal(embedded)
            if inner:
                return f"{inner} address ({embedded}) wrapped in an IPv6"
    if address in _METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        # Checked explicitly: ipaddress counts some multicast ranges as "global".
        return "multicast"
    if address in _SHARED_NET:
        return "shared (carrier-grade NAT)"
    if any(address in network for network in _PRIVATE_NETS):
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public special-purpose"
    return None


def _connect(target: _Target, addresses: list[str], policy: FetchPolicy, field: str, deadline: float):
    """Sends the GET to the first vetted address that accepts a connection; (response, pool)."""
    remaining = _remaining(deadline)
    if remaining <= 0:
        raise _timeout(field, f"the fetch took longer than {policy.total_timeout_s:g} s in total")
    timeout = urllib3.Timeout(connect=min(policy.connect_timeout_s, remaining),
                              read=min(policy.read_timeout_s, remaining))
    headers = {"Host": target.host_header, "User-Agent": _USER_AGENT,
               "Accept": "image/*, application/octet-stream;q=0.9, */*;q=0.1",
               # Compressed bodies are still decoded and counted against max_bytes; asking for none keeps
               # the decoded size equal to what the server sent.
               "Accept-Encoding": "identity"}
    refused: Optional[Exception] = None
    for address in addresses:
        pool = _pool(target, address, timeout)
        try:
            response = pool.urlopen("GET", target.request_target, headers=headers, redirect=False,
                                    retries=False, preload_content=False, decode_content=True,
                                    assert_same_host=False, release_conn=False, timeout=timeout)
            return response, pool
        except NewConnectionError as exc:
            # A host with several addresses may listen on only some (::1 vs 127.0.0.1): try the next one.
            pool.close()
            refused = exc
        except BaseException as exc:
            pool.close()
            raise _translated(exc, target, field) from None
    raise _failed(field, f"could not connect to {target.host} port {target.port} "
                         f"({_reason(refused) if refused else 'no address'})")


def _pool(target: _Target, address: str, timeout: urllib3.Timeout):
    # Pools are built for the vetted address, never the name, so urllib3 does no lookup of its own.
    common = dict(port=target.port, timeout=timeout, retries=False, maxsize=1, block=False)
    if target.scheme == "http":
        return urllib3.HTTPConnectionPool(address, **common)
    return urllib3.HTTPSConnectionPool(address, server_hostname=target.host, assert_hostname=target.host,
                                       cert_reqs="CERT_REQUIRED", ca_certs=_ca_bundle(), **common)


def _ca_bundle() -> Optional[str]:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi ships with requests
        return None  # urllib3 then loads the system's default CA store
    return certifi.where()


def _check_headers(response, target: _Target, policy: FetchPolicy, field: str) -> None:
    if not 200 <= response.status < 300:
        raise _failed(field, f"{target.host} answered HTTP {response.status}")
    content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type and not (content_type.startswith("image/") or content_type in _GENERIC_BINARY_TYPES):
        raise invalid(field, f"the URL returned {content_type!r}, not an image", code="invalid_image")
    length = (response.headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > policy.max_bytes:
        raise _too_large(field, policy, f"its Content-Length is {int(length)} bytes")


def _read_body(response, target: _Target, policy: FetchPolicy, field: str, deadline: float) -> bytes:
    body = bytearray()
    try:
        while True:
            # read1 returns after at most one socket read, so the total deadline is checked at least once
            # per read timeout even when the server drips.
            chunk = response.read1(_CHUNK_BYTES)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > policy.max_bytes:
                raise _too_large(field, policy, "its body is larger")
            if _remaining(deadline) <= 0:
                raise _timeout(field, f"the fetch took longer than {policy.total_timeout_s:g} s in total")
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - _translated turns transport failures into ApiErrors
        raise _translated(exc, target, field) from None


def _translated(exc: BaseException, target: _Target, field: str) -> BaseException:
    """A urllib3/socket failure as the ApiError a client gets; anything else is our bug and stays as is."""
    where = f"{target.host} port {target.port}"
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NewConnectionError):
        return _failed(field, f"could not connect to {where} ({_reason(exc)})")
    if isinstance(exc, ConnectTimeoutError):
        return _timeout(field, f"connecting to {where} timed out")
    if isinstance(exc, (ReadTimeoutError, socket.timeout)):
        return _timeout(field, f"{where} did not answer in time")
    if isinstance(exc, SSLError):
        return _failed(field, f"TLS with {target.host} failed ({_reason(exc)})")
    if isinstance(exc, (ProtocolError, HTTPError, OSError)):
        return _failed(field, f"the connection to {where} failed ({_reason(exc)})")
    return exc


def _reason(exc: BaseException) -> str:
    """The innermost cause's text: urllib3's own messages embed the connection object's repr."""
    while isinstance(exc, HTTPError) and exc.__context__ is not None:
        exc = exc.__context__
    return (str(exc) or type(exc).__name__)[:300]


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _short(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


def _failed(field: str, message: str) -> ApiError:
    return invalid(field, message, code="image_fetch_failed")


def _timeout(field: str, message: str) -> ApiError:
    # Every timeout here is what is left of the total a URL may take.
    return invalid(field, f"{message} (IMAGE_FETCH_TIMEOUT)", code="image_fetch_timeout")


def _too_large(field: str, policy: FetchPolicy, why: str) -> ApiError:
    return ApiError(f"{field}: the image is larger than the limit of {policy.max_bytes} bytes ({why}; MAX_IMAGE_MB)",
                    code="image_too_large", field=field, status=413)
