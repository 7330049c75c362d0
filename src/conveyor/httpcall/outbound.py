"""Outbound safety: allow/deny host lists, and no calls to non-public addresses after DNS
(:mod:`.addresses` says which are public)."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from ..errors import Fail
from .addresses import non_public
from .settings import HttpCallSettings


class OutboundRefused(Fail):
    """The URL's host is denied, or resolves to an address that is not allowed."""


def _matches(host: str, patterns: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower().rstrip(".")) for pattern in patterns)


class OutboundPolicy:
    """The allow/deny host lists and the address check, applied after DNS resolution."""

    def __init__(self, settings: HttpCallSettings) -> None:
        self.settings = settings
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_networks]

    def check_host(self, host: str) -> None:
        if _matches(host, self.settings.deny_hosts):
            raise OutboundRefused(f"host {host!r} is on the deny list (CONVEYOR_HTTP_DENY_HOSTS)")
        if self.settings.allow_hosts and not _matches(host, self.settings.allow_hosts):
            raise OutboundRefused(f"host {host!r} is not on the allow list (CONVEYOR_HTTP_ALLOW_HOSTS)")

    def check_address(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the same address to the kernel: named as such in the refusal
        reason = non_public(ip, self._networks)
        if reason is not None:
            raise OutboundRefused(
                f"host {host!r} resolves to {ip}, {reason}; calls there are refused "
                "unless its network is listed in CONVEYOR_HTTP_ALLOW_NETWORKS"
            )

    def check_url(self, url: str) -> None:
        """The checks that can be made before connecting: the host lists, and the address
        when the URL names one (names are checked by :class:`CheckingResolver`)."""
        host = urlsplit(url).hostname or ""
        self.check_host(host)
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        self.check_address(host, str(literal))


class CheckingResolver(AbstractResolver):
    """DNS resolution that refuses answers the policy does not allow.

    The connector connects only to addresses this returned, so the address that was
    checked is the address that is called: a name whose DNS answer changes between a
    check and the connection (DNS rebinding) cannot steer a call to a private address.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:  # every answer must pass: no mixing public and private
            self.policy.check_address(host, answer["host"])
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _refusal(exc: BaseException) -> OutboundRefused | None:
    """The policy's refusal inside an aiohttp error (it wraps what the resolver raised)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, OutboundRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
