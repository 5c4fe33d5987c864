"""Who witnessed a line (glyphoxa_campaign.Campaign.witnesses, docs/adr/0007)."""

from __future__ import annotations

import pytest

from glyphoxa_campaign import load_campaign

pytestmark = pytest.mark.unit

YAML = """
name: River Town
lore: The river floods every spring.
overhear: {overhear}
npcs:
  - {{name: Greta, persona: A smith., scene: smithy, knowledge: The guild owes her money.}}
  - {{name: Hugo, persona: Her apprentice., scene: smithy}}
  - {{name: Aldric, persona: An innkeeper., scene: inn}}
  - {{name: Wanderer, persona: A stranger.}}
"""


def test_without_overhear_only_the_addressed_npc_witnesses():
    campaign = load_campaign(YAML.format(overhear="false"))
    assert campaign.witnesses("greta") == ("greta",)
    assert campaign.present_with("greta") == ("greta", "hugo")
    assert campaign.npc("greta").knowledge == "The guild owes her money."
    assert campaign.lore == "The river floods every spring."


def test_with_overhear_the_npcs_of_one_scene_witness_each_other_and_nobody_else():
    campaign = load_campaign(YAML.format(overhear="true"))
    assert campaign.witnesses("greta") == ("greta", "hugo")
    assert campaign.witnesses("hugo") == ("hugo", "greta")
    assert campaign.witnesses("aldric") == ("aldric",)  # alone at the inn
    assert campaign.witnesses("wanderer") == ("wanderer",)  # no scene: alone
    assert campaign.witnesses("nobody") == ("nobody",)


def test_an_unknown_field_next_to_them_is_still_an_error():
    with pytest.raises(Exception, match="overhears"):
        load_campaign(YAML.format(overhear="true") + "overhears: true\n")
