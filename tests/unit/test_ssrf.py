"""SSRF rules for customer-supplied webhook URLs."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from dispatch_engine.security.ssrf import (
    GuardedHttpError,
    HostResolutionError,
    UnsafeUrlError,
    UrlPolicy,
    is_forbidden_ip,
    parse_ip_literal,
    resolve_safe,
    validate_url,
)

STRICT = UrlPolicy()


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.200", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.0.8", "IETF"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("fec0::1", "site-local"),
        ("100::1", "discard"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:0:a00:1", "private"),  # IPv4-translated (SIIT)
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("::a00:1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 well-known prefix
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b:1::1", "NAT64"),  # local-use NAT64
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo client 127.0.0.1
        ("2001:0:a00:1::1", "private"),  # Teredo server 10.0.0.1
    ],
)
def test_forbidden_addresses(address: str, fragment: str) -> None:
    reason = is_forbidden_ip(ipaddress.ip_address(address))
    assert reason is not None
    assert fragment in reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",  # just outside 172.16/12
        "100.128.0.1",  # just outside 100.64/10
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",  # mapped public address is just that address
        "64:ff9b::808:808",  # NAT64 of a public address
        "2002:808:808::1",  # 6to4 of a public address
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://10.0.0.1/hook", "private"),
        ("https://127.0.0.1:8443/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://2130706433/", "127.0.0.1"),  # dword
        ("https://0x7f000001/", "127.0.0.1"),  # hex dword
        ("https://0x7f.1/", "127.0.0.1"),
        ("https://0177.0.0.1/", "127.0.0.1"),  # octal
        ("https://127.1/", "127.0.0.1"),
        ("https://127.0.0.1./", "127.0.0.1"),  # trailing dot
        ("https://0/", "0.0.0.0"),
        ("https://0xA9.0xFE.0xA9.0xFE/", "169.254.169.254"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:7f00:1]/", "loopback"),
        ("https://[64:ff9b::a00:1]/", "private"),
        ("https://[2002:7f00:1::]/", "loopback"),
        ("https://[fd00::1]:8443/", "unique-local"),
        ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "127.0.0.1"),  # full-width digits
        ("https://localhost/", "local machine"),
        ("https://LOCALHOST./", "local machine"),
        ("https://api.localhost/", "local machine"),
        ("https://ip6-localhost/", "local machine"),
        ("http://example.com/", "https is required"),
        ("https://user:secret@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://example.com\\@10.0.0.1/", "backslash"),
        ("ftp://example.com/", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
        ("//example.com/x", "http(s)"),
        ("example.com/x", "http(s)"),
        ("https:///path", "no host"),
        ("https://:443/", "no host"),
        ("https://example.com:0/", "port"),
        ("https://example.com:65536/", "port"),
        ("https://example.com:http/", "port"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\nHost: evil", "whitespace"),
        ("https://256.1.1.1/", "malformed IPv4"),
        ("https://1.2.3.4.5/", "malformed IPv4"),
        ("https://example.123/", "malformed IPv4"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://[::1/", "malformed"),
        ("https://exa_mple..com/", "invalid host"),
        ("https://*.example.com/", "invalid host"),
    ],
)
def test_validate_url_refuses(url: str, fragment: str) -> None:
    with pytest.raises(UnsafeUrlError) as info:
        validate_url(url, STRICT)
    assert fragment in info.value.reason
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com", "https://example.com/"),
        ("  https://Example.COM:443/Hook?a=1#frag ", "https://example.com/Hook?a=1"),
        ("HTTPS://example.com.:8443/x", "https://example.com:8443/x"),
        ("https://bücher.de/x", "https://xn--bcher-kva.de/x"),
        ("https://8.8.8.8/", "https://8.8.8.8/"),
        ("https://134744072/", "https://8.8.8.8/"),
        ("https://[2606:4700:4700:0::1111]/", "https://[2606:4700:4700::1111]/"),
        ("https://hooks_internal.example.com/", "https://hooks_internal.example.com/"),
    ],
)
def test_validate_url_normalises(url: str, expected: str) -> None:
    assert validate_url(url, STRICT) == expected


def test_http_allowed_by_policy() -> None:
    assert validate_url("http://example.com:8080/x", UrlPolicy(allow_http=True)) == (
        "http://example.com:8080/x"
    )
    assert validate_url("http://example.com:80/x", UrlPolicy(allow_http=True)) == (
        "http://example.com/x"
    )


def test_allowlist_by_cidr() -> None:
    policy = UrlPolicy(allowlist=("10.0.0.0/8", "fd00::/8"))
    assert validate_url("https://10.1.2.3/x", policy) == "https://10.1.2.3/x"
    assert validate_url("https://167838211/x", policy) == "https://10.1.2.3/x"
    assert validate_url("https://[fd00::5]/x", policy) == "https://[fd00::5]/x"
    assert validate_url("https://[::ffff:10.0.0.1]/", policy) == "https://[::ffff:a00:1]/"
    with pytest.raises(UnsafeUrlError, match="private"):
        validate_url("https://192.168.0.1/x", policy)
    with pytest.raises(UnsafeUrlError, match="loopback"):
        validate_url("https://127.0.0.1/x", policy)


def test_allowlist_by_hostname_is_exact_and_case_insensitive() -> None:
    policy = UrlPolicy(allowlist=("LocalHost", "hooks.corp.example"))
    assert validate_url("https://localhost:9000/x", policy) == "https://localhost:9000/x"
    assert validate_url("https://LOCALHOST/", policy) == "https://localhost/"
    with pytest.raises(UnsafeUrlError):
        validate_url("https://api.localhost/", policy)


def test_allowlist_does_not_relax_https_or_credentials() -> None:
    policy = UrlPolicy(allowlist=("127.0.0.1/32",))
    with pytest.raises(UnsafeUrlError, match="https is required"):
        validate_url("http://127.0.0.1/", policy)
    with pytest.raises(UnsafeUrlError, match="credentials"):
        validate_url("https://a:b@127.0.0.1/", policy)


@pytest.mark.parametrize("entry", ["*.example.com", "not a host", "10.0.0.0/33", ""])
def test_invalid_allowlist_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError):
        UrlPolicy(allowlist=(entry,))


def test_unsafe_url_error_family() -> None:
    err = UnsafeUrlError("https is required")
    assert isinstance(err, ValueError)
    assert isinstance(err, GuardedHttpError)
    assert err.reason == "https is required"


def test_parse_ip_literal() -> None:
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("1.2.3.example") is None
    assert parse_ip_literal("0x7f.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip_literal("[::1]") == ipaddress.ip_address("::1")


def _fake_getaddrinfo(answers: dict[str, list[str]], calls: list[str]) -> Any:
    async def fake(host: str, port: int, **_: Any) -> list[Any]:
        calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if ":" in address else (address, port)
            result.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return result

    return fake


async def test_resolve_safe_localhost_refused_without_allowlist() -> None:
    with pytest.raises(UnsafeUrlError):
        await resolve_safe("localhost", 443, STRICT)


async def test_resolve_safe_real_resolver_refuses_loopback_by_address() -> None:
    # "localhost" allow-listed as a *name* is the only way; a CIDR for another range is not.
    policy = UrlPolicy(allowlist=("10.0.0.0/8",))
    with pytest.raises(UnsafeUrlError):
        await resolve_safe("localhost", 443, policy)
    allowed = await resolve_safe("localhost", 443, UrlPolicy(allowlist=("localhost",)))
    assert allowed
    assert all(ipaddress.ip_address(ip).is_loopback for ip in allowed)


async def test_resolve_safe_ip_literal_skips_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", _fake_getaddrinfo({}, calls))
    assert await resolve_safe("8.8.8.8", 443, STRICT) == ["8.8.8.8"]
    assert await resolve_safe("[2606:4700:4700::1111]", 443, STRICT) == ["2606:4700:4700::1111"]
    with pytest.raises(UnsafeUrlError, match="loopback"):
        await resolve_safe("2130706433", 443, STRICT)
    assert calls == []


async def test_resolve_safe_refuses_if_any_answer_is_forbidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    answers = {
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "mixed.example": ["93.184.216.34", "10.0.0.7"],
        "mapped.example": ["::ffff:169.254.169.254"],
        "private.example": ["192.168.10.10"],
    }
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", _fake_getaddrinfo(answers, calls))

    assert await resolve_safe("Public.Example.", 443, STRICT) == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]
    assert calls == ["public.example"]
    with pytest.raises(UnsafeUrlError, match=r"10\.0\.0\.7 is private"):
        await resolve_safe("mixed.example", 443, STRICT)
    with pytest.raises(UnsafeUrlError, match="link-local"):
        await resolve_safe("mapped.example", 443, STRICT)
    # Allowed through the CIDR allow-list ...
    cidr = UrlPolicy(allowlist=("192.168.0.0/16",))
    assert await resolve_safe("private.example", 443, cidr) == ["192.168.10.10"]
    # ... or through the host-name allow-list.
    named = UrlPolicy(allowlist=("private.example",))
    assert await resolve_safe("private.example", 443, named) == ["192.168.10.10"]
    with pytest.raises(HostResolutionError):
        await resolve_safe("missing.example", 443, STRICT)


async def test_resolve_safe_deduplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    answers = {"dup.example": ["93.184.216.34", "93.184.216.34"]}
    monkeypatch.setattr(loop, "getaddrinfo", _fake_getaddrinfo(answers, []))
    assert await resolve_safe("dup.example", 443, STRICT) == ["93.184.216.34"]
