"""The torch backend: a checkpoint's network rebuilt and run by torch (development and
training installs; the bundled app runs :mod:`engine.model.onnx_backend` instead)."""
from __future__ import annotations

import numpy as np
import torch

from engine.model.checkpoint import CheckpointInfo, load_checkpoint


class TorchBackend:
    """Runs ``[N, T]`` chunks through the network a checkpoint rebuilds.

    Parameters
    ----------
    info : the checkpoint's header (:func:`engine.model.checkpoint.read_checkpoint_info`).
    device : torch device string.
    """

    name = "torch"

    def __init__(self, info: CheckpointInfo, *, device: str = "cpu") -> None:
        self.model, _ = load_checkpoint(info.path, device=device)
        self.device = device
        self.subspaces = tuple(info.subspaces)

    def __call__(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, T]`` float32 -> ``{subspace: [N, D]}``."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)).to(self.device)
            emb = self.model(x)["embeddings"]
            return {s: emb[s].float().cpu().numpy() for s in self.subspaces}
