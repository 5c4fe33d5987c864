from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SCENE = ROOT / "examples" / "scenes" / "smithy"
EXAMPLE_CAMPAIGN = ROOT / "examples" / "campaign.yaml"
CORPUS = Path(os.environ.get("GLYPHOXA_CORPUS", ROOT.parent / "shared" / "corpus"))
CORPUS_SCENE = CORPUS / "scenes" / "forge_and_tavern"


def pytest_collection_modifyitems(items):
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
