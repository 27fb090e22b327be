"""Where to put the near-duplicate threshold: vibe distances of copies vs distinct sounds.

Generates 12 sounds (tones, chords, click tracks, noise bursts, drum hits, and a 6 s
version of the 3 s A4 tone), each as 16-bit WAV, at -6 dB, as Ogg Vorbis and resampled
to 44.1 kHz 24-bit FLAC; embeds them with the shipped model (or ``--checkpoint``) and
prints, per subspace, the largest distance between two versions of one sound and the
smallest distances between versions of two different sounds, with and without the
duration rule (engine.library.duplicates.DURATION_TOLERANCE).

    python benchmarks/duplicate_threshold.py [--checkpoint FILE] [--out DIR]
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-embed", action="store_true", help="only the fingerprint distances")
    args = ap.parse_args()
    import numpy as np
    import soundfile as sf
    import soxr

    from engine.library.duplicates import DURATION_TOLERANCE, NEAR_DISTANCE
    from engine.model.embed import Embedder
    from tests.fixtures_audio import clicks, note_hz, tone

    sr = 16000
    rng = np.random.default_rng(0)

    def chord(ms, s=3.0):
        return sum(tone(note_hz(m), s) for m in ms) / len(ms)

    def noise(s=1.0, c=2000):
        y = rng.normal(size=int(s * sr)).astype(np.float32)
        return 0.3 * y * np.exp(-np.arange(len(y)) / sr * c / 400).astype(np.float32)

    def drum(f0, s=1.0):
        t = np.arange(int(s * sr)) / sr
        y = 0.8 * np.sin(2 * np.pi * f0 * t * np.exp(-t * 3)) * np.exp(-t * 8)
        return y.astype(np.float32)

    src = {"a4": tone(440., 3), "c4": tone(note_hz(60), 3), "e4": tone(note_hz(64), 3),
           "cmaj": chord([60, 64, 67]), "amin": chord([57, 60, 64]), "click120": clicks(120),
           "click90": clicks(90), "noise": noise(), "noise2": noise(1.0, 500),
           "kick": drum(60), "tom": drum(120), "a4long": tone(440., 6)}
    out = args.out or Path(tempfile.mkdtemp(prefix="loev-dups-"))
    files: dict[str, list[tuple[str, float]]] = {}
    for k, y in src.items():
        dur = len(y) / sr
        sf.write(out / f"{k}.wav", y, sr, subtype="PCM_16")
        sf.write(out / f"{k}_gain.wav", 0.5 * y, sr, subtype="PCM_16")
        sf.write(out / f"{k}.ogg", y, sr, format="OGG")
        sf.write(out / f"{k}_44k.flac", soxr.resample(y, sr, 44100), 44100, subtype="PCM_24")
        files[k] = [(str(out / n), dur) for n in (f"{k}.wav", f"{k}_gain.wav", f"{k}.ogg",
                                                   f"{k}_44k.flac")]
    from engine.library.duplicates import fingerprint, fingerprint_distance

    fps = {f: fingerprint(f) for fs in files.values() for f, _ in fs}
    same = sorted((fingerprint_distance(fps[a], fps[b]), a, b) for fs in files.values()
                  for (a, _), (b, _) in itertools.combinations(fs, 2))
    diff = sorted((fingerprint_distance(fps[a], fps[b]), k1, k2)
                  for k1, k2 in itertools.combinations(files, 2)
                  for (a, da), (b, db) in itertools.product(files[k1], files[k2])
                  if abs(da - db) / max(da, db) <= DURATION_TOLERANCE)
    print(f"fingerprint copies: max {same[-1][0]:.4f} ({Path(same[-1][1]).name} / "
          f"{Path(same[-1][2]).name}) | distinct (duration rule): min {diff[0][0]:.4f} "
          f"({diff[0][1]}/{diff[0][2]}), 5th {diff[4][0]:.4f}", flush=True)
    if args.no_embed:
        return
    emb = Embedder(args.checkpoint)
    t0 = time.perf_counter()
    vecs = {f: emb.embed_file(f) for fs in files.values() for f, _ in fs}
    print(f"{len(vecs)} files embedded in {time.perf_counter() - t0:.1f} s; threshold in "
          f"use {NEAR_DISTANCE}, duration tolerance {DURATION_TOLERANCE:.0%}")
    def dist(a: str, b: str, sub: str) -> float:
        if sub == "max":  # the largest of the subspaces' distances
            return max(dist(a, b, s) for s in emb.subspaces)
        if sub == "mean":  # the concatenated V++ (equal weights)
            return float(np.mean([dist(a, b, s) for s in emb.subspaces]))
        return 1 - float(vecs[a][sub] @ vecs[b][sub])

    for sub in (*emb.subspaces, "mean", "max"):
        same = [dist(a, b, sub)
                for fs in files.values() for (a, _), (b, _) in itertools.combinations(fs, 2)]
        diff, diff_dur = [], []
        for k1, k2 in itertools.combinations(files, 2):
            for (a, da), (b, db) in itertools.product(files[k1], files[k2]):
                d = dist(a, b, sub)
                diff.append((d, k1, k2))
                if abs(da - db) / max(da, db) <= DURATION_TOLERANCE:
                    diff_dur.append((d, k1, k2))
        diff.sort()
        diff_dur.sort()
        worst = max(same)
        print(f"{sub:10s} copies: max {worst:.4f} mean {np.mean(same):.4f} | distinct: "
              f"min {diff[0][0]:.4f} ({diff[0][1]}/{diff[0][2]}), with the duration rule "
              f"min {diff_dur[0][0]:.4f} ({diff_dur[0][1]}/{diff_dur[0][2]}), "
              f"5th {diff_dur[4][0]:.4f}")


if __name__ == "__main__":
    main()
