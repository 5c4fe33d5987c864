"""The scene tests' intelligibility check (tests/support/intelligibility.word_overlap)."""

from __future__ import annotations

import pytest

from tests.support.intelligibility import word_overlap

pytestmark = pytest.mark.unit


def test_a_word_heard_split_or_nearly_spelled_counts():
    assert word_overlap("Certainly.", "certain way.") == 1.0  # seen in a fresh-clone run
    assert word_overlap("Aye, the longsword costs ten gold.", "Aye the long sword costs 10 gold") >= 0.8


def test_garbage_audio_still_fails():
    assert word_overlap("Certainly.", "") == 0.0
    assert word_overlap("The bandits took the north road.", "Thank you for watching.") < 0.5
