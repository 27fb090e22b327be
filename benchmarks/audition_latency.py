"""Audition latency: a simulated listening session with a slider move every 100 ms.

Plays a looping 44.1 kHz track through ``engine.audio.player.AuditionPlayer`` into a
``SimulatedSink`` pulling 512-frame blocks in real time, moves the pitch or the tempo
slider every 100 ms (a random walk over their ranges), and prints:

* change-to-output latency: wall time from ``set_pitch``/``set_tempo`` to the moment the
  sink plays the centre of the first vocoder frame rendered with the new value (the change
  at full weight), p50 / p99 / max, with blocks played at their due time (the simulated
  converter's clock) and, for comparison, at the time their callback actually ran; and to
  the first affected sample;
* the audio callback's real-time factor (callback time / block duration);
* the worker's real-time factor (vocoder time / audio time rendered, re-renders included);
* underruns (callback found fewer samples than a block) and late sink blocks.

Targets: p99 latency <= 50 ms, 0 underruns with 512-frame blocks.

    python benchmarks/audition_latency.py [--seconds 60] [--blocksize 512]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.audio.player import AuditionPlayer  # noqa: E402
from engine.audio.sinks import SimulatedSink  # noqa: E402


class LatencyMonitor:
    """A :class:`~engine.audio.player.PlayerMonitor` that logs what the latency figures
    need: every change, every rewind, every frame and every callback.

    Attributes
    ----------
    changes : list of (wall time, version, read index)
    rewinds : dict version -> read index when a rewind handled it
    render_seconds : float
        Vocoder time on the rendering threads (re-renders included).
    """

    _LOG = 1 << 17

    def __init__(self) -> None:
        self.changes: list[tuple[float, int, int]] = []
        self.rewinds: dict[int, int] = {}
        self.render_seconds = 0.0
        self._frames: list[tuple[int, int, int]] = []  # (version, index, centre)
        self._cb_time = np.zeros(self._LOG)
        self._cb_read = np.zeros(self._LOG, dtype=np.int64)
        self._n_cb = 0

    def changed(self, version: int, read: int) -> None:
        self.changes.append((time.perf_counter(), version, read))

    def rewound(self, version: int, read: int) -> None:
        self.rewinds.setdefault(version, read)

    def rendered(self, version: int, index: int, centre: int, seconds: float) -> None:
        self._frames.append((version, index, centre))
        self.render_seconds += seconds

    def called(self, read: int) -> None:
        i = self._n_cb
        if i < self._LOG:
            self._cb_time[i] = time.perf_counter()
            self._cb_read[i] = read
        self._n_cb = i + 1

    def frame_centre(self, version: int) -> int | None:
        """Ring index of the centre of the first frame rendered with parameter
        ``version`` or a later one (None if not rendered yet)."""
        for v, _, centre in self._frames:
            if v >= version:
                return centre
        return None

    def locate(self, index: int, blocksize: int, sr: int,
               due_times: np.ndarray | None = None) -> tuple[int, float] | None:
        """(callback number, wall time) at which the sink played ring sample ``index``
        (None if not played yet). ``due_times[j]``, when given, replaces the time of
        callback j (a simulated sink's converter clock)."""
        n_cb = min(self._n_cb, self._LOG)
        cb_read = self._cb_read[:n_cb]
        j = int(np.searchsorted(cb_read, index, side="right")) - 1
        if j < 0 or index >= cb_read[j] + blocksize:
            return None
        start = self._cb_time[j] if due_times is None else due_times[j]
        return j, float(start + (index - cb_read[j]) / sr)

    def change_latencies(self, blocksize: int, sr: int,
                         due_times: np.ndarray | None = None) -> np.ndarray:
        """Seconds from each set_pitch/set_tempo call to the moment the sink played the
        centre of the first frame rendered with it (the change at full weight); NaN for
        a change not yet played."""
        out = []
        for t_set, version, _ in self.changes:
            centre = self.frame_centre(version)
            played = None if centre is None else self.locate(centre, blocksize, sr, due_times)
            out.append(np.nan if played is None else played[1] - t_set)
        return np.asarray(out)


def test_track(sr: int, seconds: float = 20.0) -> np.ndarray:
    """Harmonic notes changing every half second over a 120 BPM click: music-like."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    notes = 220.0 * 2 ** (rng.integers(0, 12, int(seconds * 2) + 1) / 12)
    f0 = notes[(t * 2).astype(int)]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(h * phase) / h for h in range(1, 6))
    beat = (t % 0.5) < 0.01
    y = 0.25 * y / np.abs(y).max() + 0.3 * beat * rng.standard_normal(t.size)
    return y.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--blocksize", type=int, default=512)
    parser.add_argument("--sr", type=int, default=44100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between moves")
    args = parser.parse_args(argv)

    sink = SimulatedSink(sr=args.sr, blocksize=args.blocksize)
    player = AuditionPlayer(sink)
    monitor = LatencyMonitor()
    player.monitor = monitor
    player.open(test_track(args.sr), source_sr=args.sr)
    player.loop = True
    rng = np.random.default_rng(1)
    pitch, tempo = 0.0, 1.0
    load_before = os.getloadavg()
    player.play()
    t0 = time.perf_counter()
    moves = 0
    call_seconds: list[float] = []
    while True:
        next_move = t0 + (moves + 1) * args.interval
        if next_move > t0 + args.seconds:
            break
        time.sleep(max(0.0, next_move - time.perf_counter()))
        t_call = time.perf_counter()
        if moves % 2 == 0:
            pitch = float(np.clip(pitch + rng.normal(0, 2.0), -12, 12))
            player.set_pitch(pitch)
        else:
            tempo = float(np.clip(tempo * 2 ** rng.normal(0, 0.15), 0.5, 2.0))
            player.set_tempo(tempo)
        call_seconds.append(time.perf_counter() - t_call)
        moves += 1
    time.sleep(0.2)  # let the last change be played
    elapsed = time.perf_counter() - t0
    player.close()

    latency = monitor.change_latencies(args.blocksize, args.sr, sink.due_times)
    played = latency[np.isfinite(latency)]
    at_callback = monitor.change_latencies(args.blocksize, args.sr)
    at_callback = at_callback[np.isfinite(at_callback)]
    half_window = player._vocoder.latency / args.sr if player._vocoder else 0.0
    rendered_samples = len(monitor._frames) * (player._vocoder.hop_length if player._vocoder else 0)
    cb = sink.callback_seconds[: min(sink.blocks, sink.callback_seconds.size)]
    period = args.blocksize / args.sr
    audio_rendered = rendered_samples / args.sr

    print(f"session: {elapsed:.1f} s simulated real time, {moves} slider moves every "
          f"{args.interval * 1000:.0f} ms, {args.blocksize}-frame blocks at {args.sr} Hz, "
          f"readahead {player.readahead} samples")
    print(f"machine load average at start: {load_before[0]:.2f} (on {os.cpu_count()} cores)")
    print(f"change-to-output latency (frame centre): p50 {np.percentile(played, 50) * 1e3:.1f} ms"
          f"  p99 {np.percentile(played, 99) * 1e3:.1f} ms  max {played.max() * 1e3:.1f} ms"
          f"  ({played.size}/{latency.size} changes played)   target p99 <= 50 ms")
    print(f"  same, timed at the callback instead of the block's due time: p50 "
          f"{np.percentile(at_callback, 50) * 1e3:.1f} ms  p99 "
          f"{np.percentile(at_callback, 99) * 1e3:.1f} ms (adds the simulated sink thread's "
          f"own scheduling delay)")
    first = played - half_window
    print(f"change-to-first-affected-sample:      p50 {np.percentile(first, 50) * 1e3:.1f} ms"
          f"  p99 {np.percentile(first, 99) * 1e3:.1f} ms")
    calls = np.asarray(call_seconds)
    print(f"set_pitch/set_tempo call on the calling (GUI) thread: p50 "
          f"{np.percentile(calls, 50) * 1e3:.1f} ms  p99 {np.percentile(calls, 99) * 1e3:.1f} ms"
          f"  max {calls.max() * 1e3:.1f} ms")
    print(f"callback real-time factor: mean {cb.mean() / period:.4f}  p99 "
          f"{np.percentile(cb, 99) / period:.4f}  max {cb.max() / period:.4f} "
          f"({cb.size} callbacks)")
    print(f"worker real-time factor: {monitor.render_seconds / max(audio_rendered, 1e-9):.3f} "
          f"({audio_rendered:.1f} s of audio rendered for {elapsed:.1f} s played)")
    print(f"underruns: {player.underruns}   late sink blocks: {sink.late_blocks}   "
          f"target 0 underruns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
