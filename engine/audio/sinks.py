"""Where the audition player's samples go: the sound card, or a wall-clock simulation.

:class:`SoundDeviceSink` plays through a sounddevice ``OutputStream``;
:class:`SimulatedSink` pulls blocks at a real-time pace from its own thread, so that
tests, benchmarks and machines with no sound card run the same player.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from engine.errors import AudioDeviceError

DEFAULT_SR = 44100


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

    def __init__(self, *, sr: int = DEFAULT_SR, blocksize: int = 512, channels: int = 2,
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
        """Everything pulled so far, float32 [blocks * blocksize, channels]."""
        if not self._recorded:
            return np.zeros((0, self.channels), dtype=np.float32)
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
                self._recorded.append(buf.copy())
            i += 1
            self.blocks = i


__all__ = ["DEFAULT_SR", "SimulatedSink", "Sink", "SoundDeviceSink"]
