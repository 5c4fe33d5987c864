"""Fixtures of the stt unit tests (helpers live in stt_helpers.py)."""

from __future__ import annotations

import pytest

from glyphoxa_bus.session import SessionContext
from glyphoxa_events.subjects import SessionSubjects
from tests.unit.stt.stt_helpers import SESSION, TENANT, FakePublisher, Rejections, VadFeed


@pytest.fixture
def subjects() -> SessionSubjects:
    return SessionSubjects(TENANT, SESSION)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def rejections() -> Rejections:
    return Rejections()


@pytest.fixture
def ctx(subjects: SessionSubjects, publisher: FakePublisher, rejections: Rejections) -> SessionContext:
    return SessionContext("stt", subjects, nc=None, publisher=publisher,  # type: ignore[arg-type]
                          metrics_rejected=rejections.counter)


@pytest.fixture
def feed(subjects: SessionSubjects) -> VadFeed:
    return VadFeed(subjects)


