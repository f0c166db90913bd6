"""Redis store URLs: one parser for every deployment shape, checked once at startup.

Accepted forms (``[user:password@]`` is optional everywhere, percent-encoded)::

    redis://[user:password@]host[:port][/db][?options]
    rediss://[user:password@]host[:port][/db][?options]           TLS
    unix://[user:password@]/path/to/redis.sock[?db=N&options]
    redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db][?options]
    redis+cluster://[user:password@]host:port[,host:port...][?options]

``rediss+sentinel://`` and ``rediss+cluster://`` are the TLS variants.
Options: ``timeout`` (seconds per command and per connect), ``max_connections``,
``failover_timeout`` (sentinel and cluster: how long a call keeps retrying
while a new primary is elected), ``sentinel_password`` / ``sentinel_username``
(when the sentinels have their own credentials), ``wait_replicas`` (one
server or sentinel: every write WAITs until that many replicas acknowledged
it, else it fails or, under a sentinel, is retried on the new primary), and with TLS ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (required, optional,
none) and ``ssl_check_hostname`` (true, false).

Pure parsing, no redis-py import: a bad URL is refused even where the
``redis`` extra is not installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

__all__ = ["RedisURL", "parse_redis_url", "REDIS_SCHEMES", "DEFAULT_REDIS_PORT", "DEFAULT_SENTINEL_PORT"]

DEFAULT_REDIS_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

Mode = Literal["single", "unix", "sentinel", "cluster"]

# scheme -> (mode, TLS)
REDIS_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}

_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_CERT_REQS = ("required", "optional", "none")
_OPTIONS: dict[Mode, tuple[str, ...]] = {
    "single": ("timeout", "max_connections", "wait_replicas", *_TLS_OPTIONS),
    "unix": ("timeout", "max_connections", "wait_replicas", "db"),
    "sentinel": (
        "timeout",
        "wait_replicas",
        "max_connections",
        "failover_timeout",
        "sentinel_username",
        "sentinel_password",
        *_TLS_OPTIONS,
    ),
    "cluster": ("timeout", "max_connections", "failover_timeout", *_TLS_OPTIONS),
}
_SECRET_OPTIONS = ("sentinel_password",)


@dataclass(frozen=True)
class RedisURL:
    mode: Mode
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # empty for unix sockets
    path: str | None = None  # the unix socket
    db: int = 0
    service: str | None = None  # the sentinel's master name
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict, repr=False)

    def shown(self) -> str:
        """The URL for messages and logs: no credentials, no secret options."""
        scheme = next(name for name, shape in REDIS_SCHEMES.items() if shape == (self.mode, self.tls))
        if self.mode == "unix":
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db else "")
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        if self.mode == "cluster":
            return f"{scheme}://{hosts}"
        if self.mode == "sentinel":
            return f"{scheme}://{hosts}/{self.service}/{self.db}"
        return f"{scheme}://{hosts}/{self.db}"

    def __str__(self) -> str:
        return self.shown()

    def float_option(self, name: str, default: float) -> float:
        value = self.options.get(name)
        return default if value is None else float(value)

    def int_option(self, name: str) -> int | None:
        value = self.options.get(name)
        return None if value is None else int(value)


def parse_redis_url(url: str) -> RedisURL:
    """Parse a store URL of one of the forms above; ``ValueError`` (never echoing a secret) otherwise."""
    scheme, sep, rest = url.partition("://")
    shape = REDIS_SCHEMES.get(scheme.lower()) if sep else None
    if shape is None:
        raise ValueError(f"not a Redis store URL: {_redact(url)!r}")
    mode, tls = shape
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError(f"Redis store URL must not have a #fragment: {_redact(url)!r}")
    rest, _, query = rest.partition("?")
    options = _options(query, mode, tls, url)
    if mode == "unix":
        userinfo, at, path = rest.rpartition("@")
        if not at:
            userinfo = ""
        username, password = _credentials(userinfo)
        path = unquote(path)
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"unix Redis store URL needs an absolute socket path, like unix:///run/redis.sock: {_redact(url)!r}")
        db = _db(options.pop("db", "0"), url)
        return RedisURL("unix", False, path=path, db=db, username=username, password=password, options=options)
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo = ""
    username, password = _credentials(userinfo)
    default_port = DEFAULT_SENTINEL_PORT if mode == "sentinel" else DEFAULT_REDIS_PORT
    nodes = tuple(_node(host, default_port, url) for host in hosts.split(","))
    segments = [unquote(s) for s in path.split("/")] if path else []
    service: str | None = None
    db = 0
    if mode == "sentinel":
        if not segments or not segments[0]:
            raise ValueError(
                "sentinel Redis store URL needs the master's service name, like"
                f" redis+sentinel://host:26379/mymaster/0: {_redact(url)!r}"
            )
        service = segments[0]
        segments = segments[1:]
    if len(segments) > 1:
        raise ValueError(f"Redis store URL has too many path segments: {_redact(url)!r}")
    if segments and segments[0]:
        db = _db(segments[0], url)
    if mode == "cluster" and db != 0:
        raise ValueError(f"Redis Cluster store URL can only name database 0: {_redact(url)!r}")
    if mode == "single" and len(nodes) != 1:
        raise ValueError(
            f"Redis store URL names {len(nodes)} hosts; use redis+sentinel:// or redis+cluster:// for several:"
            f" {_redact(url)!r}"
        )
    return RedisURL(
        mode, tls, nodes=nodes, db=db, service=service, username=username, password=password, options=options
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon and password else None)


def _node(text: str, default_port: int, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"Redis store URL has a malformed IPv6 host: {_redact(url)!r}")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"Redis store URL needs a host: {_redact(url)!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Redis store URL has an invalid port {port_text!r}: {_redact(url)!r}")
    return host, int(port_text)


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise ValueError(f"Redis store URL database must be a number: {_redact(url)!r}")
    return int(text)


def _options(query: str, mode: Mode, tls: bool, url: str) -> dict[str, str]:
    options: dict[str, str] = {}
    allowed = _OPTIONS[mode]
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name in options:
            raise ValueError(f"Redis store URL repeats the option {name!r}: {_redact(url)!r}")
        if name not in allowed:
            raise ValueError(
                f"Redis store URL option {name!r} is not known for {mode} mode"
                f" (known: {', '.join(allowed)}): {_redact(url)!r}"
            )
        if name in _TLS_OPTIONS and not tls:
            raise ValueError(f"Redis store URL option {name!r} needs TLS (rediss://): {_redact(url)!r}")
        options[name] = value
    for name in ("timeout", "failover_timeout"):
        if name in options:
            try:
                number = float(options[name])
            except ValueError:
                number = math.nan
            if not (number > 0 and math.isfinite(number)):
                raise ValueError(f"Redis store URL option {name} must be a positive number of seconds: {_redact(url)!r}")
    if "max_connections" in options and not (options["max_connections"].isdigit() and int(options["max_connections"]) > 0):
        raise ValueError(f"Redis store URL option max_connections must be a positive integer: {_redact(url)!r}")
    if "wait_replicas" in options and not options["wait_replicas"].isdigit():
        raise ValueError(f"Redis store URL option wait_replicas must be a whole number: {_redact(url)!r}")
    if "ssl_cert_reqs" in options and options["ssl_cert_reqs"] not in _CERT_REQS:
        raise ValueError(f"Redis store URL option ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}: {_redact(url)!r}")
    if "ssl_check_hostname" in options and options["ssl_check_hostname"] not in ("true", "false"):
        raise ValueError(f"Redis store URL option ssl_check_hostname must be true or false: {_redact(url)!r}")
    return options


def _redact(url: str) -> str:
    """The URL without anything that may be a secret: userinfo and secret options go."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    if "@" in path:  # unix://user:pass@/path
        path = "***@" + path.rpartition("@")[2]
    shown = f"{scheme}://{netloc}{slash}{path}"
    if query:
        pairs = [
            f"{name}=***" if name in _SECRET_OPTIONS else f"{name}={value}"
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        shown += "?" + "&".join(pairs)
    return shown
