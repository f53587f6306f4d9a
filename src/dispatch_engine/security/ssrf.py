"""Rules for customer-supplied outgoing URLs (DND webhooks, incident notification webhooks).

Customers control these URLs, so without checks they could make the engine call internal
services (cloud metadata endpoints, databases, admin ports). Two layers apply:

* :func:`validate_url` is a static check at configuration time (scheme, credentials, port,
  IP literals in every spelling a resolver accepts, loopback host names).
* :func:`resolve_safe` runs at call time and vets every address the host name resolves to,
  so a DNS answer that changes after configuration (DNS rebinding) is caught as well. The
  guarded HTTP client then connects to exactly one of the vetted addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

import idna
from aiohttp.abc import ResolveResult

__all__ = [
    "GuardedHttpError",
    "HostResolutionError",
    "IPAddress",
    "UnsafeUrlError",
    "UrlPolicy",
    "is_forbidden_ip",
    "parse_ip_literal",
    "resolve_safe",
    "validate_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"http": 80, "https": 443})

# Host names that resolve to the local machine on common systems (/etc/hosts aliases).
LOOPBACK_HOST_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)

_HOST_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_FORBIDDEN_URL_CHARS_RE = re.compile(r"[\x00-\x20\x7f\\]")

_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved for IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved for benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), label)
    for net, label in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("100::/64", "discard-only"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001:2::/48", "reserved for benchmarking"),
    )
)

# IPv6 prefixes whose low 32 bits carry an IPv4 address that is what really gets reached.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


class GuardedHttpError(Exception):
    """Base class for every failure of a guarded outgoing HTTP call.

    Defined here (not in the client module) so that :class:`UnsafeUrlError`, raised at
    configuration time as well, is also part of the client's error family.
    """


class UnsafeUrlError(GuardedHttpError, ValueError):
    """The URL or one of its addresses is not allowed; ``reason`` is safe to show users."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostResolutionError(OSError):
    """The host name could not be resolved (not a policy violation, just unreachable)."""


@dataclass(frozen=True)
class UrlPolicy:
    """What outgoing URLs may target.

    ``allowlist`` entries are host names (exact, case-insensitive) or CIDR networks that may
    be reached even though they are private or loopback (e.g. an on-premise deployment).
    """

    allow_http: bool = False
    allowlist: tuple[str, ...] = ()
    _hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allowlist:
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            try:
                host = _normalize_host(text)
            except UnsafeUrlError:
                raise ValueError(
                    "allowlist entry is neither a host name nor a CIDR network"
                ) from None
            if isinstance(host, str):
                hosts.add(host)
            else:
                networks.append(ipaddress.ip_network(host))
        object.__setattr__(self, "_hosts", frozenset(hosts))
        object.__setattr__(self, "_networks", tuple(networks))

    def host_allowed(self, host: str) -> bool:
        """True when ``host`` (already normalised: lower-case ASCII) is allow-listed by name."""
        return host.rstrip(".").lower() in self._hosts

    def ip_allowed(self, ip: IPAddress) -> bool:
        """True when ``ip`` lies in an allow-listed network (IPv4-mapped forms included)."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            candidate in network
            for candidate in candidates
            for network in self._networks
            if network.version == candidate.version
        )


def is_forbidden_ip(ip: IPAddress) -> str | None:
    """Return why ``ip`` must not be contacted, or None when it is publicly routable."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    return _ipv6_reason(ip)


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for network, label in _IPV4_RULES:
        if ip in network:
            return f"address {ip} is {label}"
    if not ip.is_global:
        return f"address {ip} is not globally routable"
    return None


def _embedded_reason(ip: ipaddress.IPv6Address, inner: ipaddress.IPv4Address) -> str | None:
    inner_reason = _ipv4_reason(inner)
    if inner_reason is None:
        return None
    return f"address {ip} embeds a forbidden IPv4 address ({inner_reason})"


def _ipv6_reason(ip: ipaddress.IPv6Address) -> str | None:
    # Drop any zone id ("%eth0") so that network membership tests behave.
    ip = ipaddress.IPv6Address(int(ip))
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip == ipaddress.IPv6Address("::"):
        return f"address {ip} is unspecified"
    if ip == ipaddress.IPv6Address("::1"):
        return f"address {ip} is loopback"
    if ip in _IPV4_MAPPED or ip in _IPV4_TRANSLATED or ip in _IPV4_COMPATIBLE:
        return _embedded_reason(ip, low32)
    if ip in _NAT64_WELL_KNOWN:
        return _embedded_reason(ip, low32)
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return _embedded_reason(ip, ip.sixtofour)
    if ip in _TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        return _embedded_reason(ip, server) or _embedded_reason(ip, client)
    for network, label in _IPV6_RULES:
        if ip in network:
            return f"address {ip} is {label}"
    if not ip.is_global:
        return f"address {ip} is not globally routable"
    return None


def _parse_ipv4_number(part: str) -> int | None:
    """Parse one dotted part the way inet_aton/WHATWG do (decimal, 0x hex, 0-prefixed octal)."""
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
        if digits == "":
            return 0
        if not re.fullmatch(r"[0-9a-fA-F]+", digits):
            return None
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
        if not re.fullmatch(r"[0-7]+", digits):
            return None
    else:
        digits, base = part, 10
        if not re.fullmatch(r"[0-9]+", digits):
            return None
    return int(digits, base)


def _parse_ipv4_like(host: str) -> ipaddress.IPv4Address | None:
    """Recognise every IPv4 spelling a resolver accepts (``2130706433``, ``0x7f.1``, ...).

    Returns None for ordinary host names; raises UnsafeUrlError when the host looks numeric
    (its last label is a number) but is not a valid address, as browsers do.
    """
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not parts or _parse_ipv4_number(parts[-1]) is None:
        return None
    numbers = [_parse_ipv4_number(part) if part else None for part in parts]
    if len(parts) > 4 or any(number is None for number in numbers):
        raise UnsafeUrlError("malformed IPv4 address")
    values = [number for number in numbers if number is not None]
    if any(value > 255 for value in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise UnsafeUrlError("malformed IPv4 address")
    result = values[-1]
    for index, value in enumerate(values[:-1]):
        result += value * 256 ** (3 - index)
    return ipaddress.IPv4Address(result)


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the address when ``host`` is an IP literal in any accepted spelling, else None."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        if "%" in text:
            raise UnsafeUrlError("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise UnsafeUrlError("malformed IPv6 address") from None
    return _parse_ipv4_like(text.lower())


def _normalize_host(raw: str) -> str | IPAddress:
    """Normalise a host to lower-case ASCII (IDNA) or to an IP address object."""
    host = raw.strip()
    if not host:
        raise UnsafeUrlError("URL has no host")
    ip = parse_ip_literal(host)
    if ip is not None:
        return ip
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise UnsafeUrlError("invalid host name") from None
        # UTS-46 mapping can turn full-width digits and dots into an IP literal.
        ip = parse_ip_literal(host)
        if ip is not None:
            return ip
    host = host.lower().rstrip(".")
    labels = host.split(".")
    if (
        not host
        or len(host) > MAX_HOST_LENGTH
        or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise UnsafeUrlError("invalid host name")
    return host


def _is_loopback_name(host: str) -> bool:
    return host in LOOPBACK_HOST_NAMES or host.endswith(".localhost")


def _check_ip(ip: IPAddress, policy: UrlPolicy) -> None:
    if policy.ip_allowed(ip):
        return
    reason = is_forbidden_ip(ip)
    if reason is not None:
        raise UnsafeUrlError(reason)


def _format_host(host: str | IPAddress) -> str:
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]"
    return str(host)


def validate_url(url: str, policy: UrlPolicy) -> str:
    """Check a customer-given URL statically and return its normalised form.

    Refuses non-http(s) schemes, plain http unless allowed, credentials, missing hosts, bad
    ports, loopback host names and forbidden IP literals (unless allow-listed). The returned
    URL has a lower-case ASCII host (IP literals in canonical form) and no fragment.
    """
    text = url.strip()
    if len(text) > MAX_URL_LENGTH:
        raise UnsafeUrlError("URL is too long")
    if _FORBIDDEN_URL_CHARS_RE.search(text):
        raise UnsafeUrlError("URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise UnsafeUrlError("malformed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrlError("URL must be an absolute http(s) URL")
    if scheme == "http" and not policy.allow_http:
        raise UnsafeUrlError("https is required")
    if "@" in parts.netloc:
        raise UnsafeUrlError("credentials in the URL are not allowed")
    raw_host = parts.netloc
    if raw_host.startswith("["):
        end = raw_host.find("]") + 1
        if end == 0 or (raw_host[end:] and not raw_host[end:].startswith(":")):
            raise UnsafeUrlError("malformed URL")
        raw_host = raw_host[:end]
    else:
        raw_host = raw_host.rsplit(":", 1)[0]
    if not raw_host:
        raise UnsafeUrlError("URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrlError("port is invalid or out of range") from None
    if port is not None and not 1 <= port <= 65535:
        raise UnsafeUrlError("port is invalid or out of range")

    host = _normalize_host(raw_host)
    if isinstance(host, str):
        if _is_loopback_name(host) and not policy.host_allowed(host):
            raise UnsafeUrlError("host name refers to the local machine")
    else:
        _check_ip(host, policy)

    netloc = _format_host(host)
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


async def resolve_safe(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """Resolve ``host`` without blocking and return its addresses if every one is allowed.

    A single forbidden, non-allow-listed address refuses the whole host: an attacker who
    controls DNS could otherwise mix a public and a private answer. Host names on the
    allow-list skip the address checks.
    """
    normalized = _normalize_host(host)
    if not isinstance(normalized, str):
        _check_ip(normalized, policy)
        return [str(normalized)]
    if policy.host_allowed(normalized):
        name_allowed = True
    elif _is_loopback_name(normalized):
        raise UnsafeUrlError("host name refers to the local machine")
    else:
        name_allowed = False

    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            normalized, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise HostResolutionError("host name could not be resolved") from None

    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if not name_allowed:
            try:
                _check_ip(ip, policy)
            except UnsafeUrlError as exc:
                reason = f"host resolves to a forbidden address: {exc.reason}"
                raise UnsafeUrlError(reason) from None
        text = str(ip)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise HostResolutionError("host name resolved to no addresses")
    return addresses


def resolve_results(
    host: str, port: int, family: int, addresses: Sequence[str]
) -> list[ResolveResult]:
    """aiohttp resolver answers for vetted `addresses` of the requested `family` (numeric,
    so nothing is resolved again): how a pinned or checked resolver hands them over."""
    results: list[ResolveResult] = []
    for address in addresses:
        version = ipaddress.ip_address(address).version
        address_family = socket.AF_INET6 if version == 6 else socket.AF_INET
        if family not in (socket.AF_UNSPEC, address_family):
            continue
        results.append(
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=address_family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        )
    return results
