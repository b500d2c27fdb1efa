"""``ledger serve`` started as a user starts it, for the proxy's tests and the benchmark: a
subprocess on a free loopback port in front of an upstream (the simulator), its output in a
log file, stopped with SIGTERM (or killed) afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

#: The upstream key the proxies under test send: it must never come back out of them.
UPSTREAM_KEY = "sk-runapi-UPSTREAM-7f3a9c0e5b2d4e6f8a1b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proxy:
    """A running ``ledger serve``."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the proxy (its whole process group) and wait for it; its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)


def serve_command(db_url: str, upstream: str, port: int, args: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "ledger", "--db", db_url, "serve", "--port", str(port),
            "--upstream", upstream, *args]


@contextmanager
def running_proxy(db_url: str, upstream: str, log_dir: Path, *, args: Sequence[str] = (),
                  env: dict[str, str] | None = None, ready_timeout: float = 60) -> Iterator[Proxy]:
    """``ledger serve`` on a free port, ready (``/healthz`` answers) when this yields."""
    port = free_port()
    log = log_dir / f"proxy-{port}.log"
    full_env = {**os.environ, "RUNAPI_API_KEY": UPSTREAM_KEY, "PYTHONUNBUFFERED": "1",
                **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(db_url, upstream, port, args), stdout=out,
                                stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    proxy = Proxy(proc, port, log)
    try:
        wait_ready(proxy, ready_timeout)
        yield proxy
    finally:
        proxy.stop()


def wait_ready(proxy: Proxy, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proxy.proc.poll() is not None:
            raise RuntimeError(f"ledger serve exited with {proxy.proc.returncode}:\n"
                               f"{proxy.output()}")
        try:
            if httpx.get(proxy.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"ledger serve did not become ready:\n{proxy.output()}")
        time.sleep(0.05)  # polling a starting process: there is no event to wait on
