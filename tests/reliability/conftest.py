"""Fixtures of the fault tests: a 3-node cluster on loopback (workers: tests/conftest.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three nats-servers on loopback, each with its own store; stopped by pid at the end."""
    base = Path(tempfile.mkdtemp(prefix="onemanage-cluster-"))
    nodes = Cluster(base)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(base, ignore_errors=True)
