"""Real redis-server deployments for the store tests: TLS, unix socket, a 3-node
cluster, and a primary with one replica under a sentinel.

Everything binds 127.0.0.1 on free ports, lives in a temporary directory, is
waited for with a deadline, and is terminated on exit.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from redis_support import (
    REDIS_START_TIMEOUT,
    free_port,
    redis_command,
    redis_server_binary,
)
from support import free_ports

__all__ = [
    "TLSFiles",
    "make_tls_files",
    "tls_server",
    "unix_server",
    "cluster",
    "Sentinel",
    "sentinel_setup",
    "wait_until",
    "tls_connector",
    "unix_connector",
    "command_on",
]

CLUSTER_START_TIMEOUT = 20.0


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _encode(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)


def command_on(connect: Callable[[], socket.socket], *args: str) -> bytes:
    """One command over a socket ``connect`` opens (TCP, TLS or unix)."""
    with connect() as sock:
        sock.sendall(_encode(*args))
        return sock.recv(1 << 16)


@contextlib.contextmanager
def _process(args: list[str], ready: Callable[[], bool], what: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def alive_and_ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}: {' '.join(args)}")
            return ready()

        wait_until(alive_and_ready, REDIS_START_TIMEOUT, what)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_BASE = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


# TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """A self-signed CA, and a server and a client certificate it signed (for 127.0.0.1/localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("compat-asgi test CA"))
        .issuer_name(name("compat-asgi test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    files = TLSFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH)
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, files.server_key)
    client_cert, client_key = leaf("compat-asgi client", ExtendedKeyUsageOID.CLIENT_AUTH)
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(client_key, files.client_key)
    return files


def tls_connector(port: int, files: TLSFiles) -> Callable[[], socket.socket]:
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))

    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=2)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    return connect


@contextlib.contextmanager
def tls_server(files: TLSFiles) -> Iterator[int]:
    """redis-server speaking only TLS, requiring a client certificate from the same CA; yields the port."""
    port = free_port()
    args = [
        redis_server_binary(),
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "yes",
        *_BASE,
    ]  # fmt: skip
    connect = tls_connector(port, files)
    with _process(args, lambda: command_on(connect, "PING") == b"+PONG\r\n", "redis-server with TLS"):
        yield port


# Unix socket ---------------------------------------------------------------------------


def unix_connector(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(2)
        sock.connect(str(path))
        return sock

    return connect


@contextlib.contextmanager
def unix_server(path: Path) -> Iterator[Path]:
    """redis-server listening only on a unix socket (mode 0700); yields its path."""
    args = [redis_server_binary(), "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700", *_BASE]
    with _process(args, lambda: command_on(unix_connector(path), "PING") == b"+PONG\r\n", "redis-server on a unix socket"):
        yield path


# Cluster -------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    """The first port the kernel hands out for outgoing connections (32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _cluster_ports(size: int) -> list[int]:
    """``size`` distinct free ports whose cluster bus ports (+10000) are free too.

    Both lie below the kernel's ephemeral range, so no outgoing connection can take one
    between this check and the node binding it, and no node's port is another's bus port.
    """
    rng = random.SystemRandom()
    high = max(_ephemeral_low() - 10000, 20001)
    ports: list[int] = []
    taken: set[int] = set()
    for _ in range(500):
        port = rng.randrange(20000, high)
        if {port, port + 10000} & taken:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        ports.append(port)
        taken |= {port, port + 10000}
        if len(ports) == size:
            return ports
    raise RuntimeError(f"no {size} free pairs of ports for cluster nodes")


@contextlib.contextmanager
def cluster(directory: Path, size: int = 3) -> Iterator[list[int]]:
    """``size`` cluster-enabled redis-servers joined by ``redis-cli --cluster create``; yields their ports."""
    binary = redis_server_binary()
    cli = shutil.which("redis-cli")
    if cli is None:  # a packaging split, not a missing feature: an error, never a skip
        raise RuntimeError("redis-cli is not on PATH (apt-get install redis-tools); the cluster tests need it")
    ports = _cluster_ports(size)
    with contextlib.ExitStack() as stack:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir()
            args = [
                binary,
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--dir", str(node_dir),
                *_BASE,
            ]  # fmt: skip
            stack.enter_context(
                _process(args, lambda p=port: redis_command(p, "PING") == b"+PONG\r\n", "cluster redis-server")  # type: ignore[misc]
            )
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CLUSTER_START_TIMEOUT,
        )
        wait_until(
            lambda: all(b"cluster_state:ok" in redis_command(p, "CLUSTER", "INFO") for p in ports),
            CLUSTER_START_TIMEOUT,
            "the cluster to agree on its slots",
        )
        yield ports


# Sentinel ------------------------------------------------------------------------------


@dataclass
class Sentinel:
    port: int  # the sentinel's
    service: str
    nodes: list[int]  # primary and replica ports, in no particular order

    def primary(self) -> int:
        reply = redis_command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        # *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
        return int(reply.split(b"\r\n")[4])

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/{db}?failover_timeout=30&wait_replicas=1"


def _replica_in_sync(primary: int) -> bool:
    info = redis_command(primary, "INFO", "replication")
    return b"connected_slaves:1" in info and b"state=online" in info


def _sentinel_sees_replica(port: int, service: str) -> bool:
    reply = redis_command(port, "SENTINEL", "REPLICAS", service)
    return b"slave" in reply and b"s_down" not in reply and b"disconnected" not in reply


@contextlib.contextmanager
def sentinel_setup(directory: Path, service: str = "store") -> Iterator[Sentinel]:
    """A primary, one replica and one sentinel watching them (quorum 1, fast timeouts).

    Both refuse writes while no replica is in sync (``min-replicas-to-write
    1``), and the store's URL asks every write to WAIT for one replica
    (``wait_replicas=1``): together no acknowledged write can be lost in a
    failover. A write the old primary took after its replica left is refused
    or unconfirmed, so the store retries it on the new primary, which accepts
    writes again once the old primary has rejoined as its replica. The
    sentinel's publish period is shortened (``SENTINEL DEBUG``) so that the
    rejoin takes about a second, not eight.
    """
    binary = redis_server_binary()
    primary, replica, sentinel = free_ports(3)
    safety = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]
    # Full syncs start at once instead of waiting 5 s for more replicas to join.
    safety += ["--repl-diskless-sync-delay", "0"]
    # A replica writes the RDB it receives to its --dir: keep each in the temporary directory.
    (directory / "primary").mkdir()
    (directory / "replica").mkdir()
    ping = lambda p: lambda: redis_command(p, "PING") == b"+PONG\r\n"
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {sentinel}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {service} 127.0.0.1 {primary} 1\n"
        f"sentinel down-after-milliseconds {service} 1000\n"
        f"sentinel failover-timeout {service} 4000\n"
        f"sentinel parallel-syncs {service} 1\n"
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process([binary, "--port", str(primary), "--dir", str(directory / "primary"), *safety, *_BASE], ping(primary), "primary"))
        stack.enter_context(
            _process(
                [binary, "--port", str(replica), "--replicaof", "127.0.0.1", str(primary), "--dir", str(directory / "replica"), *safety, *_BASE],
                ping(replica),
                "replica",
            )
        )
        wait_until(lambda: _replica_in_sync(primary), REDIS_START_TIMEOUT, "the replica to sync")
        stack.enter_context(_process([binary, str(config), "--sentinel"], ping(sentinel), "sentinel"))
        redis_command(sentinel, "SENTINEL", "DEBUG", "publish-period", "200", "info-period", "200")
        wait_until(lambda: _sentinel_sees_replica(sentinel, service), REDIS_START_TIMEOUT, "the sentinel to see the replica")
        yield Sentinel(sentinel, service, [primary, replica])
