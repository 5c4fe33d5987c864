"""Who may use which verb of session-control's bus API (``nats_api.authorize``), from the
principal the request's subject names (docs/adr/0006)."""

from __future__ import annotations

import pytest

from glyphoxa_session_control.errors import Forbidden
from glyphoxa_session_control.nats_api import EDGE_VERBS, authorize

pytestmark = pytest.mark.unit


def test_stages_may_only_fetch_keys():
    for stage in ("vad", "stt", "npc-brain", "tts"):
        authorize(stage, "secrets.get", "acme", trust_anonymous=False)
        for verb in EDGE_VERBS:
            with pytest.raises(Forbidden, match=f"'{stage}' may not use {verb}"):
                authorize(stage, verb, "acme", trust_anonymous=False)


def test_a_tenants_own_edge_acts_for_its_tenant_only():
    for verb in EDGE_VERBS:
        authorize("edge-acme", verb, "acme", trust_anonymous=False)
        with pytest.raises(Forbidden, match="for tenant 'brine'"):
            authorize("edge-acme", verb, "brine", trust_anonymous=False)
    authorize("edge-acme", "edge.bots", None, trust_anonymous=False)  # bots: its tenant's only
    with pytest.raises(Forbidden):
        authorize("edge-acme", "secrets.get", "acme", trust_anonymous=False)


def test_the_shared_edge_the_operator_and_nobody():
    for verb in EDGE_VERBS:
        authorize("discord-edge", verb, "brine", trust_anonymous=False)
    with pytest.raises(Forbidden):
        authorize("discord-edge", "secrets.get", "brine", trust_anonymous=False)
    authorize("operator", "secrets.get", "acme", trust_anonymous=False)
    authorize("session-control", "session.stop", "acme", trust_anonymous=False)
    # nobody logged in: trusted only where the bus has no authorization at all
    authorize("anonymous", "session.stop", "acme", trust_anonymous=True)
    with pytest.raises(Forbidden):
        authorize("anonymous", "session.stop", "acme", trust_anonymous=False)
    with pytest.raises(Forbidden):
        authorize("intruder", "session.get", "acme", trust_anonymous=False)
