"""Which IP addresses are public: the outbound policy calls only those (unless allowed).

The standard library's ``is_global`` is not used: it changes between Python patch
releases, calls multicast global, and does not look inside IPv6 addresses that carry an
IPv4 address -- ``[::ffff:0:7f00:1]``, ``[64:ff9b::a9fe:a9fe]`` or ``[2002:7f00:1::1]``
reach 127.0.0.1 or the cloud metadata service through the kernel or a translator as
surely as the IPv4 address does. So those forms are decoded and judged by the IPv4 they
carry, and the rest of IPv6 is public only inside global unicast (2000::/3), less the
special-purpose ranges of the IANA registries.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(network), kind) for network, kind in rows)


# Every IPv4 range that is not globally reachable, with the word the refusal uses.
_IPV4_NOT_PUBLIC = _table(
    ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    # Its two anycast exceptions (PCP, TURN) are no place for a job's call either.
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

# The IPv6 ranges refused as they are; first match names the kind (specific before general).
_IPV6_NOT_PUBLIC = _table(
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("64:ff9b:1::/48", "local-use NAT64 (not globally reachable)"),
    ("100::/64", "discard-only"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    # The rest of it (anycast PCP and TURN, AMT, AS112, DRIP) is no place for a job's call.
    ("2001::/23", "IETF protocol assignment"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (private)"),
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST = IPv6Network("2000::/3")

_COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d (:: and ::1 aside)
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # SIIT IPv4-translated ::ffff:0:a.b.c.d
_NAT64 = IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix; a translator calls the IPv4
_SIX_TO_FOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")


def embedded_ipv4(ip: IPv6Address) -> tuple[str, tuple[IPv4Address, ...]] | None:
    """The IPv4 addresses an IPv6 address carries, with the name of the form; None for
    an address that carries none. Teredo carries two (its server's and its client's)."""
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", (ip.ipv4_mapped,)
    if ip in _TRANSLATED:
        return "IPv4-translated", (low32,)
    if ip in _NAT64:
        return "NAT64", (low32,)
    if ip in _COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", (low32,)
    if ip.sixtofour is not None:
        return "6to4", (ip.sixtofour,)
    if ip.teredo is not None:
        return "Teredo", ip.teredo
    return None


def _kind(ip: IPAddress) -> str | None:
    """The kind of non-public address ``ip`` is by its own range (nothing decoded)."""
    table = _IPV4_NOT_PUBLIC if isinstance(ip, IPv4Address) else _IPV6_NOT_PUBLIC
    for network, kind in table:
        if ip in network:
            return kind
    if isinstance(ip, IPv6Address) and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiouAEIOU" else "a"


def non_public(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why calls to ``ip`` are refused ("a loopback address", "which embeds 127.0.0.1
    (NAT64), a loopback address"), or None when it is public or inside ``allowed``.

    An IPv6 address that carries IPv4 addresses is judged by them: each must be public or
    allowed (a listed ``10.0.0.0/8`` lets a NAT64 form of 10.1.2.3 through, as it would
    the address itself).
    """
    if any(ip in network for network in allowed):
        return None
    embedded = embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
    if embedded is None:
        kind = _kind(ip)
        return None if kind is None else f"{_article(kind)} {kind} address"
    form, carried = embedded
    for inner in carried:
        reason = non_public(inner, allowed)
        if reason is not None:
            return f"which embeds {inner} ({form}), {reason}"
    return None


def is_public(address: str | IPAddress) -> bool:
    """Whether ``address`` is public: globally reachable, and so is any IPv4 it embeds."""
    ip = ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    return non_public(ip) is None
