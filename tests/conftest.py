from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, start_mosquitto
from tests.support.s3 import Moto, start_moto


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One private mosquitto for the whole run (fails, never skips, when it cannot start)."""
    instance = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of the test's own, for tests that stop and restart it."""
    instance = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """One moto S3 server (real S3 API over HTTP on loopback) for the whole run."""
    instance = start_moto()
    try:
        yield instance
    finally:
        instance.stop()
