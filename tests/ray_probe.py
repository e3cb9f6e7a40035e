"""What a network neighbour sees of a local Ray: listening sockets, and whether they demand the token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import psutil

# Real methods of the gRPC services Ray runs (GCS, raylet, core workers, Serve replicas): an
# unauthenticated call is refused before the method runs; an unknown method would say nothing.
PROBE_METHODS = (
    "/ray.serve.ASGIService/HandleRequest",
    "/ray.rpc.CoreWorkerService/NumPendingTasks",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
)


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int
    name: str


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listeners(processes: list[psutil.Process]) -> list[Listener]:
    """Every TCP socket in LISTEN state held by ``processes``."""
    out = []
    for p in processes:
        try:
            conns = p.net_connections(kind="tcp")
            name = " ".join(p.cmdline())[:80]
        except psutil.NoSuchProcess:
            continue  # a worker that exited meanwhile listens on nothing
        out.extend(
            Listener(c.laddr.ip, c.laddr.port, p.pid, name) for c in conns if c.status == psutil.CONN_LISTEN
        )
    return out


def neighbour_address() -> str:
    """An address of this machine that is not loopback (what a neighbour would connect to), else 127.0.0.1."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not is_loopback(a.address):
                return a.address
    return "127.0.0.1"


def grpc_codes(host: str, port: int, token: str | None) -> dict[str, str]:
    """Status code of each probe method called on ``host:port`` (with ``Authorization: Bearer token``)."""
    import grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    codes = {}
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in PROBE_METHODS:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(b"", timeout=10, metadata=metadata)
                codes[method] = "OK"
            except grpc.RpcError as e:
                codes[method] = e.code().name
    return codes


def authenticated(host: str, port: int, token: str) -> tuple[bool, dict[str, str], dict[str, str]]:
    """Does ``host:port`` refuse a Ray RPC without the token and take it with the token?"""
    without, with_token = grpc_codes(host, port, None), grpc_codes(host, port, token)
    refused = [m for m, code in without.items() if code == "UNAUTHENTICATED"]
    ok = (
        bool(refused)
        and "OK" not in without.values()
        and all(with_token[m] != "UNAUTHENTICATED" for m in refused)
    )
    return ok, without, with_token
