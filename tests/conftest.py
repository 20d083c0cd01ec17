from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.origin import Origin


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    server = Origin(tmp_path / "origin").start()
    yield server
    server.stop()
