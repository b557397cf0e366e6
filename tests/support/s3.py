"""A real S3 API on loopback for the object-storage tests: moto's server mode.

``moto_server -H 127.0.0.1 -p PORT`` (``moto[server]``, in the ``test`` extra) speaks the
S3 REST API over HTTP; pyarrow's ``S3FileSystem`` talks to it as to AWS. Started once per
test run (:func:`start_moto`); ``strict=True`` starts one that refuses every credential
(moto's IAM authentication, ``INITIAL_NO_AUTH_ACTION_COUNT=0``), for the refused-credential
test. The server can be stopped and started again on the same port (a network fault).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.broker import free_ports

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"


def find_moto() -> str:
    found = Path(sys.executable).with_name("moto_server")
    if found.exists():
        return str(found)
    tool = shutil.which("moto_server")
    if tool is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]' (the test extra has it)")
    return tool


@dataclass
class Moto:
    """One moto server process on 127.0.0.1:``port``."""

    port: int
    strict: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Moto:
        env = dict(os.environ)
        if self.strict:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.process = subprocess.Popen([find_moto(), "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start within 30 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def env(self, **extra: str) -> dict[str, str]:
        """The variables a CLI run needs to reach this server."""
        values = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                  "AWS_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                  "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        values.update(extra)
        return values

    def filesystem(self) -> object:
        """A pyarrow ``S3FileSystem`` on this server (for checking what is stored)."""
        from pyarrow import fs  # type: ignore[import-untyped]

        return fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1",
                               endpoint_override=self.endpoint, scheme="http", allow_bucket_creation=True,
                               allow_bucket_deletion=True)

    def new_bucket(self) -> str:
        """A fresh bucket (each test its own: no test sees another's objects)."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)  # type: ignore[attr-defined]
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``, sorted."""
        from pyarrow import fs

        selector = fs.FileSelector(bucket, recursive=True, allow_not_found=True)
        infos = self.filesystem().get_file_info(selector)  # type: ignore[attr-defined]
        return sorted(info.path[len(bucket) + 1:] for info in infos if info.type == fs.FileType.File)


def duckdb_on(moto: Moto) -> Any:
    """A DuckDB connection whose ``s3://`` URLs reach ``moto``: DuckDB's own S3 support
    (the httpfs extension) is downloaded on first use and cannot be had offline, so pyarrow's
    S3 filesystem is handed to DuckDB through fsspec (``register_filesystem``); the SQL is
    the one a user runs against S3 with httpfs."""
    import duckdb
    from fsspec.implementations.arrow import ArrowFSWrapper

    class S3(ArrowFSWrapper):  # type: ignore[misc]
        protocol = "s3"

    connection = duckdb.connect()
    connection.register_filesystem(S3(moto.filesystem()))
    return connection


def start_moto(*, strict: bool = False, port: int | None = None) -> Moto:
    return Moto(port or free_ports(1)[0], strict=strict).start()
