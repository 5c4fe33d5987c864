"""Reorder/jitter buffer for playback: frames of a turn come out in sequence order.

Frames arrive per turn with a sequence number, possibly out of order and in bursts faster
than real time (TTS is quicker than speech). The player pops one frame per 20 ms tick.
A missing frame is waited for for ``max_wait`` pops, then skipped (and counted), so one
lost packet never stalls playback. The buffer is bounded: beyond ``max_frames`` the oldest
frames are dropped and counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _Turn:
    npc: str
    frames: dict[int, bytes] = field(default_factory=dict)
    next_seq: int = 0
    waited: int = 0
    ended_at: int | None = None  # sequence after the last frame, once known


@dataclass(frozen=True)
class Frame:
    turn_id: str
    npc: str
    seq: int
    packet: bytes | None  # None: a frame that never arrived (play concealment or silence)


class PlaybackBuffer:
    def __init__(self, max_frames: int = 3000, max_wait: int = 3):
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self._size = 0
        self.max_frames, self.max_wait = max_frames, max_wait
        self.dropped = 0
        self.skipped = 0
        self._flushed: set[str] = set()

    def __len__(self) -> int:
        return self._size

    def push(self, turn_id: str, npc: str, seq: int, packet: bytes) -> None:
        if turn_id in self._flushed:
            return
        turn = self._turns.setdefault(turn_id, _Turn(npc))
        if seq < turn.next_seq or seq in turn.frames:
            return  # late or duplicate
        turn.frames[seq] = packet
        self._size += 1
        while self._size > self.max_frames:
            self._drop_oldest()

    def end(self, turn_id: str, frames: int) -> None:
        """The turn has exactly ``frames`` frames; it is finished once they are played."""
        if turn_id in self._turns:
            self._turns[turn_id].ended_at = frames

    def pop(self) -> Frame | None:
        while self._turns:
            turn_id, turn = next(iter(self._turns.items()))
            if turn.ended_at is not None and turn.next_seq >= turn.ended_at:
                del self._turns[turn_id]
                continue
            packet = turn.frames.pop(turn.next_seq, None)
            if packet is not None:
                self._size -= 1
                turn.waited = 0
                turn.next_seq += 1
                return Frame(turn_id, turn.npc, turn.next_seq - 1, packet)
            if not turn.frames:
                if turn.ended_at is not None:
                    del self._turns[turn_id]
                    continue
                return None  # nothing buffered yet: wait for the producer
            turn.waited += 1
            if turn.waited <= self.max_wait:
                return None
            turn.waited = 0
            self.skipped += 1
            turn.next_seq += 1
            return Frame(turn_id, turn.npc, turn.next_seq - 1, None)
        return None

    def flush(self, turn_id: str | None = None) -> int:
        """Drop a turn (or everything); later frames of a flushed turn are ignored."""
        ids = [turn_id] if turn_id is not None else list(self._turns)
        dropped = 0
        for tid in ids:
            self._flushed.add(tid)
            turn = self._turns.pop(tid, None)
            if turn is not None:
                dropped += len(turn.frames)
        self._size -= dropped
        return dropped

    def _drop_oldest(self) -> None:
        turn_id, turn = next(iter(self._turns.items()))
        if not turn.frames:
            del self._turns[turn_id]
            return
        seq = min(turn.frames)
        del turn.frames[seq]
        turn.next_seq = max(turn.next_seq, seq + 1)
        self._size -= 1
        self.dropped += 1
