"""The onnxruntime backend: a checkpoint's ONNX graph, run without torch.

``loev-train export`` writes ``NAME.onnx`` next to ``NAME.safetensors``: the embedding
network from its STFT spectra (:mod:`engine.model.stft` computes them here in numpy), with
the checkpoint's model id, config and subspace dimensions in the ONNX metadata. The
safetensors file stays the model's identity; an ONNX file whose recorded id is not the
checkpoint's is refused, so that a library built with one checkpoint is never queried
with vectors of another. This module never imports torch: it is what the bundled app runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.errors import CheckpointError
from engine.model.checkpoint import CheckpointInfo
from engine.model.stft import StftSpec, stft_spectrum

ONNX_FORMAT = "loev-explorer-onnx/1"
OPSET = 18


def onnx_path(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the ONNX export of a ``.safetensors`` checkpoint lives: beside it, ``NAME.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def _threads() -> int:
    # The app's embedding process sets OMP_NUM_THREADS to leave a core to the window;
    # onnxruntime sizes its own pool, so it is told the same.
    return max(0, int(os.environ.get("OMP_NUM_THREADS") or 0))


class OnnxBackend:
    """Runs ``[N, chunk_samples]`` chunks through a checkpoint's ONNX graph.

    Parameters
    ----------
    info : the checkpoint's header (:func:`engine.model.checkpoint.read_checkpoint_info`).
    path : the ONNX file; ``NAME.onnx`` beside the checkpoint when None.
    """

    name = "onnxruntime"

    def __init__(self, info: CheckpointInfo, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else onnx_path(info.path)
        if not self.path.is_file():
            raise CheckpointError(
                f"{info.path}: no ONNX export beside it ({self.path.name}); without torch the "
                "model runs through onnxruntime: write it with `loev-train export CHECKPOINT`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != ONNX_FORMAT:
            raise CheckpointError(f"{self.path}: not a LOEV ONNX export (format {meta.get('format')!r})")
        if meta.get("loev_model_id") != info.model_id:
            raise CheckpointError(
                f"{self.path}: exported from another checkpoint (model {meta.get('loev_model_id')}, "
                f"{info.path.name} is model {info.model_id}); re-export it with `loev-train export`")
        try:
            self.specs = {k: StftSpec.from_dict(v) for k, v in json.loads(meta["loev_spectra"]).items()}
            self.chunk_samples = int(meta["loev_chunk_samples"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{self.path}: malformed LOEV metadata ({e})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != list(self.specs) or outputs != list(info.subspaces):
            raise CheckpointError(f"{self.path}: graph inputs {inputs} / outputs {outputs} do not "
                                  f"match its metadata ({list(self.specs)} / {list(info.subspaces)})")
        self.subspaces = tuple(outputs)

    def __call__(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, chunk_samples]`` float32 -> ``{subspace: [N, D]}``."""
        chunks = np.ascontiguousarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != self.chunk_samples:
            raise ValueError(f"chunks must be [N, {self.chunk_samples}], got {chunks.shape}")
        feeds = {name: stft_spectrum(chunks, spec) for name, spec in self.specs.items()}
        return dict(zip(self.subspaces, self.session.run(None, feeds)))
