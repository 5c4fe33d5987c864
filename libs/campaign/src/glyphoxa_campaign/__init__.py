"""Campaign definitions: the NPCs of a table, loaded from YAML with line-precise errors."""

from glyphoxa_campaign.loader import CampaignError, load_campaign, load_campaign_file
from glyphoxa_campaign.model import Campaign, LLMSpec, Npc, VoiceSpec

__all__ = ["Campaign", "CampaignError", "LLMSpec", "Npc", "VoiceSpec", "load_campaign",
           "load_campaign_file"]
