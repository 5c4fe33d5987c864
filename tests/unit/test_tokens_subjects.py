import pytest

from glyphoxa_events.subjects import (
    SessionSubjects,
    claim_subject,
    parse_claim_subject,
    parse_subject,
)
from glyphoxa_events.tokens import InvalidToken, slugify, validate_token

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("good", ["a", "t1", "table-7", "alex_2", "0", "a" * 64])
def test_valid_tokens(good):
    assert validate_token(good) == good


@pytest.mark.parametrize("bad", ["", "A", "a.b", "a*", ">", "a b", "-a", "_a", "a" * 65, "ä", None, 7,
                                 "a\nb", "tenant.>"])
def test_invalid_tokens_are_rejected(bad):
    with pytest.raises(InvalidToken):
        validate_token(bad)


def test_subjects_are_built_from_valid_tokens_only():
    s = SessionSubjects("t1", "s1")
    assert s.audio_in("alex") == "glx.t1.s1.audio.in.alex"
    assert s.audio_out("*") == "glx.t1.s1.audio.out.*"
    assert s.ctl("turn") == "glx.t1.s1.ctl.turn"
    with pytest.raises(InvalidToken):
        SessionSubjects("t1", "s1.>")
    with pytest.raises(InvalidToken):
        s.reply("greta.>")


def test_parse_subject_rejects_injection():
    p = parse_subject("glx.t1.s1.audio.in.alex")
    assert (p.tenant, p.session, p.kind, p.leaf) == ("t1", "s1", "audio", "alex")
    for bad in ("glx.T1.s1.audio.in.alex", "nope.t1.s1.audio", "glx.t1.s1.weird.x", "glx.t1"):
        with pytest.raises(InvalidToken):
            parse_subject(bad)


def test_usage_subjects():
    s = SessionSubjects("t1", "s1")
    assert s.usage("npc-brain") == "glx.t1.s1.usage.npc-brain"
    assert s.usage() == "glx.t1.s1.usage.*"
    p = parse_subject("glx.t1.s1.usage.stt")
    assert (p.kind, p.leaf) == ("usage", "stt")
    with pytest.raises(InvalidToken):
        s.usage("stt.>")
    with pytest.raises(InvalidToken):
        parse_subject("glx.t1.s1.usage.Stt")


def test_claim_subjects_round_trip():
    subject = claim_subject("npc-brain", "t1", "s1")
    assert subject == "glxwork.npc-brain.t1.s1"
    assert parse_claim_subject(subject) == ("npc-brain", "t1", "s1")
    with pytest.raises(ValueError):
        claim_subject("nope", "t1", "s1")
    with pytest.raises(InvalidToken):
        parse_claim_subject("glxwork.stt.t1.S1")


def test_slugify_names():
    assert slugify("Captain Voss") == "captain-voss"
    assert slugify("Mirëla") == "mirela"
    with pytest.raises(InvalidToken):
        slugify("!!!")
