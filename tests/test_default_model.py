"""The shipped default checkpoint (resources/loev-default.safetensors): it loads, and its key
subspace separates keys the way music does (a golden test on synthetic progressions).

The margins are set from measurements of the shipped model (cosine distances in the
pitch subspace: same progression a tritone up 1.64-1.71, a whole tone up 0.86, a fifth up
0.37; same key with another timbre 0.06-0.12; in the invariant subspace, a tritone up
0.089 with the timbre descriptor and projector, whose shares were chosen to stay below
0.1), with room for another machine's arithmetic, not for a worse model.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.model.checkpoint import read_checkpoint_info
from engine.model.embed import Embedder
from engine.resources import default_checkpoint

SR = 16000
I_IV_V_I = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))


def note(freq: float, seconds: float, timbre: str) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if timbre == "saw":
        y = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 9))
    else:  # square: odd harmonics only, another colour of the same notes
        y = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 12, 2))
    return y * np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t)


def progression(root_midi: int, timbre: str, seconds_per_chord: float = 2.0) -> np.ndarray:
    """I-IV-V-I in the major key of ``root_midi``, a bass note under each triad."""
    hz = lambda midi: 440.0 * 2 ** ((midi - 69) / 12)  # noqa: E731
    chords = []
    for triad in I_IV_V_I:
        y = sum(note(hz(root_midi + i), seconds_per_chord, timbre) for i in triad)
        chords.append(y + note(hz(root_midi + triad[0] - 12), seconds_per_chord, timbre))
    y = np.concatenate(chords)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def embedder():
    path = default_checkpoint()
    assert path.exists(), f"the shipped model is missing: {path}"
    return Embedder(path)


def test_shipped_checkpoint_loads_with_three_subspaces(embedder):
    info = read_checkpoint_info(default_checkpoint())
    assert embedder.model_id == info.model_id
    assert embedder.subspaces == ("invariant", "pitch", "tempo")
    vecs = embedder.embed_audio(progression(60, "saw"))
    for name, v in vecs.items():
        assert v.shape == (info.dims[name],) and np.isfinite(v).all()
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.usefixtures("one_torch_thread")
def test_key_subspace_separates_a_known_key_pair(embedder):
    names = {"C saw": (60, "saw"), "C square": (60, "square"), "F# saw": (66, "saw"),
             "D saw": (62, "saw"), "G saw": (67, "saw")}
    ys = [progression(root, timbre) for root, timbre in names.values()]
    vecs = dict(zip(names, embedder.embed_audio_batch(ys)))

    def dist(a: str, b: str, space: str = "pitch") -> float:
        return 1.0 - float(vecs[a][space] @ vecs[b][space])

    # Another key is far in the key subspace (keys with nothing in common, as C and F#, are
    # orthogonal in the key projector's part: their closeness is 0); another timbre in the
    # same key is near.
    assert dist("C saw", "F# saw") > 0.9
    assert dist("C saw", "C square") < 0.3
    # Nearer keys on the circle of fifths are nearer: a fifth, a whole tone, a tritone.
    assert dist("C saw", "G saw") < dist("C saw", "D saw") < dist("C saw", "F# saw")
    # The invariant subspace barely moves under the same transposition.
    assert dist("C saw", "F# saw", "invariant") < 0.1
