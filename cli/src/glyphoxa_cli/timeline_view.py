"""A session's timeline (``GET /v1/sessions/{id}/timeline``) as a terminal table and as a
self-contained HTML waterfall (inline CSS and SVG, nothing fetched)."""

from __future__ import annotations

from html import escape

from glyphoxa_cli.results import reason_text

# the marks after speech end, in the order a turn goes through them, with their labels
STEPS = (("vad_end", "vad end"), ("stt_final", "stt final"), ("routed", "routed"),
         ("first_token", "first token"), ("first_sentence", "first sentence"),
         ("first_audio_published", "audio published"), ("first_audio_played", "audio played"))
COLUMNS = (("vad_end", "vad"), ("stt_final", "stt"), ("first_token", "token"),
           ("first_sentence", "sent"), ("first_audio_published", "audio"),
           ("first_audio_played", "played"))
SOURCES = {"stream": "the replayable streams",
           "record": "the turn table: the streams no longer keep its turns (fewer marks)",
           "stream+record": "the streams, its early turns from the turn table (fewer marks)"}
OUTCOME_COLOURS = {"answered": "#2e7d32", "not_addressed": "#757575", "cancelled": "#ef6c00",
                   "failed": "#c62828", "timed_out": "#c62828", "muted": "#6a1b9a",
                   "missing": "#c62828"}


def _at(turn: dict, kind: str) -> float | None:
    return next((m["at_ms"] for m in turn["marks"] if m["kind"] == kind), None)


def _detail(turn: dict, kind: str) -> str:
    return next((m.get("detail", "") for m in turn["marks"] if m["kind"] == kind), "")


def why(turn: dict) -> str:
    """The turn's reason in a few words (routing and failure when recorded), and the
    memories of earlier sessions its reply was given."""
    recalled = turn.get("memories") or []
    return reason_text(turn) + (f"; recalled memories {', '.join(recalled)}" if recalled else "")


def _npc(turn: dict) -> str:
    return turn.get("npc_name") or turn.get("npc") or "-"


def _anchor(turn: dict) -> float | None:
    """Latencies count from speech end (else from the first mark)."""
    end = _at(turn, "speech_end")
    return end if end is not None else (turn["marks"][0]["at_ms"] if turn["marks"] else None)


def format_timeline(timeline: dict) -> str:
    cols = " ".join(f"{label:>6}" for _, label in COLUMNS)
    head = f"{'at s':>7} {'player':<8} {'npc':<13} {'outcome':<13} {cols}  why / heard"
    lines = [f"session {timeline['session']} (tenant {timeline['tenant']}; from "
             f"{SOURCES.get(timeline['source'], timeline['source'])})",
             head, "-" * len(head)]
    for turn in timeline["turns"]:
        anchor = _anchor(turn)
        start = _at(turn, "speech_start") or anchor or 0.0
        cells = []
        for kind, _ in COLUMNS:
            at = _at(turn, kind)
            cells.append(f"{at - anchor:>6.0f}" if at is not None and anchor is not None else f"{'-':>6}")
        lines.append(f"{start / 1000:>7.1f} {turn['speaker']:<8} {_npc(turn):<13} "
                     f"{turn['outcome']:<13} {' '.join(cells)}  {why(turn)}")
        lines.append(f"{'':>44}heard {turn['transcript']!r}"
                     + (f" -> {turn['reply']!r}" if turn.get("reply") else ""))
        for kind in ("cancelled", "failed"):
            if _at(turn, kind) is not None:
                lines.append(f"{'':>44}{kind}: {_detail(turn, kind)}")
    for event in timeline["events"]:
        if event["kind"] in ("bargein", "flush"):
            lines.append(f"{event['at_ms'] / 1000:>7.1f} {event['kind']}: {event['detail']}")
    lines.append("columns: ms after speech end (vad end of utterance, stt final, first LLM token, "
                 "first sentence, first audio published, first audio played)")
    return "\n".join(lines)


# --- HTML --------------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212121}
h1{font-size:20px;margin:0 0 4px}.sub{color:#616161;margin-bottom:16px}
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;vertical-align:top;text-align:left}
tr.turn{border-top:1px solid #e0e0e0}th{font-weight:600;border-bottom:2px solid #9e9e9e}
.o{font-weight:600}.heard{color:#424242}.reply{color:#1565c0}.why{color:#616161;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
svg text{font:11px system-ui,sans-serif;fill:#424242}
"""
SPEECH, WAIT, AUDIO, BARGEIN = "#90caf9", "#e0e0e0", "#a5d6a7", "#5d4037"
TICK = {"vad_end": "#6d4c41", "stt_final": "#283593", "routed": "#00838f", "first_token": "#8e24aa",
        "first_sentence": "#d81b60", "first_audio_published": "#2e7d32",
        "first_audio_played": "#1b5e20", "cancelled": "#ef6c00", "failed": "#c62828"}


def _scale(turns: list[dict]) -> tuple[float, float]:
    """The waterfall's window (ms relative to speech end) shared by every turn."""
    lo, hi = -500.0, 1000.0
    for turn in turns:
        anchor = _anchor(turn)
        if anchor is None:
            continue
        for m in turn["marks"]:
            lo, hi = min(lo, m["at_ms"] - anchor), max(hi, m["at_ms"] - anchor)
    return max(lo, -15_000.0), min(hi, 30_000.0)


def _waterfall(turn: dict, lo: float, hi: float, width: int = 520, height: int = 26) -> str:
    anchor = _anchor(turn)
    if anchor is None:
        return ""

    def x(ms: float) -> float:
        return round((min(max(ms - anchor, lo), hi) - lo) / (hi - lo) * width, 1)

    parts = [f'<svg width="{width}" height="{height}" role="img">']
    start, end = _at(turn, "speech_start"), _at(turn, "speech_end")
    if start is not None and end is not None:
        parts.append(f'<rect x="{x(start)}" y="6" width="{max(round(x(end) - x(start), 1), 1)}" height="14" '
                     f'fill="{SPEECH}"><title>speech {start / 1000:.2f}-{end / 1000:.2f} s</title></rect>')
    last = max((m["at_ms"] for m in turn["marks"]), default=anchor)
    reply_start = _at(turn, "first_audio_published")
    wait_end = reply_start if reply_start is not None else last
    parts.append(f'<rect x="{x(anchor)}" y="10" width="{max(round(x(wait_end) - x(anchor), 1), 0)}" height="6" '
                 f'fill="{WAIT}"/>')
    done = _at(turn, "audio_done")
    if reply_start is not None and done is not None:
        parts.append(f'<rect x="{x(reply_start)}" y="6" width="{max(round(x(done) - x(reply_start), 1), 1)}" '
                     f'height="14" fill="{AUDIO}"><title>reply audio</title></rect>')
    parts.append(f'<line x1="{x(anchor)}" x2="{x(anchor)}" y1="0" y2="{height}" stroke="#9e9e9e" '
                 'stroke-dasharray="2,2"/>')
    for m in turn["marks"]:
        colour = TICK.get(m["kind"])
        if colour is None:
            continue
        label = f'{m["kind"].replace("_", " ")} +{m["at_ms"] - anchor:.0f} ms'
        if m.get("detail"):
            label += f": {m['detail']}"
        parts.append(f'<line x1="{x(m["at_ms"])}" x2="{x(m["at_ms"])}" y1="2" y2="{height - 2}" '
                     f'stroke="{colour}" stroke-width="2"><title>{escape(label)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def _axis(lo: float, hi: float, width: int = 520) -> str:
    step = 500 if hi - lo <= 5000 else 1000 if hi - lo <= 12_000 else 5000
    parts = [f'<svg width="{width}" height="18">']
    tick = (int(lo) // step) * step
    while tick <= hi:
        if tick >= lo:
            px = round((tick - lo) / (hi - lo) * width, 1)
            parts.append(f'<line x1="{px}" x2="{px}" y1="12" y2="18" stroke="#9e9e9e"/>'
                         f'<text x="{px + 2}" y="10">{tick / 1000:g}s</text>')
        tick += step
    parts.append("</svg>")
    return "".join(parts)


def _overview(timeline: dict, width: int = 1000) -> str:
    """Every turn on the session's own axis: speech as a bar, coloured by outcome."""
    turns = timeline["turns"]
    ends = [m["at_ms"] for t in turns for m in t["marks"]] + [e["at_ms"] for e in timeline["events"]]
    span = max(max(ends, default=1000.0), 1000.0)
    speakers = sorted({t["speaker"] for t in turns})
    rows = len(speakers) or 1
    parts = [f'<svg width="{width + 90}" height="{rows * 18 + 22}">']
    for i, speaker in enumerate(speakers):
        parts.append(f'<text x="0" y="{i * 18 + 13}">{escape(speaker)}</text>')
    for t in turns:
        start = _at(t, "speech_start") or _anchor(t)
        end = _at(t, "speech_end") or start
        if start is None:
            continue
        y = speakers.index(t["speaker"]) * 18 + 3
        px = 90 + start / span * width
        w = max((end - start) / span * width, 2)
        title = escape(f"{start / 1000:.1f} s {t['speaker']}: {t['transcript']} -> "
                       f"{_npc(t)} ({t['outcome']})")
        parts.append(f'<rect x="{px:.1f}" y="{y}" width="{w:.1f}" height="12" '
                     f'fill="{OUTCOME_COLOURS.get(t["outcome"], "#9e9e9e")}"><title>{title}</title></rect>')
    for e in timeline["events"]:
        if e["kind"] == "bargein":
            px = 90 + e["at_ms"] / span * width
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="0" y2="{rows * 18}" stroke="{BARGEIN}" '
                         f'stroke-dasharray="3 2">'
                         f'<title>{escape(e["detail"])}</title></line>')
    step = max(5, int(span / 1000 / 10 // 5 * 5) or 5)
    for s in range(0, int(span / 1000) + 1, step):
        px = 90 + s * 1000 / span * width
        parts.append(f'<text x="{px:.1f}" y="{rows * 18 + 16}">{s}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_html(timeline: dict) -> str:
    turns = timeline["turns"]
    lo, hi = _scale(turns)
    rows = []
    for n, t in enumerate(turns, 1):
        start = _at(t, "speech_start") or _anchor(t) or 0.0
        colour = OUTCOME_COLOURS.get(t["outcome"], "#424242")
        reply = f'<div class="reply">&rarr; {escape(t["reply"])}</div>' if t.get("reply") else ""
        trouble = "".join(f'<div class="why">{k}: {escape(_detail(t, k))}</div>'
                          for k in ("cancelled", "failed") if _at(t, k) is not None)
        rows.append(
            f'<tr class="turn" id="turn-{escape(t["turn_id"])}"><td>{n}</td><td>{start / 1000:.1f}</td>'
            f'<td>{escape(t["speaker"])}</td><td>{escape(_npc(t))}</td>'
            f'<td class="o" style="color:{colour}">{escape(t["outcome"])}</td>'
            f'<td><div class="heard">{escape(t["transcript"])!s}</div>{reply}'
            f'<div class="why">{escape(why(t))} &middot; {escape(t["turn_id"])}</div>{trouble}</td>'
            f'<td>{_waterfall(t, lo, hi)}</td></tr>')
    events = "".join(f'<li>{e["at_ms"] / 1000:.1f} s {escape(e["kind"])}: {escape(e["detail"])}</li>'
                     for e in timeline["events"])
    legend = "".join(f'<span><i style="background:{c}"></i>{k.replace("_", " ")}</span>'
                     for k, c in (("speech", SPEECH), ("waiting", WAIT), ("reply audio", AUDIO),
                                  *TICK.items(), ("barge-in (top)", BARGEIN)))
    source = SOURCES.get(timeline["source"], timeline["source"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Glyphoxa session {escape(timeline['session'])}: timeline</title>
<style>{CSS}</style></head><body>
<h1>Session {escape(timeline['session'])}</h1>
<div class="sub">tenant {escape(timeline['tenant'])} &middot; {len(turns)} turns &middot; from {source}
&middot; times in seconds after the session started</div>
{_overview(timeline)}
<div class="legend">{legend}</div>
<table><thead><tr><th>#</th><th>at s</th><th>player</th><th>npc</th><th>outcome</th>
<th>heard &rarr; reply; why</th><th>after speech end (dashed line)<br>{_axis(lo, hi)}</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>Session events</h2><ul>{events or '<li>none</li>'}</ul>
</body></html>
"""
