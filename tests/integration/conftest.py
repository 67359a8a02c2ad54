"""Fixtures the multi-process tests share: child processes killed by pid at the end, and a
partitionable network of proxies in front of them."""

from collections.abc import Iterator

import pytest

from tests.harness import Network, Processes


@pytest.fixture
def procs() -> Iterator[Processes]:
    with Processes() as started:
        yield started


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net
