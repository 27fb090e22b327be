"""``loev-train export``: the app's model files from a run's latest state.

``loev-train fit`` already writes ``RUN_DIR/model.safetensors`` at every checkpoint; this
command rebuilds it (or writes it elsewhere) from ``RUN_DIR/train_state.json``, e.g. for a
run that was stopped before its first export or to ship a copy under another name, and
writes ``NAME.onnx`` next to it: the embedding network for onnxruntime, which is how the
bundled app (no torch) runs a model. Given a ``.safetensors`` checkpoint instead of a run
folder, it writes only that checkpoint's ``.onnx``.

The safetensors file stays the source of truth (the trainer reads it, the library records
its id); the ONNX file is derived from it and carries its model id, config and subspace
dimensions in its metadata, so that the engine can refuse an ONNX file that does not
belong to the checkpoint beside it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from engine.config import ModelConfig
from engine.model.checkpoint import load_checkpoint, read_checkpoint_info
from engine.model.network import LoevNet
from engine.model.onnx_backend import ONNX_FORMAT, OPSET, onnx_path

_BATCH_EXAMPLE = 2  # traced with a batch of 2 (the batch axis is dynamic)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a loev-train fit run folder, or a .safetensors checkpoint "
                                   "(then only its .onnx is written)")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/model.safetensors); "
                                               "the .onnx goes next to it, as the engine expects")


class SpectralGraph(nn.Module):
    """The embedding network from its STFT spectra: what the ONNX file runs.

    Inputs are the spectra of the network's waveform-facing modules (the frontend, then a
    structured pitch branch), each ``[B, frames, bins]`` as :class:`engine.model.stft.StftSpec`
    describes; outputs are the subspace embeddings ``[B, D]`` in ``cfg.subspaces`` order.
    """

    def __init__(self, net: LoevNet) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).eval()
        self.subspaces = tuple(net.cfg.subspaces)
        self.pitch = self.net.structured["pitch"] if "pitch" in self.net.structured else None
        if self.pitch is not None:
            # LoevNet.embed hands the waveform to the pitch branch alone; here the branch
            # gets its spectrum in the waveform's place, and starts from it.
            self.net.structured["pitch"] = _FromSpectrum(self.pitch)

    def spectra(self) -> dict[str, nn.Module]:
        """Input name -> the module whose ``stft_spec`` and ``spectrum`` produce it."""
        out: dict[str, nn.Module] = {"power": self.net.frontend}
        if self.pitch is not None:
            out["pitch_spectrum"] = self.pitch
        return out

    def forward(self, power: torch.Tensor, pitch_spectrum: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        spec = self.net.frontend.from_spectrum(power)
        emb = self.net.embed(pitch_spectrum if pitch_spectrum is not None else power, spec)
        return tuple(emb[s] for s in self.subspaces)


class _FromSpectrum(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return self.branch.from_spectrum(spectrum)


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the ONNX graph of ``checkpoint`` (default: next to it as ``NAME.onnx``)."""
    checkpoint = Path(checkpoint)
    info = read_checkpoint_info(checkpoint)
    net, cfg = load_checkpoint(checkpoint)
    graph = SpectralGraph(net)
    n = cfg.frontend.chunk_samples
    example = torch.zeros(_BATCH_EXAMPLE, n)
    names, inputs, specs = [], [], {}
    with torch.inference_mode():
        for name, module in graph.spectra().items():
            names.append(name)
            inputs.append(module.spectrum(example).contiguous())
            specs[name] = module.stft_spec.to_dict()
    out = Path(out) if out is not None else onnx_path(checkpoint)
    tmp = out.with_name(out.name + ".tmp")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on torchvision ops it skips
        torch.onnx.export(graph, tuple(inputs), str(tmp), dynamo=True, opset_version=OPSET,
                          input_names=names, output_names=list(graph.subspaces),
                          dynamic_shapes=tuple({0: batch} for _ in inputs), verbose=False,
                          external_data=False, optimize=True)
    model = onnx.load(str(tmp))
    _strip_sources(model)
    meta = {"format": ONNX_FORMAT, "loev_model_id": info.model_id,
            "loev_checkpoint": checkpoint.name, "loev_config": json.dumps(info.config),
            "loev_dims": json.dumps(info.dims), "loev_chunk_samples": str(n),
            "loev_spectra": json.dumps(specs)}
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "loev-train export"
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    for extra in tmp.parent.glob(tmp.name + ".data"):
        extra.unlink()
    return out


def _strip_sources(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces: they name the files (and the machine) the
    export ran from, so the same checkpoint exported elsewhere would give another file."""
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del value.metadata_props[:]
        value.doc_string = ""
    model.graph.doc_string = ""
    del model.graph.metadata_props[:]


def export(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the checkpoint of ``run_dir``'s latest training state and its ONNX graph;
    returns the checkpoint's path. Given a ``.safetensors`` file, write only its ONNX graph."""
    from engine.model.checkpoint import save_checkpoint
    from engine.model.network import build_model
    from trainer.fit import MODEL_FILE, FitOptions, _provenance, load_state, read_state

    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".safetensors":
        if out is not None:
            raise ValueError(f"{run_dir}: --out is for a run folder; a checkpoint's .onnx goes beside it")
        export_onnx(run_dir)
        return run_dir
    doc = read_state(run_dir)
    if doc is None:
        raise FileNotFoundError(f"{run_dir}: no training state (train_state.json) to export")
    cfg = ModelConfig.from_dict(doc["config"])
    model = build_model(cfg)
    step = load_state(run_dir, model)
    opts = FitOptions(**{k: v for k, v in doc["options"].items() if k in FitOptions.__dataclass_fields__})
    out = Path(out) if out else run_dir / MODEL_FILE
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the app loads .safetensors checkpoints; name the file *.safetensors")
    tracks = int(doc.get("tracks", 0))
    path = save_checkpoint(out, model.eval(),
                           provenance=_provenance(opts, step, tracks, int(doc.get("world", 1))))
    export_onnx(path)
    return path


def run(args: argparse.Namespace) -> int:
    path = export(args.run_dir, args.out)
    print(path)
    print(onnx_path(path))
    return 0
