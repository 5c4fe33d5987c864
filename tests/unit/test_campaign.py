"""The campaign loader: valid files load; every mistake names the field and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from glyphoxa_campaign import Campaign, CampaignError, load_campaign, load_campaign_file

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

VALID = textwrap.dedent("""\
    name: The Copper Kettle
    npcs:
      - name: Greta
        aliases: [the smith]
        persona: >
          You are Greta, a gruff dwarven blacksmith. Answer in one or two short sentences.
        voice:
          provider: piper
          length_scale: 1.1
          pitch: 0.9
          noise_scale: 0.5
      - name: Captain Voss
        persona: You are the captain of the watch.
        address_only: true
        voice:
          provider: espeak
          espeak_voice: en-gb+m3
          rate: 150
    """)


def _problems(text: str) -> list[str]:
    with pytest.raises(CampaignError) as info:
        load_campaign(text, source="test.yaml")
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith("test.yaml: invalid campaign")
    for problem in err.problems:
        assert problem in str(err)
    return err.problems


def _problem(text: str, needle: str) -> str:
    """The one problem that mentions ``needle``."""
    problems = _problems(text)
    hits = [p for p in problems if needle in p]
    assert len(hits) == 1, f"expected one problem about {needle!r}, got {problems}"
    return hits[0]


def _npc_yaml(extra: str = "", voice: str = "", persona: str = "A smith.") -> str:
    """A one-NPC campaign; ``extra`` lines go into the NPC, ``voice`` lines into its voice."""
    lines = ["name: Test", "npcs:", "  - name: Greta", f"    persona: {persona}"]
    lines += [f"    {line}" for line in extra.splitlines()]
    if voice:
        lines.append("    voice:")
        lines += [f"      {line}" for line in voice.splitlines()]
    return "\n".join(lines) + "\n"


# --- valid ------------------------------------------------------------------------------------


def test_valid_campaign_loads() -> None:
    campaign = load_campaign(VALID)
    assert isinstance(campaign, Campaign)
    assert campaign.name == "The Copper Kettle"
    greta, voss = campaign.npcs
    assert greta.name == "Greta" and greta.aliases == ("the smith",)
    assert greta.persona.startswith("You are Greta") and "short sentences" in greta.persona
    assert greta.voice.provider == "piper"
    assert (greta.voice.length_scale, greta.voice.pitch, greta.voice.noise_scale) == (1.1, 0.9, 0.5)
    assert greta.address_only is False
    assert voss.token == "captain-voss" and voss.address_only is True
    assert (voss.voice.provider, voss.voice.espeak_voice, voss.voice.rate) == ("espeak", "en-gb+m3", 150)
    assert campaign.npc("captain-voss") is voss and campaign.npc("nobody") is None
    assert campaign.proper_nouns() == ["Greta", "the smith", "Captain Voss"]


def test_defaults_fill_in_an_npc_without_voice() -> None:
    campaign = load_campaign(_npc_yaml())
    npc = campaign.npcs[0]
    assert npc.aliases == () and npc.voice.pitch == 1.0 and npc.voice.length_scale == 1.0
    assert npc.voice.provider is None


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_campaign_file(path) == load_campaign(VALID)


def test_the_bundled_example_campaign_loads() -> None:
    campaign = load_campaign_file(ROOT / "examples" / "campaign.yaml")
    assert len(campaign.npcs) >= 3
    for npc in campaign.npcs:
        assert npc.aliases, f"{npc.name} has no alias"
        assert "one or two short" in npc.persona, f"{npc.name}: ask for short spoken answers"
    assert len({npc.voice for npc in campaign.npcs}) == len(campaign.npcs), "each NPC sounds different"


# --- unknown fields: the field and its line -------------------------------------------------


def test_unknown_top_level_field() -> None:
    text = _npc_yaml() + "colour: red\n"
    assert _problems(text) == ["line 5: colour: unknown field"]


def test_unknown_field_in_an_npc() -> None:
    text = _npc_yaml(extra="aliases: [smith]\nmood: grumpy")
    assert _problem(text, "mood") == "line 6: npcs[0].mood: unknown field"


def test_unknown_field_in_the_second_npc() -> None:
    text = textwrap.dedent("""\
        name: Test
        npcs:
          - name: Greta
            persona: A smith.
          - name: Aldric
            persona: An innkeeper.

            personality: cheerful
        """)
    assert _problem(text, "personality") == "line 8: npcs[1].personality: unknown field"


def test_unknown_field_in_voice() -> None:
    text = _npc_yaml(voice="pitch: 1.1\nvolume: 2")
    assert _problem(text, "volume") == "line 7: npcs[0].voice.volume: unknown field"


def test_elevenlabs_voice_settings_are_checked() -> None:
    text = _npc_yaml(voice="provider: elevenlabs\nspeed: 2")
    assert _problem(text, "speed") == ("line 7: npcs[0].voice.speed: "
                                       "Input should be less than or equal to 1.2")


def test_unknown_field_with_a_block_value_points_at_the_key() -> None:
    text = _npc_yaml(extra="voyce:\n  pitch: 1.1")
    assert _problem(text, "voyce") == "line 5: npcs[0].voyce: unknown field"


def test_several_mistakes_are_reported_together() -> None:
    text = _npc_yaml(extra="mood: grumpy", voice="pitch: 5.0") + "colour: red\n"
    problems = _problems(text)
    assert any(p.startswith("line 5: npcs[0].mood: unknown field") for p in problems)
    assert any(p.startswith("line 7: npcs[0].voice.pitch:") for p in problems)
    assert any(p.startswith("line 8: colour: unknown field") for p in problems)


def test_a_campaign_and_its_npcs_may_choose_their_llm() -> None:
    text = textwrap.dedent("""\
        name: Test
        llm: {provider: gemini, model: gemini-2.5-flash-lite}
        npcs:
          - name: Greta
            persona: A smith.
            llm:
              provider: openai
              model: gpt-4o-mini
              temperature: 0.9
          - name: Aldric
            persona: An innkeeper.
        """)
    campaign = load_campaign(text)
    assert (campaign.llm.provider, campaign.llm.model) == ("gemini", "gemini-2.5-flash-lite")
    greta, aldric = campaign.npcs
    assert (greta.llm.provider, greta.llm.model, greta.llm.temperature) == (
        "openai", "gpt-4o-mini", 0.9)
    assert aldric.llm is None


@pytest.mark.parametrize(("llm", "field", "says"), [
    ("provider: claude", "provider", "Input should be 'llama', 'gemini', 'openai' or 'fake'"),
    ("model: 'gpt 4; rm -rf'", "model", "pattern"),
    ("temperature: 3", "temperature", "less than or equal to 2"),
    ("api_key: sk-123", "api_key", "unknown field"),
])
def test_llm_choices_are_checked(llm: str, field: str, says: str) -> None:
    problem = _problem(_npc_yaml(extra=f"llm:\n  {llm}"), f"llm.{field}")
    assert problem.startswith(f"line 6: npcs[0].llm.{field}: ") and says in problem


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(("voice", "field", "limit"), [
    ("pitch: 5.0", "pitch", "less than or equal to 2"),
    ("pitch: 0.1", "pitch", "greater than or equal to 0.5"),
    ("length_scale: 3", "length_scale", "less than or equal to 2"),
    ("rate: 10", "rate", "greater than or equal to 80"),
    ("pitch: high", "pitch", "valid number"),
    ("espeak_voice: 'en us; rm -rf'", "espeak_voice", "pattern"),
])
def test_voice_values_out_of_range(voice: str, field: str, limit: str) -> None:
    problem = _problem(_npc_yaml(voice=voice), f"voice.{field}")
    assert problem.startswith(f"line 6: npcs[0].voice.{field}: ")
    assert limit in problem


def test_empty_persona() -> None:
    problem = _problem(_npc_yaml(persona='""'), "persona")
    assert problem == "line 4: npcs[0].persona: String should have at least 1 character"


def test_missing_persona_points_at_the_npc() -> None:
    text = "name: Test\nnpcs:\n  - name: Greta\n"
    problem = _problem(text, "persona")
    assert problem == "line 3: npcs[0].persona: Field required"


def test_missing_name_and_npcs() -> None:
    problems = _problems("colour: red\n")
    assert "line 1: name: Field required" in problems
    assert "line 1: npcs: Field required" in problems
    assert "line 1: colour: unknown field" in problems


def test_empty_npc_list() -> None:
    problem = _problem("name: Test\nnpcs: []\n", "npcs")
    assert problem.startswith("line 2: npcs: ") and "at least 1 item" in problem


def test_aliases_must_be_a_list_of_names() -> None:
    problem = _problem(_npc_yaml(extra="aliases: ['  ']"), "aliases")
    assert problem.startswith("line 5: npcs[0].aliases: ") and "non-empty" in problem


def test_name_collision_is_a_clear_error() -> None:
    text = textwrap.dedent("""\
        name: Test
        npcs:
          - name: Greta
            persona: A smith.
          - name: greta
            persona: Her twin.
        """)
    (problem,) = _problems(text)
    assert "'Greta'" in problem and "'greta'" in problem and "collide" in problem


def test_name_collision_points_at_the_second_npc() -> None:
    text = textwrap.dedent("""\
        name: Test
        npcs:
          - name: Greta
            persona: A smith.
          - name: greta
            persona: Her twin.
        """)
    (problem,) = _problems(text)
    assert problem.startswith("line 5: npcs[1].name: ")
    assert "Value error" not in problem


def test_an_npc_mistake_is_reported_once() -> None:
    assert _problems(_npc_yaml(voice="pitch: 5.0")) == [
        "line 6: npcs[0].voice.pitch: Input should be less than or equal to 2"
    ]


# --- not a campaign at all ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["- Greta\n- Aldric\n", "just a sentence\n", "", "42\n", "~\n"])
def test_not_a_mapping(text: str) -> None:
    assert _problems(text) == ["line 1: the campaign must be a mapping with `name` and `npcs`"]


@pytest.mark.parametrize(("text", "line"), [
    ("name: Test\nnpcs:\n  - name: Greta\n  persona: x\n", 4),       # bad indentation
    ("name: Test\nnpcs:\n  - name: 'Greta\n    persona: x\n", 5),     # unclosed quote
    ("name: Test\nnpcs:\n\t- name: Greta\n", 3),                      # tab indentation
    ("name: Test\nnpcs: [a, b\n", 3),                                 # unclosed flow sequence
    ("name: a\n---\nname: b\n", 2),                                   # two documents
])
def test_invalid_yaml_names_the_line(text: str, line: int) -> None:
    (problem,) = _problems(text)
    assert problem.startswith(f"line {line}: not valid YAML: "), problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CampaignError) as info:
        load_campaign_file(path)
    assert str(path) in str(info.value)
    assert info.value.problems == ["cannot read file: No such file or directory"]


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_npc_yaml(extra="mood: grumpy"), encoding="utf-8")
    with pytest.raises(CampaignError) as info:
        load_campaign_file(path)
    assert str(info.value).startswith(f"{path}: invalid campaign")
    assert "line 5: npcs[0].mood: unknown field" in info.value.problems


def test_non_utf8_file_is_a_campaign_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(_npc_yaml().replace("Greta", "Gr\xe9ta").encode("latin-1"))
    with pytest.raises(CampaignError):
        load_campaign_file(path)


def test_a_campaign_names_where_it_chooses_the_fake_doubles():
    from glyphoxa_campaign import Campaign

    c = Campaign.model_validate({"name": "X", "llm": {"provider": "fake"}, "npcs": [
        {"name": "A", "persona": "p"},
        {"name": "B", "persona": "p", "voice": {"provider": "fake"}, "llm": {"provider": "fake"}}]})
    assert c.fake_providers() == ["llm.provider", "npcs.1.voice.provider", "npcs.1.llm.provider"]
    assert Campaign.model_validate({"name": "X", "npcs": [{"name": "A", "persona": "p"}]}
                                   ).fake_providers() == []
