"""A real S3-compatible server for the tests: moto's server mode on 127.0.0.1, in its own process.

The tests talk to it over HTTP through s3fs and botocore, exactly as they would to a bucket on
AWS (no patched boto calls). `S3Server.start()` picks a free port, waits until the server
answers, and points the AWS environment variables at it; `stop()` ends only that process.
The GCS and Azure servers are in tests/storeservers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from tests.storeservers import EnvServer, forget_filesystems, free_port, wait_until_answering

ENV = {
    "AWS_ACCESS_KEY_ID": "hygiene-test",
    "AWS_SECRET_ACCESS_KEY": "hygiene-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server(EnvServer):
    """One moto server process and the environment that points clients at it."""

    @classmethod
    def start(cls, timeout: float = 30.0, authenticate: bool = False) -> "S3Server":
        """`authenticate`: check every request's credentials (moto's IAM mode), so that this
        module's test keys are refused like unknown keys on a real store."""
        port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if authenticate else None
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        server = cls(port, proc)
        wait_until_answering(f"{server.endpoint}/moto-api/", proc, "moto S3 server", timeout)
        server._point_clients()
        return server

    def env(self) -> dict:
        """The variables a child process needs to reach this server."""
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def reset(self) -> None:
        """Remove every bucket (moto's reset API)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
        forget_filesystems()
