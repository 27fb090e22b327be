"""Pitch shift and time stretch: batched torch phase vocoders, on whatever device ``y`` is.

These are the variant augmentations of the paper (Table IV: pitch shift -4..+4 semitones
continuous, time stretch 0.7..1.3) used by the trainer on the training device, by the
invariance curves, shifted queries and ``loev match``. The audition player runs a
streaming numpy version of the same vocoder (in ``engine.audio``), tested to agree.

One vocoder does both jobs. From the STFT ``X`` (Hann, ``hop_length`` H) it builds output
frame j, synthesised every H samples, from the analysis position ``t_j`` (in frames):

* time stretch by ``rate``: ``t_j = j * rate``, magnitude interpolated between the two
  frames around ``t_j``, and the instantaneous frequency of each bin measured from the
  phase advance between them (a fixed lag of H samples, so it does not depend on rate);
* pitch shift by ``p = 2 ** (semitones / 12)``: ``t_j = j`` and the frequency axis is
  scaled, output bin k taking the magnitude of source bin k / p and p times its
  instantaneous frequency (a frequency-domain shift in the spirit of Laroche & Dolson,
  "New phase-vocoder techniques for pitch-shifting", 1999). Unlike "stretch by 1 / p then
  resample", the duration never changes, nothing aliases, and per-item amounts stay one
  batched gather instead of a resampler per item.

The phase of output frame j is the running sum of instantaneous frequency x H, so every
partial stays continuous from frame to frame. Everything is per item (gathers with
per-item indices), so a batch with different amounts equals separate calls.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from engine.audio.decode import audio_info, read_chunks
from engine.audio.transforms import default_n_fft, source_samples_needed
from engine.config import CHUNK_SAMPLES, PITCH_RANGE, SAMPLE_RATE
from engine.model.embed import chunk_starts

# The vocoder itself is valid over a wider range of rates than a user may ask for (the
# trainer's stretched views and the match's refinements stay inside it).
RATE_RANGE = (0.25, 4.0)


def _as_batch(y: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2):
        raise ValueError(f"y must be a torch tensor [T] or [B, T], got {getattr(y, 'shape', y)}")
    return (y[None], True) if y.dim() == 1 else (y, False)


def _per_item(value: float | torch.Tensor, batch: int, like: torch.Tensor, name: str,
              lo: float, hi: float) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=torch.float32, device=like.device).reshape(-1)
    if v.numel() == 1:
        v = v.expand(batch)
    if v.numel() != batch:
        raise ValueError(f"{name} has {v.numel()} values for a batch of {batch}")
    if not bool(torch.isfinite(v).all()) or bool((v < lo).any()) or bool((v > hi).any()):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {v.tolist()}")
    return v


def _window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=like.device, dtype=torch.float32)


def _vocode(y: torch.Tensor, positions: torch.Tensor | None, pitch: torch.Tensor, *,
            n_fft: int, hop_length: int, length: int) -> torch.Tensor:
    """The shared phase vocoder.

    Works in a [B, frames, bins] layout so that picking frames and bins are row copies
    and gathers along the contiguous axis (several times faster on CPU than gathers along
    the middle axis).

    Parameters
    ----------
    y : Tensor [B, T], float32
    positions : Tensor [B, J] or None
        Analysis position of each output frame, in frames of ``y``'s STFT; None for
        frame j at position j (pitch shift).
    pitch : Tensor [B]
        Frequency scale factor per item (1 = unchanged).
    length : int
        Output samples.

    Returns
    -------
    Tensor [B, length]
    """
    if y.shape[-1] <= n_fft // 2:
        raise ValueError(f"signal of {y.shape[-1]} samples is too short for n_fft={n_fft}")
    window = _window(n_fft, y)
    spec = torch.stft(y, n_fft, hop_length, window=window, center=True, return_complex=True)
    batch, n_bins, n_frames = spec.shape
    if n_frames < 2:
        raise ValueError(f"signal of {y.shape[-1]} samples is too short for n_fft={n_fft}")
    spec = spec.transpose(1, 2).contiguous()  # [B, N, F]
    mag, ang = spec.abs(), spec.angle()

    if positions is None:
        # Frame j's phase advance is measured from j to j + 1 (the last from N-2 to N-1).
        out_mag = mag
        a0 = torch.cat([ang[:, :-1], ang[:, -2:-1]], dim=1)
        a1 = torch.cat([ang[:, 1:], ang[:, -1:]], dim=1)
    else:
        pos = positions.clamp(0, n_frames - 1)
        i0 = pos.floor().long().clamp(max=n_frames - 2)
        frac = (pos - i0).unsqueeze(-1)  # [B, J, 1]
        rows = torch.arange(batch, device=y.device)[:, None]
        out_mag = (1 - frac) * mag[rows, i0] + frac * mag[rows, i0 + 1]
        a0, a1 = ang[rows, i0], ang[rows, i0 + 1]

    # Instantaneous frequency (radians per sample) from the phase advance over one hop.
    nominal = torch.linspace(0, math.pi, n_bins, device=y.device)  # [F]
    dphi = a1 - a0 - nominal * hop_length
    dphi = dphi - 2 * math.pi * torch.round(dphi / (2 * math.pi))
    omega = nominal + dphi / hop_length  # [B, J, F]
    # Phases are tracked at the window centre, where every bin of one partial's main lobe
    # agrees (frame-start phases alternate by pi from bin to bin for a Hann window), so a
    # lobe can be moved to other bins (pitch) without cancelling itself.
    centre = math.pi * torch.arange(n_bins, device=y.device, dtype=torch.float32)
    c_in = a0 + centre
    if bool((pitch != 1).any()):
        out_mag, omega, c_in = _scale_frequency(out_mag, omega, c_in, pitch)

    # Running phase of every bin (exclusive sum of its advances); each step is wrapped
    # first so that the float32 sum stays small on long tracks.
    step = omega * hop_length
    step = step - 2 * math.pi * torch.round(step / (2 * math.pi))
    running = c_in[:, :1] + torch.cumsum(step, dim=1) - step
    phase = _lock_phases(out_mag, running, c_in) - centre
    out = torch.polar(out_mag, phase).transpose(1, 2)
    return torch.istft(out, n_fft, hop_length, window=window, center=True, length=length)


def _lock_phases(mag: torch.Tensor, running: torch.Tensor, c_in: torch.Tensor) -> torch.Tensor:
    """Identity phase locking (Laroche & Dolson, 1999): each bin takes the running phase
    of the strongest bin within +-2 bins plus its own analysed offset from that bin, so
    the bins of one partial stay coherent (a plain vocoder lets them drift apart:
    "phasiness", and a lost main lobe when the first frame is not a clean sinusoid).

    Parameters
    ----------
    mag, running, c_in : Tensor [B, J, F]
        Output magnitudes, running centre phases, analysed centre phases.
    """
    batch, n_frames, n_bins = mag.shape
    _, peak = F.max_pool1d(mag.reshape(batch * n_frames, 1, n_bins), 5, stride=1, padding=2,
                           return_indices=True)  # the fastest CPU argmax over +-2 bins
    peak = peak.reshape(batch, n_frames, n_bins)
    return running.gather(-1, peak) + c_in - c_in.gather(-1, peak)


def _scale_frequency(mag: torch.Tensor, omega: torch.Tensor, c_in: torch.Tensor,
                     pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output bin k takes source bin k / p: magnitude interpolated linearly, frequency
    (scaled by p) and centre phase from the nearest source bin (interpolating across two
    partials would invent a third). Bins whose source lies above Nyquist are silent.

    Parameters
    ----------
    mag, omega, c_in : Tensor [B, J, F]
    pitch : Tensor [B]
    """
    batch, n_frames, n_bins = mag.shape
    src = torch.arange(n_bins, device=mag.device, dtype=torch.float32) / pitch[:, None]  # [B, F]
    valid = (src <= n_bins - 1).to(mag.dtype).unsqueeze(1)
    src = src.clamp(max=n_bins - 1)
    q0 = src.floor().long().clamp(max=n_bins - 2)
    qf = (src - q0).unsqueeze(1)
    expand = (batch, n_frames, n_bins)
    g0, g1 = q0.unsqueeze(1).expand(expand), (q0 + 1).unsqueeze(1).expand(expand)
    gn = src.round().long().unsqueeze(1).expand(expand)
    new_mag = ((1 - qf) * mag.gather(-1, g0) + qf * mag.gather(-1, g1)) * valid
    return new_mag, omega.gather(-1, gn) * pitch[:, None, None], c_in.gather(-1, gn)


def pitch_shift(
    y: torch.Tensor,
    semitones: float | torch.Tensor,
    *,
    sr: int = SAMPLE_RATE,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> torch.Tensor:
    """Shift pitch by a continuous number of semitones, keeping the duration.

    Parameters
    ----------
    y : Tensor [T] or [B, T]
        Audio on any device; float16/bfloat16 are processed in float32.
    semitones : float or Tensor [B]
        One amount for all items or one per item, in [-12, 12].
    sr : int
        Sample rate; sets the default ``n_fft`` (about 64 ms).
    n_fft, hop_length : int, optional
        STFT size (default ``default_n_fft(sr)``) and hop (default ``n_fft // 4``).

    Returns
    -------
    Tensor, same shape, dtype and device as ``y``.
    """
    yb, single = _as_batch(y)
    n_fft = n_fft or default_n_fft(sr)
    hop_length = hop_length or n_fft // 4
    semis = _per_item(semitones, yb.shape[0], yb, "semitones", *PITCH_RANGE)
    pitch = torch.pow(2.0, semis / 12.0)
    length = yb.shape[-1]
    out = _vocode(yb.float(), None, pitch, n_fft=n_fft, hop_length=hop_length,
                  length=length).to(y.dtype)
    return out[0] if single else out


def time_stretch(
    y: torch.Tensor,
    rate: float | torch.Tensor,
    *,
    out_samples: int | None = None,
    sr: int = SAMPLE_RATE,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> torch.Tensor:
    """Change tempo by ``rate`` (> 1 faster) without changing pitch.

    Parameters
    ----------
    y : Tensor [T] or [B, T]
    rate : float or Tensor [B]
        Tempo factor per item, in [0.25, 4].
    out_samples : int, optional
        Exactly this many samples come out. ``y`` must then hold at least
        ``source_samples_needed(out_samples, rate)`` samples for every item (the trainer
        cuts enough source audio: no padding). Without it the output has
        ``round(T / rate)`` samples, which requires one rate for the whole batch.
    sr, n_fft, hop_length
        As :func:`pitch_shift`.

    Returns
    -------
    Tensor [out_samples] or [B, out_samples], same dtype and device as ``y``.
    """
    yb, single = _as_batch(y)
    n_fft = n_fft or default_n_fft(sr)
    hop_length = hop_length or n_fft // 4
    rates = _per_item(rate, yb.shape[0], yb, "rate", *RATE_RANGE)
    length = yb.shape[-1]
    if out_samples is None:
        if bool((rates != rates[0]).any()):
            raise ValueError("different rates per item need out_samples (one output length)")
        out_samples = int(round(length / float(rates[0])))
    else:
        # The rates arrive as float32 (1.3 -> 1.3000000477): allow that rounding, not more.
        needed = source_samples_needed(out_samples, float(rates.max()) * (1 - 1e-6))
        if length < needed:
            raise ValueError(
                f"time_stretch to {out_samples} samples at rate {float(rates.max()):.4f} "
                f"needs {needed} input samples, got {length}"
            )
    n_frames = out_samples // hop_length + 1
    frames = torch.arange(n_frames, device=yb.device, dtype=torch.float32)
    positions = frames[None, :] * rates[:, None]
    ones = torch.ones_like(rates)
    out = _vocode(yb.float(), positions, ones, n_fft=n_fft, hop_length=hop_length,
                  length=out_samples).to(y.dtype)
    return out[0] if single else out


def pitch_shift_np(y: np.ndarray, semitones: float, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """:func:`pitch_shift` for a numpy signal [T] or [B, T] ."""
    with torch.no_grad():
        out = pitch_shift(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)),
                          semitones, sr=sr)
    return out.numpy()


def time_stretch_np(y: np.ndarray, rate: float, *, out_samples: int | None = None,
                    sr: int = SAMPLE_RATE) -> np.ndarray:
    """:func:`time_stretch` for a numpy signal [T] or [B, T] ."""
    with torch.no_grad():
        out = time_stretch(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), rate,
                           out_samples=out_samples, sr=sr)
    return out.numpy()


def pitch_shift_versions_np(y: np.ndarray, semitones: list[float] | np.ndarray, *,
                            sr: int = SAMPLE_RATE, group: int = 4) -> list[np.ndarray]:
    """One signal shifted by each amount (invariance curves, ``loev match``).

    Parameters
    ----------
    y : np.ndarray [T]
    semitones : sequence of float [K]
    group : int
        Amounts per batched call (bounds memory on long signals).

    Returns
    -------
    list of K np.ndarray [T], float32
    """
    base = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    out: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(semitones), group):
            amounts = torch.tensor(list(semitones[i: i + group]), dtype=torch.float32)
            out.extend(pitch_shift(base.expand(len(amounts), -1), amounts, sr=sr).numpy())
    return out


def time_stretch_versions_np(y: np.ndarray, rates: list[float] | np.ndarray, *,
                             sr: int = SAMPLE_RATE, out_samples: int | None = None,
                             group: int = 4) -> list[np.ndarray]:
    """One signal stretched by each rate (invariance curves, ``loev match``).

    Parameters
    ----------
    y : np.ndarray [T]
    rates : sequence of float [K]
    out_samples : int, optional
        None: version k is the whole signal stretched, ``round(T / rate_k)`` samples.
        Otherwise every version has ``out_samples`` samples, stretched from the
        ``source_samples_needed(out_samples, rate_k)`` samples centred in ``y`` (so all
        versions show the same moment of the track); ``y`` must be long enough for the
        largest rate.

    Returns
    -------
    list of K np.ndarray, float32
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    out: list[np.ndarray] = []
    with torch.no_grad():
        if out_samples is None:
            for r in rates:
                out.append(time_stretch(torch.from_numpy(y), float(r), sr=sr).numpy())
            return out
        for i in range(0, len(rates), group):
            chunk = [float(r) for r in rates[i: i + group]]
            width = source_samples_needed(out_samples, max(chunk))
            if width > y.size:
                raise ValueError(f"{y.size} samples cannot fill {out_samples} at rate "
                                 f"{max(chunk)} (needs {width})")
            rows = []
            for r in chunk:
                need = source_samples_needed(out_samples, r)
                start = max(0, min(y.size // 2 - need // 2, y.size - width))
                rows.append(y[start: start + width])
            batch = torch.from_numpy(np.stack(rows))
            rate_t = torch.tensor(chunk, dtype=torch.float32)
            out.extend(time_stretch(batch, rate_t, out_samples=out_samples, sr=sr).numpy())
    return out


def transformed_chunks(path: str, *, shift: float, stretch: float, max_chunks: int
                       ) -> np.ndarray | None:
    """An embedder's evenly spaced chunks of ``path``, pitch-shifted and stretched.

    Only those chunks are read and transformed (a one-hour file never sits in memory),
    each cut from enough source audio that the stretched chunk is full (as the trainer
    does, docs/DESIGN.md section 3). None when the file is shorter than one source chunk.

    Returns
    -------
    np.ndarray [N, CHUNK_SAMPLES] or None
    """
    # +2: time_stretch checks the rate as float32, which can round up by a sample
    src = max(CHUNK_SAMPLES, source_samples_needed(CHUNK_SAMPLES, stretch) + 2)
    n = int(audio_info(path).duration * SAMPLE_RATE)
    if n < src:
        return None
    starts = chunk_starts(n, max_chunks=max_chunks, chunk_samples=src) / SAMPLE_RATE
    chunks = read_chunks(path, starts, chunk_samples=src, sr=SAMPLE_RATE)
    if chunks.shape[1] < src:
        return None
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32))
        if shift != 0.0:
            x = pitch_shift(x, float(shift), sr=SAMPLE_RATE)
        if stretch != 1.0:
            x = time_stretch(x, float(stretch), out_samples=CHUNK_SAMPLES, sr=SAMPLE_RATE)
        return x[:, :CHUNK_SAMPLES].contiguous().numpy()
