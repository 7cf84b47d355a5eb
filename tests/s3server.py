"""A real S3-compatible server for the tests: moto's server mode on 127.0.0.1, in its own process.

The tests talk to it over HTTP through s3fs and botocore, exactly as they would to a bucket on
AWS (no patched boto calls). `S3Server.start()` picks a free port, waits until the server
answers, and points the AWS environment variables at it; `stop()` ends only that process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

ENV = {
    "AWS_ACCESS_KEY_ID": "hygiene-test",
    "AWS_SECRET_ACCESS_KEY": "hygiene-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """One moto server process and the environment that points clients at it."""

    port: int
    process: subprocess.Popen
    saved: dict = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, timeout: float = 30.0, authenticate: bool = False) -> "S3Server":
        """`authenticate`: check every request's credentials (moto's IAM mode), so that this
        module's test keys are refused like unknown keys on a real store."""
        port = _free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if authenticate else None
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        server = cls(port, proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        server._point_clients()
        return server

    def _point_clients(self) -> None:
        env = {**ENV, "AWS_ENDPOINT_URL": self.endpoint}
        self.saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        _forget_filesystems()

    def env(self) -> dict:
        """The variables a child process needs to reach this server."""
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def reset(self) -> None:
        """Remove every bucket (moto's reset API)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
        _forget_filesystems()

    def stop(self) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_filesystems()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _forget_filesystems() -> None:
    """fsspec caches filesystem instances (and their listings): start from fresh ones."""
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass
