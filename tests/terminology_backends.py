"""The stores the concept-store tests run on: a real SQLite file, and the MongoDB store on
tests/mongo_async.py (mongomock behind an async facade: no MongoDB server can run here;
transactions emulated without isolation), plus a real MongoDB when
FHIR_FUSION_TEST_MONGODB names one. Import `store` into a test module to run its tests
on each: the shared `client` fixture (conftest.py) then serves the same store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage_backends import BACKENDS, close_backend, open_backend


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    opened, token = await open_backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        await close_backend(opened, token)
