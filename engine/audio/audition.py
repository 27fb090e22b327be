"""Live audition: play a track while its pitch and tempo follow sliders (issue 7).

Three layers:

* :class:`StreamingVocoder` - the phase vocoder of :mod:`engine.model.transforms` (same
  instantaneous frequency, same frequency scaling for pitch, same identity phase locking),
  run one output frame at a time in numpy, with pitch and tempo free to change between
  frames. The overlap-add of its frames cross-fades every change over one window
  (``n_fft`` samples, 23 ms at 44.1 kHz), so a slider move never clicks.
* :class:`AuditionPlayer` - a worker thread renders frames into a lock-free ring buffer
  ahead of the audio callback (``readahead`` samples, 93 ms at 44.1 kHz, so a busy machine
  does not starve it); the callback only copies ready samples (no allocation of buffers,
  no lock, no torch). A slider change does not wait behind that buffer: everything
  buffered beyond the next block is thrown away and re-rendered from a snapshot of the
  vocoder with the new value, the first blocks at once on the calling thread, so the
  change is heard about 30 ms later (one block, half a window, the callback's period).
* Sinks - :class:`SoundDeviceSink` (a sounddevice ``OutputStream``) or
  :class:`SimulatedSink`, which pulls blocks at a simulated real-time pace so that tests
  and ``benchmarks/audition_latency.py`` run on machines with no sound card.

:func:`render` runs the same vocoder offline, for exporting what was auditioned.

Typical use from the app (callbacks arrive on the player's worker thread: hand them to the
GUI thread, e.g. through a Qt signal)::

    player = AuditionPlayer()           # AudioDeviceError if there is no output device
    player.on_position = lambda s: ...  # seconds, about every 50 ms while playing
    player.open("loop.wav")
    player.play()
    player.set_pitch(-2.5)              # semitones, -12..12, any moment
    player.set_tempo(1.1)               # ratio, 0.5..2.0
    player.close()
"""
from __future__ import annotations

import collections
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from engine.config import PITCH_RANGE, TEMPO_RANGE, check_semitones, check_tempo
from engine.errors import AudioDeviceError

DEFAULT_SR = 44100
STOPPED, PLAYING, PAUSED = "stopped", "playing", "paused"
_FADE_SECONDS = 0.005  # fade after a seek or a reset: a jump in the source must not click


def audition_n_fft(sr: int) -> int:
    """The player's window: about 25 ms (1024 at 44.1 kHz). Shorter than the training
    transforms' 64 ms because half a window is added to the response time of a slider;
    pitch and tempo come out the same (tested), only low notes are a little less clean."""
    return int(2 ** round(math.log2(0.025 * sr)))


def _wrap(x: np.ndarray) -> np.ndarray:
    return x - 2 * np.pi * np.round(x / (2 * np.pi))


class StreamingVocoder:
    """Frame-by-frame pitch shift and time stretch of a mono signal held in memory.

    Each :meth:`process` call renders one frame and returns ``hop_length`` output samples;
    ``pitch`` (frequency factor) and ``tempo`` (rate) may change between calls. Frame j
    of the output is centred ``n_fft // 2`` samples after the first sample returned by
    the call that rendered it.

    Parameters
    ----------
    y : np.ndarray [T], float32
    sr : int
    n_fft, hop_length : int, optional
        Default :func:`audition_n_fft` and ``n_fft // 4`` (the same overlap as
        :mod:`engine.model.transforms`).
    loop : bool
        Read the source circularly.
    """

    def __init__(self, y: np.ndarray, *, sr: int, n_fft: int | None = None,
                 hop_length: int | None = None, loop: bool = False) -> None:
        self.y = np.ascontiguousarray(y, dtype=np.float32)
        if self.y.ndim != 1 or self.y.size == 0:
            raise ValueError(f"need a non-empty mono signal, got shape {self.y.shape}")
        self.sr = sr
        self.n_fft = n_fft or audition_n_fft(sr)
        self.hop_length = hop_length or self.n_fft // 4
        self.loop = loop
        self.pitch = 1.0
        self.tempo = 1.0
        n = self.n_fft
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        n_bins = n // 2 + 1
        self._nominal = np.linspace(0, np.pi, n_bins)
        self._centre = np.pi * np.arange(n_bins)
        self._bins = np.arange(n_bins, dtype=np.float64)
        self._bins_int = np.arange(n_bins)
        self._shifted = np.full((5, n_bins), -np.inf)
        # Steady-state overlap-add gain of analysis x synthesis Hann windows.
        self._norm = float((self._window.astype(np.float64) ** 2).sum() / self.hop_length)
        self._fade = np.linspace(0, 1, max(1, int(_FADE_SECONDS * sr)), dtype=np.float32)
        self.reset(0)

    @property
    def latency(self) -> int:
        """Samples from the first sample a call returns to the centre of its frame."""
        return self.n_fft // 2

    def reset(self, position: float) -> None:
        """Restart at ``position`` (source samples), forgetting phases; fades back in."""
        self.position = float(position)  # source sample under the centre of the next frame
        self._running: np.ndarray | None = None
        self._step: np.ndarray | None = None
        self._ola = np.zeros(self.n_fft, dtype=np.float64)
        self._silent_frames = 0
        self._faded = 0
        # The first frames only fill the overlap-add buffer: their output would precede
        # ``position``.
        for _ in range(self.n_fft // 2 // self.hop_length):
            self._frame()

    def snapshot(self) -> tuple:
        """Everything :meth:`process` depends on, to re-render from this frame later."""
        return (self.position, self._running, self._step, self._ola.copy(),
                self._silent_frames, self._faded)

    def restore(self, state: tuple) -> None:
        """Go back to a :meth:`snapshot` (pitch and tempo are not part of it)."""
        (self.position, self._running, self._step, ola, self._silent_frames,
         self._faded) = state
        self._ola[:] = ola

    @property
    def ended(self) -> bool:
        """True once the frames lie past the end of the source and the tail is flushed."""
        return self._silent_frames > self.n_fft // self.hop_length

    def process(self) -> np.ndarray:
        """Render one frame; returns [hop_length] float32 samples."""
        out = self._frame()
        if self._faded < self._fade.size:
            k = min(out.size, self._fade.size - self._faded)
            out[:k] *= self._fade[self._faded: self._faded + k]
            self._faded += k
        return out

    def process_many(self, k: int) -> np.ndarray:
        """Render ``k`` frames at the current pitch and tempo in one vectorised pass
        (offline rendering); the same samples as ``k`` calls of :meth:`process`.

        Returns
        -------
        np.ndarray [k * hop_length], float32
        """
        n, hop = self.n_fft, self.hop_length
        steps = np.full(k, self.tempo * hop)
        steps[0] = self.position
        positions = np.add.accumulate(steps)  # the same float sums as frame by frame
        starts = np.array([int(round(p)) for p in positions]) - n // 2
        if not self.loop:
            self._silent_frames += int(np.count_nonzero(starts >= self.y.size))
        frames = self._read_many(starts, n + hop)
        spec = np.fft.rfft(np.stack([frames[:, :n], frames[:, hop:]]) * self._window, axis=-1)
        mag, a0 = np.abs(spec[0]), np.angle(spec[0])
        omega = self._nominal + _wrap(np.angle(spec[1]) - a0 - self._nominal * hop) / hop
        c_in = a0 + self._centre
        if self.pitch != 1.0:
            mag, omega, c_in = self._scale_frequency(mag, omega, c_in)
        step = _wrap(omega * hop)
        first = c_in[0] if self._running is None else self._running + self._step
        running = np.empty_like(step)
        running[0] = first
        if k > 1:
            running[1:] = first + np.add.accumulate(step[:-1], axis=0)
        self._running, self._step = running[-1], step[-1]
        padded = np.full((k, mag.shape[1] + 4), -np.inf)
        padded[:, 2:-2] = mag
        windows = np.lib.stride_tricks.sliding_window_view(padded, 5, axis=1)
        peak = np.argmax(windows, axis=2) + self._bins_int - 2  # as _peaks, for k frames
        rows = np.arange(k)[:, None]
        phase = running[rows, peak] + c_in - c_in[rows, peak] - self._centre
        out_frames = np.fft.irfft(mag * np.exp(1j * phase), n=n, axis=-1) * self._window
        buffer = np.zeros(k * hop + n)
        buffer[:n] += self._ola
        for q in range(n // hop):  # overlap-add: each quarter of every frame at once
            buffer[q * hop: q * hop + k * hop] += out_frames[:, q * hop:(q + 1) * hop].ravel()
        out = (buffer[: k * hop] / self._norm).astype(np.float32)
        self._ola[:] = buffer[k * hop:]
        self.position = float(positions[-1] + self.tempo * hop)
        if self.loop:
            self.position %= self.y.size
        if self._faded < self._fade.size:
            m = min(out.size, self._fade.size - self._faded)
            out[:m] *= self._fade[self._faded: self._faded + m]
            self._faded += m
        return out

    def _read_many(self, starts: np.ndarray, n: int) -> np.ndarray:
        idx = starts[:, None] + np.arange(n)
        if self.loop:
            return np.take(self.y, idx, mode="wrap")
        inside = (idx >= 0) & (idx < self.y.size)
        return np.where(inside, self.y[np.clip(idx, 0, self.y.size - 1)], np.float32(0))

    def _read(self, start: int, n: int) -> np.ndarray:
        size = self.y.size
        if self.loop:
            return np.take(self.y, np.arange(start, start + n), mode="wrap")
        x = np.zeros(n, dtype=np.float32)
        lo, hi = max(start, 0), min(start + n, size)
        if hi > lo:
            x[lo - start: hi - start] = self.y[lo:hi]
        return x

    def _frame(self) -> np.ndarray:
        n, hop = self.n_fft, self.hop_length
        start = int(round(self.position)) - n // 2
        if not self.loop and start >= self.y.size:
            self._silent_frames += 1
        # Two frames one hop apart (one read, one FFT call) give the instantaneous
        # frequency, as in the batched vocoder.
        x = self._read(start, n + hop)
        spec = np.fft.rfft(np.stack([x[:n], x[hop:]]) * self._window, axis=1)
        mag, a0 = np.abs(spec[0]), np.angle(spec[0])
        omega = self._nominal + _wrap(np.angle(spec[1]) - a0 - self._nominal * hop) / hop
        c_in = a0 + self._centre
        if self.pitch != 1.0:
            mag, omega, c_in = self._scale_frequency(mag, omega, c_in)
        running = c_in if self._running is None else self._running + self._step
        self._running, self._step = running, _wrap(omega * hop)
        peak = self._peaks(mag)
        phase = running[peak] + c_in - c_in[peak] - self._centre
        frame = np.fft.irfft(mag * np.exp(1j * phase), n=n) * self._window
        self._ola += frame
        out = (self._ola[:hop] / self._norm).astype(np.float32)
        self._ola[:-hop] = self._ola[hop:]
        self._ola[-hop:] = 0.0
        self.position += self.tempo * hop
        if self.loop:
            self.position %= self.y.size
        return out

    def _scale_frequency(self, mag, omega, c_in):
        """As ``engine.model.transforms._scale_frequency``, for one frame."""
        n_bins = mag.shape[-1]
        src = self._bins / self.pitch
        valid = src <= n_bins - 1
        src = np.minimum(src, n_bins - 1)
        q0 = np.minimum(np.floor(src).astype(np.int64), n_bins - 2)
        qf = src - q0
        near = np.round(src).astype(np.int64)
        # ``...`` indexing: one frame [F] or many frames [k, F].
        new_mag = ((1 - qf) * mag[..., q0] + qf * mag[..., q0 + 1]) * valid
        return new_mag, omega[..., near] * self.pitch, c_in[..., near]

    def _peaks(self, mag: np.ndarray) -> np.ndarray:
        """Index of the strongest bin within +-2 bins of each bin (identity phase locking)."""
        shifted = self._shifted  # row r holds mag[k + r - 2] at column k, -inf outside
        shifted[0, 2:], shifted[1, 1:], shifted[2] = mag[:-2], mag[:-1], mag
        shifted[3, :-1], shifted[4, :-2] = mag[1:], mag[2:]
        return np.argmax(shifted, axis=0) + self._bins_int - 2


def _load(source: str | os.PathLike[str] | np.ndarray, sr: int,
          source_sr: int | None) -> np.ndarray:
    if isinstance(source, np.ndarray):
        y = np.asarray(source, dtype=np.float32)
        if y.ndim == 2:
            y = y.mean(axis=1 if y.shape[1] < y.shape[0] else 0).astype(np.float32)
        src_sr = source_sr or sr
        if src_sr != sr:
            import soxr

            y = soxr.resample(y, src_sr, sr, quality="HQ").astype(np.float32)
        if y.size == 0:
            raise ValueError("cannot audition an empty signal")
        return y
    from engine.audio.decode import load_audio

    return load_audio(source, sr=sr)


def render(
    source: str | os.PathLike[str] | np.ndarray,
    *,
    semitones: float = 0.0,
    tempo: float = 1.0,
    sr: int = DEFAULT_SR,
    source_sr: int | None = None,
) -> np.ndarray:
    """Render a transformed clip exactly as the player sounds it (for export to WAV).

    Parameters
    ----------
    source : path or np.ndarray [T] (or [T, C])
    semitones : float
        Pitch shift, -12..12.
    tempo : float
        Tempo ratio, 0.5..2.0 (> 1 faster).
    sr : int
        Sample rate of the result (a file is decoded at this rate).
    source_sr : int, optional
        Rate of an array ``source`` (default ``sr``).

    Returns
    -------
    y : np.ndarray [round(T / tempo)], float32, at ``sr``
    """
    _check_pitch(semitones)
    _check_tempo(tempo)
    y = _load(source, sr, source_sr)
    voc = StreamingVocoder(y, sr=sr)
    voc.pitch, voc.tempo = 2.0 ** (semitones / 12.0), tempo
    n_out = int(round(y.size / tempo))
    blocks, total = [], 0
    while total < n_out and not voc.ended:
        frames = min(256, -(-(n_out - total) // voc.hop_length))
        block = voc.process_many(frames)
        blocks.append(block)
        total += block.size
    out = np.concatenate(blocks)[:n_out]
    return np.pad(out, (0, n_out - out.size))


_check_pitch = check_semitones
_check_tempo = check_tempo


# ----------------------------------------------------------------------------- sinks


class Sink(Protocol):
    """Where the player's samples go. ``callback(outdata)`` fills a float32
    [blocksize, channels] array in place, from the sink's audio thread."""

    sr: int
    blocksize: int
    channels: int

    def start(self, callback: Callable[[np.ndarray], None]) -> None: ...

    def stop(self) -> None: ...


class SoundDeviceSink:
    """The default output device through a sounddevice ``OutputStream``.

    Raises
    ------
    AudioDeviceError
        PortAudio or an output device is missing (one line, for the app to show).
    """

    def __init__(self, *, sr: int = DEFAULT_SR, blocksize: int = 512, channels: int = 2,
                 device: int | str | None = None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise AudioDeviceError(f"no audio output: PortAudio is not available ({exc})") \
                from exc
        try:
            info = sounddevice.query_devices(device, kind="output")
        except Exception as exc:  # PortAudioError or ValueError: no such/default device
            raise AudioDeviceError(f"no audio output device ({str(exc).strip()})") from exc
        self._sd = sounddevice
        self.sr, self.blocksize = sr, blocksize
        self.channels = max(1, min(channels, int(info.get("max_output_channels", 1)) or 1))
        self.device = device
        self.xruns = 0
        self._stream = None

    def start(self, callback: Callable[[np.ndarray], None]) -> None:
        if self._stream is not None:
            return

        def _callback(outdata, frames, time_info, status):
            if status.output_underflow:
                self.xruns += 1
            callback(outdata)

        try:
            self._stream = self._sd.OutputStream(
                samplerate=self.sr, blocksize=self.blocksize, channels=self.channels,
                dtype="float32", device=self.device, callback=_callback, latency="low",
            )
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise AudioDeviceError(f"cannot open the audio output ({str(exc).strip()})") \
                from exc

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class SimulatedSink:
    """Pulls ``blocksize`` frames every ``blocksize / sr`` seconds of wall time from its own
    thread, like a sound card, and keeps figures for tests and benchmarks.

    Attributes
    ----------
    blocks : int
        Blocks pulled so far.
    late_blocks : int
        Blocks this thread itself pulled more than one period late (an xrun on hardware,
        whatever the player did); the schedule then restarts from that moment.
    callback_seconds : np.ndarray
        Duration of each callback (first ``blocks`` entries, up to ``max_blocks``).
    """

    def __init__(self, *, sr: int = DEFAULT_SR, blocksize: int = 512, channels: int = 1,
                 record: bool = False, max_blocks: int = 1 << 17) -> None:
        self.sr, self.blocksize, self.channels = sr, blocksize, channels
        self.record = record
        self.blocks = 0
        self.late_blocks = 0
        self.callback_seconds = np.zeros(max_blocks)
        # When each block is due: the simulated converter's clock (a late callback is
        # still played at its due time unless it is more than a period late).
        self.due_times = np.zeros(max_blocks)
        self._recorded: list[np.ndarray] = []
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    def start(self, callback: Callable[[np.ndarray], None]) -> None:
        if self._thread is not None:
            return
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, args=(callback,), daemon=True,
                                        name="simulated-audio")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def recorded(self) -> np.ndarray:
        """Everything pulled so far, first channel, float32 [blocks * blocksize]."""
        if not self._recorded:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._recorded)

    def _run(self, callback: Callable[[np.ndarray], None]) -> None:
        period = self.blocksize / self.sr
        buf = np.zeros((self.blocksize, self.channels), dtype=np.float32)
        t0 = time.perf_counter()
        i = 0
        while not self._halt.is_set():
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                # This thread was not scheduled for over a period: a sound card would
                # have run dry once and gone on at its own pace, not caught up with a
                # burst of callbacks, so the clock restarts from now.
                self.late_blocks += 1
                t0 = time.perf_counter() - i * period
            t = time.perf_counter()
            callback(buf)
            if i < self.callback_seconds.size:
                self.callback_seconds[i] = time.perf_counter() - t
                self.due_times[i] = t0 + i * period
            if self.record:
                self._recorded.append(buf[:, 0].copy())
            i += 1
            self.blocks = i


# ---------------------------------------------------------------------------- player


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
        self.readahead = max(int(readahead), self.sink.blocksize + audition_n_fft(self.sr) // 4)
        if self.readahead + audition_n_fft(self.sr) > self._RING:
            raise ValueError(f"readahead {readahead} too large for the ring ({self._RING})")
        self.on_state_changed: Callable[[str], None] | None = None
        self.on_position: Callable[[float], None] | None = None
        self.on_finished: Callable[[], None] | None = None
        self.on_error: Callable[[Exception], None] | None = None
        self.underruns = 0
        self.render_seconds = 0.0  # worker time spent in the vocoder (incl. re-renders)
        self.rendered_samples = 0
        self._ring = np.zeros(self._RING, dtype=np.float32)
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
        # (version, read index) whenever _rewind handled a change.
        self.rewinds: collections.deque[tuple[int, int]] = collections.deque(maxlen=1 << 16)
        self._lock = threading.Lock()  # commands vs worker; never taken by the callback
        self._render_lock = threading.Lock()  # vocoder and ring writes; never the callback
        self._wake = threading.Event()
        self._closing = False
        # (time, version, read index) of every parameter change, for latency figures.
        self.changes: collections.deque[tuple[float, int, int]] = collections.deque(
            maxlen=1 << 16)
        self._cb_time = np.zeros(self._LOG)
        self._cb_read = np.zeros(self._LOG, dtype=np.int64)
        self._n_cb = 0
        self._frame_version = np.full(self._LOG, -1, dtype=np.int64)
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
        y = _load(source, self.sr, source_sr)
        with self._lock:
            self._set_state(STOPPED)
            self._vocoder = StreamingVocoder(y, sr=self.sr, loop=self._loop)
            self._duration = y.size / self.sr
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
        self._pitch = _check_pitch(semitones)
        self._changed()

    def set_tempo(self, ratio: float) -> None:
        """Tempo ratio, 0.5..2.0 (> 1 faster); pitch is unchanged."""
        self._tempo = _check_tempo(ratio)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self.changes.append((time.perf_counter(), self._version, max(self._read, self._skip_to)))
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
            # Six blocks (70 ms at 44.1 kHz, about 3 ms of work): a cushion for when
            # the worker thread is not scheduled for a while after the cut.
            target = max(self._read, self._skip_to) + 6 * self.sink.blocksize
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
        i = self._n_cb
        self._cb_time[i % self._LOG] = time.perf_counter()
        self._cb_read[i % self._LOG] = r
        self._n_cb = i + 1
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
        start = r % self._RING
        first = min(k, self._RING - start)
        outdata[:first, 0] = self._ring[start: start + first]
        outdata[first:k, 0] = self._ring[: k - first]
        outdata[k:, 0] = 0.0
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]
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
            seek, self._pending_seek = self._pending_seek, None
            if voc is not None and seek is not None:
                voc.loop = self._loop
                voc.reset(seek * self.sr)
                self._seek_seconds = seek
                self._skip_to = self._written
                self._epoch_start = self._n_frames
                self._started = False
                self._snapshots.clear()
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
        self.rewinds.append((self._version, max(self._read, self._skip_to)))
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
        t = time.perf_counter()
        block = voc.process()
        self.render_seconds += time.perf_counter() - t
        self.rendered_samples += block.size
        w = self._written
        i = self._n_frames % self._LOG
        self._frame_version[i] = version
        self._frame_centre[i] = w + voc.latency
        self._frame_source[i] = source
        self._n_frames += 1
        start = w % self._RING
        first = min(block.size, self._RING - start)
        self._ring[start: start + first] = block[:first]
        self._ring[: block.size - first] = block[first:]
        self._written = w + block.size  # publish after the samples are in place

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

    # -------------------------------------------------------------- measurement

    def frame_centre(self, version: int) -> int | None:
        """Ring index of the centre of the first frame rendered with parameter
        ``version`` or a later one (None if not rendered yet)."""
        n_fr = min(self._n_frames, self._LOG)
        frames = np.flatnonzero(self._frame_version[:n_fr] >= version)
        return int(self._frame_centre[frames[0]]) if frames.size else None

    def locate(self, index: int, due_times: np.ndarray | None = None
               ) -> tuple[int, float] | None:
        """(callback number, wall time) at which the sink played ring sample ``index``
        (None if not played yet). ``due_times[j]``, when given, replaces the time of
        callback j (a simulated sink's converter clock)."""
        n_cb = min(self._n_cb, self._LOG)
        cb_read = self._cb_read[:n_cb]
        j = int(np.searchsorted(cb_read, index, side="right")) - 1
        if j < 0 or index >= cb_read[j] + self.sink.blocksize:
            return None
        start = self._cb_time[j] if due_times is None else due_times[j]
        return j, float(start + (index - cb_read[j]) / self.sr)

    def change_latencies(self, due_times: np.ndarray | None = None) -> np.ndarray:
        """Seconds from each set_pitch/set_tempo call to the moment the sink played the
        centre of the first frame rendered with it (the change at full weight).

        Parameters
        ----------
        due_times : np.ndarray, optional
            Play time of each block (e.g. ``SimulatedSink.due_times``) instead of the
            time its callback ran.

        Returns
        -------
        np.ndarray [n_changes]; NaN for a change not yet played.
        """
        out = []
        for t_set, version, _ in list(self.changes):
            centre = self.frame_centre(version)
            played = None if centre is None else self.locate(centre, due_times)
            out.append(np.nan if played is None else played[1] - t_set)
        return np.asarray(out)


__all__ = [
    "AuditionPlayer", "SimulatedSink", "SoundDeviceSink", "StreamingVocoder", "audition_n_fft",
    "render", "PITCH_RANGE", "TEMPO_RANGE",
]
