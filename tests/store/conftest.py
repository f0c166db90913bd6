"""Store fixtures: every contract test runs on memory, SQLite in tmp_path, and real
redis-servers: plain TCP, TLS, unix socket, a 3-node cluster and a sentinel-managed primary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from redis_modes import (
    Sentinel,
    TLSFiles,
    cluster,
    command_on,
    make_tls_files,
    sentinel_setup,
    tls_connector,
    tls_server,
    unix_connector,
    unix_server,
)
from store_support import Opener, redis_command, redis_server

from compat_asgi.store import DEFAULT_MAX_ENTRIES, DEFAULT_TTL, Store, open_store

REDIS_MODES = ["redis", "redis-tls", "redis-unix", "redis-cluster", "redis-sentinel"]


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A throwaway redis-server on 127.0.0.1 shared by the session; each test flushes it."""
    with redis_server() as port:
        yield port


@pytest.fixture
def redis_url(redis_port: int) -> str:
    redis_command(redis_port, "FLUSHALL")
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def redis_tls_port(tls_files: TLSFiles) -> Iterator[int]:
    with tls_server(tls_files) as port:
        yield port


def tls_url(port: int, files: TLSFiles, *, db: int = 0) -> str:
    return (
        f"rediss://127.0.0.1:{port}/{db}?ssl_ca_certs={quote(str(files.ca))}"
        f"&ssl_certfile={quote(str(files.client_cert))}&ssl_keyfile={quote(str(files.client_key))}"
        # Few connections: each TLS handshake with a client certificate costs milliseconds.
        "&max_connections=8"
    )


@pytest.fixture
def redis_tls_url(redis_tls_port: int, tls_files: TLSFiles) -> str:
    command_on(tls_connector(redis_tls_port, tls_files), "FLUSHALL")
    return tls_url(redis_tls_port, tls_files)


@pytest.fixture(scope="session")
def redis_unix_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with unix_server(tmp_path_factory.mktemp("unix") / "redis.sock") as path:
        yield path


@pytest.fixture
def redis_unix_url(redis_unix_path: Path) -> str:
    command_on(unix_connector(redis_unix_path), "FLUSHALL")
    return f"unix://{redis_unix_path}?db=0"


@pytest.fixture(scope="session")
def redis_cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with cluster(tmp_path_factory.mktemp("cluster")) as ports:
        yield ports


@pytest.fixture
def redis_cluster_url(redis_cluster_ports: list[int]) -> str:
    for port in redis_cluster_ports:
        redis_command(port, "FLUSHALL")
    # Two of the three as startup nodes: the client learns the rest from the cluster.
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in redis_cluster_ports[:2])


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinel]:
    with sentinel_setup(tmp_path_factory.mktemp("sentinel")) as sentinel:
        yield sentinel


@pytest.fixture
def redis_sentinel_url(redis_sentinel: Sentinel) -> str:
    # Whichever node is the primary now (a failover test may have moved it).
    redis_command(redis_sentinel.primary(), "FLUSHALL")
    return redis_sentinel.url()


@pytest.fixture(params=["memory", "sqlite", *REDIS_MODES])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param.startswith("redis"):
        url: str = request.getfixturevalue(request.param.replace("-", "_") + "_url")
        return url
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return "memory"


@pytest.fixture
def opener(backend: str) -> Opener:
    def open_(*, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float | None = DEFAULT_TTL) -> Store:
        return open_store(backend, max_entries=max_entries, ttl=ttl)

    return open_
