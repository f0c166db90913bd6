"""Child processes for the benchmarks: start, wait until they answer, read RSS, stop.

Every process is started by us, tracked by its pid, and stopped (SIGINT, then
SIGKILL after a grace period) by :meth:`Server.stop`, which the context
manager and an ``atexit`` hook both call, so an error never leaves one behind.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["REPO", "Server", "connections_to", "cpu_seconds", "free_port", "rss_bytes", "wait_http"]

REPO = Path(__file__).resolve().parent.parent
#: Extra arguments for every ``benchmarks.serve`` process (``--loop``/``--http``).
SERVER_ARGS: list[str] = []
_LIVE: set[subprocess.Popen[bytes]] = set()


def _stop_all() -> None:
    for proc in list(_LIVE):
        _stop(proc, grace=2.0)


atexit.register(_stop_all)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    port: int,
    path: str = "/health",
    *,
    deadline: float,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.002,
) -> float:
    """Poll ``GET path`` on 127.0.0.1:port until any HTTP response arrives; return the time it did."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(request)
                if sock.recv(16).startswith(b"HTTP/1."):
                    return time.perf_counter()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on 127.0.0.1:{port} in time")
        time.sleep(interval)


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes, from /proc (Linux)."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    _LIVE.discard(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Server:
    """A child process serving HTTP on 127.0.0.1:``port``."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        *,
        ready_path: str = "/health",
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        _LIVE.add(self.proc)
        try:
            self.ready_at = wait_http(port, ready_path, deadline=time.monotonic() + timeout, proc=self.proc)
        except BaseException as exc:
            self.stop()
            raise RuntimeError(f"{' '.join(argv[1:])}: {exc}\n{self.output()[-2000:]}") from None

    @classmethod
    def bench(cls, kind: str, *extra: str) -> Server:
        port = free_port()
        return cls(
            [sys.executable, "-m", "benchmarks.serve", kind, "--port", str(port), *SERVER_ARGS, *extra], port
        )

    @property
    def startup_seconds(self) -> float:
        return self.ready_at - self.started_at

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> tuple[int, int]:
        return rss_bytes(self.proc.pid)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self, grace: float = 10.0) -> None:
        _stop(self.proc, grace)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if kind is not None and kind is not KeyboardInterrupt:
            tail = self.output()[-2000:]
            if tail.strip():
                print(f"--- output of {' '.join(self.proc.args[1:4])} ---\n{tail}", file=sys.stderr)
        self._log.close()


def connections_to(pid: int, port: int) -> int:
    """TCP connections that process ``pid`` holds open to 127.0.0.1:``port`` (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            established = fields[3] == "01"
            if established and remote_port == port and fields[9] in inodes:
                count += 1
    return count
