"""Refusing to fetch from private, loopback and link-local addresses.

A crawler that follows links from the open web must not be steered into the network it runs in
(a cloud metadata endpoint at 169.254.169.254, an admin page on 10.0.0.1). The check runs on
the addresses a host name resolves to, at the moment of connecting: :class:`GuardedBackend`
is the network layer of the HTTP client, so every connection (the first request, each redirect,
robots.txt) is checked after DNS resolution and connects to exactly the address it checked, so
a DNS answer that changes between check and connect cannot slip through.

Networks listed in ``allow_networks`` are exempt (tests allow 127.0.0.0/8 for their loopback
server).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpcore

__all__ = ["AddressPolicy", "AddressRefused", "GuardedBackend"]


class AddressRefused(Exception):
    """A host resolves to an address the crawl may not fetch from."""


class AddressPolicy:
    """Which resolved addresses may be connected to."""

    def __init__(self, allow_networks: Iterable[str] = ()):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allow_networks]

    def refusal(self, address: str) -> str | None:
        """Why an address is refused (private, loopback, link-local, ...), or None."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return None
        for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
            if getattr(ip, f"is_{kind}"):
                return kind
        if not ip.is_global:  # shared address space (100.64/10) and the like
            return "not_global"
        return None

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` the crawl may use; raises AddressRefused if any is refused
        (a name with one private address among public ones is a rebinding trick)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for address in addresses:
            reason = self.refusal(address)
            if reason:
                raise AddressRefused(f"{host} resolves to {address} ({reason})")
        return addresses


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options=None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the host's next address
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address for {host}")
