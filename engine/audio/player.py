"""The audition player: one track with pitch and tempo following live sliders.

A worker thread renders :class:`~engine.audio.vocoder.StreamingVocoder` frames into a
lock-free ring buffer ahead of the audio callback (``readahead`` samples, 93 ms at
44.1 kHz, so a busy machine does not starve it); the callback only copies ready samples
(no allocation of buffers, no lock, no torch). A slider change does not wait behind that
buffer: everything buffered beyond the next block is thrown away and re-rendered from a
snapshot of the vocoder with the new value, the first blocks at once on the calling
thread, so the change is heard about 30 ms later (one block, half a synthesis window, the
callback's period). The source's channels are kept (a mono source plays on every output
channel; a stereo one on a mono device is mixed down).

Typical use from the app (callbacks arrive on the player's worker thread: hand them to the
GUI thread, e.g. through a Qt signal)::

    player = AuditionPlayer()           # AudioDeviceError if there is no output device
    player.on_position = lambda s: ...  # seconds, about every 50 ms while playing
    player.open("loop.wav")
    player.play()
    player.set_pitch(-2.5)              # semitones, -12..12, any moment
    player.set_tempo(1.1)               # ratio, 0.5..2.0
    player.close()

Measurements (``benchmarks/audition_latency.py``) attach a :class:`PlayerMonitor`; the
player itself keeps no figures beyond ``underruns``.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from engine.audio.sinks import DEFAULT_SR, Sink, SoundDeviceSink
from engine.audio.vocoder import StreamingVocoder, synthesis_size
from engine.config import check_semitones, check_tempo

STOPPED, PLAYING, PAUSED = "stopped", "playing", "paused"


class PlayerMonitor(Protocol):
    """Hooks a measurement can attach as ``player.monitor`` (all indices are absolute
    ring sample counts). Calls come from the thread named; keep them cheap."""

    def changed(self, version: int, read: int) -> None:
        """set_pitch/set_tempo made parameter ``version`` (calling thread)."""

    def rewound(self, version: int, read: int) -> None:
        """The buffered samples were dropped to render ``version`` (rendering thread)."""

    def rendered(self, version: int, index: int, centre: int, seconds: float) -> None:
        """A frame with ``version`` was written from ring ``index``, centred at ring
        ``centre``, in ``seconds`` of vocoder time (rendering thread)."""

    def called(self, read: int) -> None:
        """The sink's callback starts copying from ring ``read`` (audio thread)."""


def load_source(source: str | os.PathLike[str] | np.ndarray, sr: int,
                source_sr: int | None = None) -> np.ndarray:
    """A path or an array [T] / [T, C] as float32 [T, C] at ``sr``.

    Raises
    ------
    DecodeError
        A path that cannot be read.
    ValueError
        An empty signal.
    """
    if not isinstance(source, np.ndarray):
        from engine.audio.decode import load_audio_channels

        return load_audio_channels(source, sr=sr)[0]
    y = np.asarray(source, dtype=np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.size == 0:
        raise ValueError(f"cannot audition a signal of shape {y.shape}")
    src_sr = source_sr or sr
    if src_sr != sr:
        import soxr

        y = soxr.resample(y, src_sr, sr, quality="HQ").astype(np.float32).reshape(-1, y.shape[1])
    return np.ascontiguousarray(y)


class AuditionPlayer:
    """Play one track with live pitch and tempo.

    Parameters
    ----------
    sink : Sink, optional
        Default: a :class:`SoundDeviceSink` (raises :class:`AudioDeviceError` at once
        when there is no output device).
    sr : int
        Playback rate when no sink is given (a given sink's rate wins).
    readahead : int
        Samples rendered ahead of the callback (93 ms at 44.1 kHz: room for a worker
        thread that a busy machine does not schedule for a while). A slider change does
        not wait for it: the buffered samples beyond the next block are re-rendered
        (``_rewind``), so the read-ahead costs no response time.

    Callbacks (plain callables, None by default, called on the worker thread):
    ``on_state_changed(state: str)`` ("playing", "paused", "stopped"),
    ``on_position(seconds: float)`` about every 50 ms while playing,
    ``on_finished()`` when a non-looping track has played to its end,
    ``on_error(exc: Exception)``.
    """

    _RING = 1 << 14
    _LOG = 1 << 16

    def __init__(self, sink: Sink | None = None, *, sr: int = DEFAULT_SR,
                 readahead: int = 4096) -> None:
        self.sink = sink if sink is not None else SoundDeviceSink(sr=sr)
        self.sr = self.sink.sr
        n_synth = synthesis_size(self.sr)
        self.readahead = max(int(readahead), self.sink.blocksize + n_synth // 4)
        if self.readahead + n_synth > self._RING:
            raise ValueError(f"readahead {readahead} too large for the ring ({self._RING})")
        self.on_state_changed: Callable[[str], None] | None = None
        self.on_position: Callable[[float], None] | None = None
        self.on_finished: Callable[[], None] | None = None
        self.on_error: Callable[[Exception], None] | None = None
        self.underruns = 0
        self.monitor: PlayerMonitor | None = None
        self._ring = np.zeros((self._RING, 1), dtype=np.float32)
        self._written = 0  # absolute sample counts; only the worker writes _written
        self._read = 0  # ... and only the callback writes _read
        self._skip_to = 0
        self._started = False
        self._state = STOPPED
        self._fade_in = self._fade_out = False
        n = self.sink.blocksize
        self._ramp_up = np.linspace(0, 1, n, dtype=np.float32)[:, None]
        self._ramp_down = self._ramp_up[::-1].copy()
        self._loop = False
        self._pitch, self._tempo, self._version = 0.0, 1.0, 0
        self._vocoder: StreamingVocoder | None = None
        self._pending_seek: float | None = None
        self._duration = 0.0
        # (ring index, vocoder state) at each buffered frame boundary, for _rewind.
        self._snapshots: collections.deque[tuple[int, tuple]] = collections.deque(maxlen=256)
        self._rendered_version = 0
        self._lock = threading.Lock()  # commands vs worker; never taken by the callback
        self._render_lock = threading.Lock()  # vocoder and ring writes; never the callback
        self._wake = threading.Event()
        self._closing = False
        # Ring index of each rendered frame's centre and its source position: where the
        # sink is in the source (``position``).
        self._frame_centre = np.zeros(self._LOG, dtype=np.int64)
        self._frame_source = np.zeros(self._LOG)
        self._n_frames = 0
        self._epoch_start = 0  # first frame index after the last open/seek
        self._sink_running = False
        self._worker = threading.Thread(target=self._work, daemon=True, name="audition")
        self._worker.start()

    # ------------------------------------------------------------------ commands

    def open(self, source: str | os.PathLike[str] | np.ndarray, *,
             source_sr: int | None = None) -> None:
        """Load a track (decoded whole at the playback rate) and rewind; stays stopped.

        Raises
        ------
        DecodeError
            The file cannot be read.
        """
        y = load_source(source, self.sr, source_sr)
        with self._lock, self._render_lock:
            self._set_state(STOPPED)
            self._vocoder = StreamingVocoder(y, sr=self.sr, loop=self._loop)
            if self._ring.shape[1] != y.shape[1]:
                self._ring = np.zeros((self._RING, y.shape[1]), dtype=np.float32)
            self._duration = y.shape[0] / self.sr
            self._pending_seek = 0.0
        self._wake.set()

    def play(self) -> None:
        """Start or resume playing."""
        if self._vocoder is None:
            raise RuntimeError("open a track before play()")
        if not self._sink_running:
            self.sink.start(self._callback)
            self._sink_running = True
        with self._lock:
            if self._state == PLAYING:
                return
            if self._state == STOPPED and self._vocoder.ended:
                self._pending_seek = 0.0
            self._fade_in = self._state == PAUSED
            self._started = False
            self._set_state(PLAYING)
        self._wake.set()

    def pause(self) -> None:
        """Pause (the current block fades out); play() resumes from here."""
        with self._lock:
            if self._state == PLAYING:
                self._fade_out = True
                self._set_state(PAUSED)

    def stop(self) -> None:
        """Stop and rewind to the start."""
        with self._lock:
            if self._state == PLAYING:
                self._fade_out = True
            self._set_state(STOPPED)
            self._pending_seek = 0.0
        self._wake.set()

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds`` in the source (clamped to the track)."""
        with self._lock:
            self._pending_seek = min(max(0.0, float(seconds)), self._duration)
        self._wake.set()

    def set_pitch(self, semitones: float) -> None:
        """Pitch shift in semitones, -12..12, continuous; heard within about 50 ms."""
        self._pitch = check_semitones(semitones)
        self._changed()

    def set_tempo(self, ratio: float) -> None:
        """Tempo ratio, 0.5..2.0 (> 1 faster); pitch is unchanged."""
        self._tempo = check_tempo(ratio)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        monitor = self.monitor
        if monitor is not None:
            monitor.changed(self._version, max(self._read, self._skip_to))
        self._respond()
        self._wake.set()

    def _respond(self) -> None:
        """Re-render the next blocks with the new value on the calling thread (about
        a millisecond): the change then does not wait for the worker thread to be
        scheduled, which on a busy machine is what the latency's tail is made of."""
        voc = self._vocoder
        if voc is None or self._state != PLAYING:
            return
        with self._render_lock:
            if self._pending_seek is not None or self._version == self._rendered_version:
                return
            self._rewind(voc)
            # Four blocks (46 ms at 44.1 kHz, 8 frames, about 4 ms of work): a cushion
            # for when the worker thread is not scheduled for a while after the cut.
            target = max(self._read, self._skip_to) + 4 * self.sink.blocksize
            while self._written < target and not voc.ended:
                self._render_frame(voc)

    def close(self) -> None:
        """Stop the sink and the worker thread."""
        self._closing = True
        self._wake.set()
        self._worker.join(timeout=2)
        if self._sink_running:
            self.sink.stop()
            self._sink_running = False

    def __enter__(self) -> AuditionPlayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- properties

    @property
    def loop(self) -> bool:
        """Loop the track (takes effect at once)."""
        return self._loop

    @loop.setter
    def loop(self, value: bool) -> None:
        self._loop = bool(value)
        voc = self._vocoder
        if voc is not None:
            voc.loop = self._loop

    @property
    def pitch(self) -> float:
        return self._pitch

    @property
    def tempo(self) -> float:
        return self._tempo

    @property
    def state(self) -> str:
        return self._state

    @property
    def played_samples(self) -> int:
        """Samples handed to the sink since the player was made (a clock for tests)."""
        return max(self._read, self._skip_to)

    @property
    def duration(self) -> float:
        """Seconds of the open track (0 when none)."""
        return self._duration

    @property
    def position(self) -> float:
        """Seconds into the source of the sample the sink is playing now."""
        pending = self._pending_seek
        if pending is not None:
            return pending
        n, first = self._n_frames, self._epoch_start
        lo = max(first, n - self._LOG)
        if n <= lo:
            return self._seek_seconds
        idx = np.arange(lo, n) % self._LOG
        centres = self._frame_centre[idx]
        r = self._read
        played = np.flatnonzero(centres <= r)
        if played.size == 0:
            return self._seek_seconds
        j = idx[played[-1]]
        seconds = (self._frame_source[j] + (r - self._frame_centre[j]) * self._tempo) / self.sr
        return float(min(max(seconds, 0.0), self._duration))

    _seek_seconds = 0.0

    # ------------------------------------------------------------ audio thread

    def _callback(self, outdata: np.ndarray) -> None:
        """Copy ready samples into ``outdata`` [n, channels]. Runs on the audio thread:
        no buffer allocation, no lock, nothing slow."""
        n = outdata.shape[0]
        r, skip = self._read, self._skip_to
        if r < skip:
            r = skip
        monitor = self.monitor
        if monitor is not None:
            monitor.called(r)
        playing = self._state == PLAYING
        if not playing and not self._fade_out:
            outdata.fill(0)
            self._read = r
            return
        avail = max(0, self._written - r)
        if playing and not self._started:
            if avail < n:  # start-up or just after a seek: not an underrun yet
                outdata.fill(0)
                self._read = r
                return
            self._started = True
        k = min(n, avail)
        ring = self._ring
        start = r % self._RING
        first = min(k, self._RING - start)
        _copy_channels(outdata[:first], ring[start: start + first])
        _copy_channels(outdata[first:k], ring[: k - first])
        outdata[k:] = 0.0
        if self._fade_out:
            if n == self._ramp_down.shape[0]:
                outdata *= self._ramp_down
            self._fade_out = False
            if not playing:
                self._read = r + k
                self._wake.set()
                return
        elif self._fade_in:
            if n == self._ramp_up.shape[0]:
                outdata *= self._ramp_up
            self._fade_in = False
        voc = self._vocoder
        if k < n and voc is not None and not voc.ended:
            self.underruns += 1
        self._read = r + k
        self._wake.set()

    # ----------------------------------------------------------- worker thread

    def _work(self) -> None:
        last_position = 0.0
        while not self._closing:
            self._wake.wait(0.002)
            self._wake.clear()
            try:
                self._service()
                now = time.perf_counter()
                if self._state == PLAYING and now - last_position >= 0.05:
                    last_position = now
                    self._emit(self.on_position, self.position)
            except Exception as exc:  # never let the worker die silently
                self._emit(self.on_error, exc)
                time.sleep(0.05)

    def _service(self) -> None:
        with self._lock, self._render_lock:
            voc = self._vocoder
            seek = self._pending_seek
            if voc is not None and seek is not None:
                voc.loop = self._loop
                voc.pitch, voc.tempo = 2.0 ** (self._pitch / 12.0), self._tempo
                voc.reset(seek * self.sr)
                self._seek_seconds = seek
                self._skip_to = self._written
                self._epoch_start = self._n_frames
                self._started = False
                self._snapshots.clear()
            # Cleared last: ``position`` reads it without the lock, and until the new
            # epoch is in place it would otherwise compute from the frames before the seek.
            self._pending_seek = None
        if voc is None or self._state != PLAYING:
            return
        while self._written - self._read < self.readahead and not voc.ended:
            if self._pending_seek is not None or self._state != PLAYING:
                return
            with self._render_lock:  # one frame at a time: set_pitch can cut in
                if self._version != self._rendered_version:
                    self._rewind(voc)
                self._render_frame(voc)
        if voc.ended and self._read >= self._written and self._state == PLAYING:
            with self._lock:
                self._set_state(STOPPED)
                self._pending_seek = 0.0
            self._emit(self.on_finished)

    def _rewind(self, voc: StreamingVocoder) -> None:
        """Re-render what is buffered beyond the next block with the new parameters.

        The read-ahead is then no part of the response time to a slider: a change is
        rendered from one block after the callback's read position. The callback copies
        only below ``_written``, which is lowered before anything is overwritten; if it
        moved on meanwhile, the cut moves to the next frame boundary after it.
        """
        block = self.sink.blocksize
        monitor = self.monitor
        if monitor is not None:
            monitor.rewound(self._version, max(self._read, self._skip_to))
        cut = self._cut(max(self._read, self._skip_to) + block)
        if cut is None:
            return
        self._written = cut[0]
        moved = max(self._read, self._skip_to)
        if moved + block > cut[0]:
            cut = self._cut(moved + block) or cut
            self._written = cut[0]
        while self._snapshots and self._snapshots[-1][0] >= cut[0]:
            self._snapshots.pop()
        voc.restore(cut[1])

    def _cut(self, index: int) -> tuple[int, tuple] | None:
        """The earliest frame boundary at or after ring ``index`` with its snapshot."""
        found = None
        for boundary, snap in reversed(self._snapshots):
            if boundary < index:
                break
            found = (boundary, snap)
        return found

    def _render_frame(self, voc: StreamingVocoder) -> None:
        self._snapshots.append((self._written, voc.snapshot()))
        version = self._version
        self._rendered_version = version
        voc.pitch = 2.0 ** (self._pitch / 12.0)
        voc.tempo = self._tempo
        source = voc.position
        monitor = self.monitor
        t = time.perf_counter() if monitor is not None else 0.0
        block = voc.process_many(1)
        w = self._written
        i = self._n_frames % self._LOG
        self._frame_centre[i] = w + voc.latency
        self._frame_source[i] = source
        self._n_frames += 1
        ring = self._ring
        start = w % self._RING
        first = min(block.shape[0], self._RING - start)
        ring[start: start + first] = block[:first]
        ring[: block.shape[0] - first] = block[first:]
        self._written = w + block.shape[0]  # publish after the samples are in place
        if monitor is not None:
            monitor.rendered(version, w, w + voc.latency, time.perf_counter() - t)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._emit(self.on_state_changed, state)

    @staticmethod
    def _emit(callback: Callable | None, *args) -> None:
        if callback is not None:
            try:
                callback(*args)
            except Exception:  # a broken listener must not stop playback
                pass


def _copy_channels(dst: np.ndarray, src: np.ndarray) -> None:
    """``src`` [k, C] into ``dst`` [k, S] without allocating: channel s of the device
    plays source channel s mod C, and a mono device gets the mean of the channels."""
    c, s = src.shape[1], dst.shape[1]
    if c == s or c == 1:
        dst[:] = src
    elif s == 1:
        np.mean(src, axis=1, out=dst[:, 0])
    else:
        for j in range(s):
            dst[:, j] = src[:, j % c]


__all__ = ["AuditionPlayer", "PlayerMonitor", "load_source", "PAUSED", "PLAYING", "STOPPED"]
