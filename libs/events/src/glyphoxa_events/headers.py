"""NATS header names. Audio bodies are raw bytes; their metadata travels here.

On ``audio.in.<speaker>`` (docs/contract.md): ``Glx-Capture-Ns`` is when the 20 ms frame was
spoken (unix ns); ``Glx-Seq`` numbers a speaker's frames upwards for the whole session, by
capture time: an edge publishes the capture time counted in 20 ms frames, or one more than
its last frame's number if that is higher. So the numbers go on across a player's rejoin and
an edge restart (the message id ``ain:T.S:<speaker>:<Glx-Seq>`` is never reused), and vad
refuses as implausible a ``Glx-Seq`` that runs ahead of ``Glx-Capture-Ns``, a jump larger
than the capture time skipped, and a capture time far ahead of the session's clock.
Elsewhere ``Glx-Seq`` counts from 0 (a chunk within an utterance, a frame within a turn).

``traceparent`` (and ``tracestate``) are W3C trace context: when tracing is on
(docs/tracing.md) a message caused by a turn carries the context of the span that made it
(vad's ``end``, stt's final, the reply chunks, the ``audio.out`` frames), so the next stage
continues the turn's trace. Absent when tracing is off; never required.
"""

MSG_ID = "Nats-Msg-Id"
SEQ = "Glx-Seq"
CAPTURE_NS = "Glx-Capture-Ns"
CODEC = "Glx-Codec"
KIND = "Glx-Kind"
UTTERANCE = "Glx-Utterance"
TURN = "Glx-Turn"
SPEECH_END_NS = "Glx-Speech-End-Ns"
PUBLISHED_NS = "Glx-Published-Ns"
SAMPLE_RATE = "Glx-Sample-Rate"
FRAMES = "Glx-Frames"  # audio.out: frames in the message when more than one (glyphoxa_events.frames)
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

CODEC_OPUS = "opus"
CODEC_PCM16 = "pcm16"
