"""SF-NFNet-F0 with LOEV / LOEV++ heads (paper Section II; MULE's slow-fast NFNet-F0).

The network follows timm's normalizer-free ResNets (Brock et al. 2021) and MULE's
slow/fast variant (McCallum et al. 2022):

- weight-standardised convolutions with a learnable gain (``ScaledStdConv2d``),
- a variance-preserving GELU (``gamma`` scaled), squeeze-excite with ``attn_gain = 2``,
  a learnable skip gain initialised at zero, stochastic depth, and the analytic
  ``beta = 1 / expected_std`` / ``alpha`` signal propagation of NF-ResNets,
- a slow pathway (NFNet-F0 widths, ``time_alpha`` x fewer frames) and a fast pathway
  (``1 / fast_ratio`` of the channels, every frame), fused fast-to-slow after the stem and
  after stages 1-3 by a strided temporal convolution and channel concatenation,
- stage depths 1/2/6/3, pooled output ``channels[-1] * (1 + 1 / fast_ratio)`` = 1728.

LOEV++ (and MULE++) duplicate the later half of stage 4 per head: the first block of
stage 4 is shared and the remaining blocks run in parallel, one copy per subspace
(invariant, pitch, tempo). LOEV and MULE keep one trunk and put all heads on it.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig, ProfileConfig
from engine.model.branches import (BINS_PER_OCTAVE, KeyProjector, PitchBranch, TempoBranch, TempoProjector,
                                   TimbreDescriptor, TimbreProjector, combine_shares)
from engine.model.frontend import build_frontend

GELU_GAMMA = 1.7015043497085571  # timm's _nonlin_gamma["gelu"]: keeps unit variance


class ScaledGELU(nn.Module):
    """GELU scaled so that a unit Gaussian input gives unit-variance output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x) * GELU_GAMMA


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation and a learnable per-channel gain (NF-ResNets)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 1,
                 stride: int | tuple[int, int] = 1, groups: int = 1, eps: float = 1e-6,
                 padding: int | tuple[int, int] | None = None) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if padding is None:
            padding = (ks[0] // 2, ks[1] // 2)
        super().__init__(in_channels, out_channels, ks, stride=stride, padding=padding,
                         groups=groups, bias=True)
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.scale = self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) * torch.rsqrt(var + self.eps) * (self.gain * self.scale)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        hidden = max(8, hidden)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch per sample (Huang et al. 2016)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class NFBlock(nn.Module):
    """Pre-activation NF bottleneck block (timm ``NormFreeBlock``, NFNet flavour)."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, beta: float, alpha: float,
                 prof: ProfileConfig, drop_path_rate: float) -> None:
        super().__init__()
        mid = max(1, int(out_ch * prof.bottle_ratio))
        groups = max(1, mid // prof.group_size)
        self.beta, self.alpha, self.drop_path_rate = beta, alpha, drop_path_rate
        self.act = ScaledGELU()
        self.downsample: nn.Module | None = None
        if stride > 1 or in_ch != out_ch:
            pool = nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, ScaledStdConv2d(in_ch, out_ch, 1))
        self.conv1 = ScaledStdConv2d(in_ch, mid, 1)
        self.conv2 = ScaledStdConv2d(mid, mid, 3, stride=stride, groups=groups)
        self.conv2b = ScaledStdConv2d(mid, mid, 3, groups=groups)
        self.conv3 = ScaledStdConv2d(mid, out_ch, 1)
        # SE width relative to the bottleneck (mid * 0.5 = out / 4); timm sizes it from
        # out_ch, which gives 71M for NFNet-F0, while the paper's LOEV counts 53M.
        self.se = SqueezeExcite(out_ch, int(mid * prof.se_ratio))
        self.skip_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(x) * self.beta
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.act(out))
        out = self.conv2b(self.act(out))
        out = self.conv3(self.act(out))
        out = 2.0 * self.se(out)  # attn_gain
        out = drop_path(out, self.drop_path_rate, self.training)
        return out * (self.skip_gain * self.alpha) + shortcut


def make_stem(channels: tuple[int, ...]) -> nn.Sequential:
    """Stride-4 stem: the first and the last convolution have stride 2 (NFNet ``deep_quad``)."""
    layers: list[nn.Module] = []
    in_ch = 1
    for i, ch in enumerate(channels):
        stride = 2 if i in (0, len(channels) - 1) else 1
        layers.append(ScaledStdConv2d(in_ch, ch, 3, stride=stride))
        if i < len(channels) - 1:
            layers.append(ScaledGELU())
        in_ch = ch
    return nn.Sequential(*layers)


class Lateral(nn.Module):
    """Fast-to-slow fusion: temporal conv with stride ``time_alpha``, 2x the fast channels."""

    def __init__(self, fast_ch: int, time_alpha: int) -> None:
        super().__init__()
        self.conv = ScaledStdConv2d(fast_ch, 2 * fast_ch, (1, 2 * time_alpha - 3),
                                    stride=(1, time_alpha), padding=(0, time_alpha - 2))

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        lat = self.conv(fast)
        t = min(lat.shape[-1], slow.shape[-1])
        return torch.cat([slow[..., :t], lat[..., :t]], dim=1)


class Pathway(nn.Module):
    """A run of NF blocks of one pathway; ``blocks`` are built by the caller's schedule."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _stage_plan(prof: ProfileConfig) -> list[list[tuple[float, float]]]:
    """(beta, drop_path) for every block of every stage: NF-ResNet variance bookkeeping."""
    total = sum(prof.depths)
    plan, idx, expected_var = [], 0, 1.0
    for depth in prof.depths:
        stage = []
        for b in range(depth):
            stage.append((1.0 / math.sqrt(expected_var), prof.drop_path_rate * idx / max(1, total - 1)))
            if b == 0:
                expected_var = 1.0  # transition blocks reset the residual stream
            expected_var += prof.alpha ** 2
            idx += 1
        plan.append(stage)
    return plan


class SFNFNet(nn.Module):
    """Slow-fast NFNet trunk: ``spec [B, 1, F, T]`` -> stage-4 input of both pathways.

    ``split`` is the number of stage-4 blocks in the shared trunk; the remaining stage-4
    blocks are built by ``make_tail`` so that LOEV++ can instantiate one tail per head.
    """

    def __init__(self, prof: ProfileConfig, split: int) -> None:
        super().__init__()
        self.prof = prof
        fast_ch = [c // prof.fast_ratio for c in prof.channels]
        fast_stem = tuple(max(2, c // prof.fast_ratio) for c in prof.stem_channels)
        self.slow_stem = make_stem(prof.stem_channels)
        self.fast_stem = make_stem(fast_stem)
        self.plan = _stage_plan(prof)
        self.laterals = nn.ModuleList([Lateral(fast_stem[-1], prof.time_alpha)]
                                      + [Lateral(c, prof.time_alpha) for c in fast_ch[:3]])
        strides = (1, 2, 2, 2)
        slow_in = prof.stem_channels[-1] + 2 * fast_stem[-1]
        fast_in = fast_stem[-1]
        self.slow_stages, self.fast_stages = nn.ModuleList(), nn.ModuleList()
        for s, depth in enumerate(prof.depths):
            n = depth if s < 3 else split
            slow_blocks, fast_blocks = [], []
            for b in range(n):
                beta, dp = self.plan[s][b]
                stride = strides[s] if b == 0 else 1
                slow_blocks.append(NFBlock(slow_in if b == 0 else prof.channels[s], prof.channels[s],
                                           stride=stride, beta=beta, alpha=prof.alpha, prof=prof, drop_path_rate=dp))
                fast_blocks.append(NFBlock(fast_in if b == 0 else fast_ch[s], fast_ch[s],
                                           stride=stride, beta=beta, alpha=prof.alpha, prof=prof, drop_path_rate=dp))
            self.slow_stages.append(Pathway(slow_blocks))
            self.fast_stages.append(Pathway(fast_blocks))
            slow_in = prof.channels[s] + (2 * fast_ch[s] if s < 3 else 0)
            fast_in = fast_ch[s]
        self.out_dim = prof.channels[-1] + fast_ch[-1]
        self.split = split

    def make_tail(self) -> nn.ModuleList:
        """The stage-4 blocks after ``split``, for one head (slow and fast)."""
        prof, fast_ch = self.prof, self.prof.channels[-1] // self.prof.fast_ratio
        slow, fast = [], []
        for b in range(self.split, prof.depths[-1]):
            beta, dp = self.plan[3][b]
            slow.append(NFBlock(prof.channels[-1], prof.channels[-1], stride=1, beta=beta, alpha=prof.alpha,
                                prof=prof, drop_path_rate=dp))
            fast.append(NFBlock(fast_ch, fast_ch, stride=1, beta=beta, alpha=prof.alpha, prof=prof, drop_path_rate=dp))
        return nn.ModuleList([Pathway(slow), Pathway(fast)])

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The slow pathway sees time_alpha x fewer frames (SlowFast; MULE's SF-NFNet).
        slow_in = F.avg_pool2d(spec, (1, self.prof.time_alpha), ceil_mode=True, count_include_pad=False)
        slow, fast = self.slow_stem(slow_in), self.fast_stem(spec)
        for s in range(4):
            slow = self.laterals[s](slow, fast)  # fuse before every stage
            slow, fast = self.slow_stages[s](slow), self.fast_stages[s](fast)
        return slow, fast


def pool(slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    """Activate and average both pathways over frequency and time, then concatenate."""
    act = ScaledGELU()
    return torch.cat([act(slow).mean(dim=(2, 3)), act(fast).mean(dim=(2, 3))], dim=1)


class ProjectionHead(nn.Module):
    """MLP projection for the contrastive loss (SimCLR-style, paper Section II)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LoevNet(nn.Module):
    """Frontend + SF-NFNet-F0 + subspaces + projection heads.

    ``forward(y [B, T])`` returns ``{"embeddings": {subspace: [B, D]},
    "projections": {head: [B, P]}, "spectrogram": [B, 1, F, T']}`` (the frontend's output,
    which the trainer's reconstruction objective decodes towards). Single-space methods (MULE, LOEV) have one subspace
    named ``"all"`` feeding every head; LOEV++ / MULE++ have one subspace per head.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        prof = cfg.profile
        self.frontend = build_frontend(cfg.frontend)
        # First block of stage 4 shared, the rest parallel (docs/DESIGN.md section 2).
        split = max(1, prof.depths[-1] // 2) if cfg.branched else prof.depths[-1]
        self.trunk = SFNFNet(prof, split=split)
        learned = cfg.subspaces if cfg.branches == "learned" else ("invariant",)
        self.tails = nn.ModuleDict({name: self.trunk.make_tail() for name in learned}) if cfg.branched else None
        self.structured = nn.ModuleDict()
        if cfg.branches == "structured":
            fe = cfg.frontend
            if "pitch" in cfg.subspaces:
                self.structured["pitch"] = PitchBranch(sr=fe.sample_rate, hop_length=fe.hop_length,
                                                       peak_db=fe.peak_db)
            if "tempo" in cfg.subspaces:
                self.structured["tempo"] = TempoBranch(frame_rate=fe.sample_rate / fe.hop_length,
                                                       plain_share=cfg.tempo_plain_share)
        self.timbre = None
        if cfg.timbre_share:
            self.timbre = TimbreDescriptor(cfg.frontend.n_mels)
        self.timbre_mlp = None
        if cfg.timbre_learned_share:
            self.timbre_mlp = TimbreProjector(cfg.frontend.n_mels, self.timbre.out_dim)
        self.tempo_mlp = None
        if cfg.tempo_learned_share:
            branch = self.structured["tempo"]
            self.tempo_mlp = TempoProjector(branch.out_dim + (branch.onset_dim if cfg.tempo_projector_onsets else 0)
                                            + (branch.tempogram_dim if cfg.tempo_projector_tempogram else 0),
                                            posterior=cfg.tempo_projector_posterior)
        self.key_projector = None
        if cfg.pitch_learned_share:
            self.key_projector = KeyProjector(self.structured["pitch"].out_dim // BINS_PER_OCTAVE)
        dims = self.embedding_dims
        self.heads = nn.ModuleDict({h: ProjectionHead(dims[h] if h in dims else dims["all"], prof.proj_hidden,
                                                      prof.proj_dim) for h in cfg.heads})

    @property
    def embedding_dims(self) -> dict[str, int]:
        dims = {name: self.structured[name].out_dim if name in self.structured else self.trunk.out_dim
                for name in self.cfg.subspaces}
        if self.timbre is not None:
            dims["invariant"] += self.timbre.out_dim
        if self.timbre_mlp is not None:
            dims["invariant"] += self.timbre_mlp.out_dim
        if self.tempo_mlp is not None:
            dims["tempo"] += self.tempo_mlp.out_dim
        if self.key_projector is not None:
            dims["pitch"] += self.key_projector.out_dim
        return dims

    def embed(self, y: torch.Tensor, spec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Subspace embeddings from the waveform ``[B, T]`` and its frontend output ``[B, 1, F, T']``."""
        slow, fast = self.trunk(spec)
        if self.tails is None:
            return {"all": pool(slow, fast)}
        emb = {name: pool(tail[0](slow), tail[1](fast)) for name, tail in self.tails.items()}
        if self.timbre is not None:
            emb["invariant"] = self.with_timbre(emb["invariant"], spec)
        if "pitch" in self.structured:
            emb["pitch"] = self.with_key(self.structured["pitch"](y))
        if "tempo" in self.structured:
            branch = self.structured["tempo"](spec)
            emb["tempo"] = self.with_tempo(branch, self.tempo_projector_input(branch, spec))
        return {name: emb[name] for name in self.cfg.subspaces}

    def tempo_projector_input(self, branch: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """What the tempo projector reads: the tempo branch's output ``branch`` and after it,
        with ``tempo_projector_onsets``, the branch's onset periodicity of ``spec``, with
        ``tempo_projector_tempogram`` its onset tempogram."""
        periodicity, tempogram = self.cfg.tempo_projector_onsets, self.cfg.tempo_projector_tempogram
        if not (periodicity or tempogram):
            return branch
        extra = self.structured["tempo"].projector_features(spec, periodicity=periodicity, tempogram=tempogram)
        return torch.cat([branch, extra], dim=1)

    def with_tempo(self, branch: torch.Tensor, projector_input: torch.Tensor) -> torch.Tensor:
        """The tempo space: the tempo branch beside its projector (reading
        ``projector_input``, see :meth:`tempo_projector_input`), when there is one."""
        if self.tempo_mlp is None:
            return branch
        share = self.cfg.tempo_learned_share
        return combine_shares([branch, self.tempo_mlp(projector_input)], [1 - share, share])

    def with_key(self, branch: torch.Tensor) -> torch.Tensor:
        """The pitch space: the pitch branch beside its key projector, when there is one."""
        if self.key_projector is None:
            return branch
        share = self.cfg.pitch_learned_share
        return combine_shares([branch, self.key_projector(branch)], [1 - share, share])

    def with_timbre(self, learned: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """The vibe space: learned features beside the parameter-free timbre descriptor (and
        the timbre projector over pooled statistics, when there is one), at their shares."""
        share, projected = self.cfg.timbre_share, self.cfg.timbre_learned_share
        raw = self.timbre.raw(spec)  # read by both the descriptor and the projector
        parts = [learned, self.timbre.standardise(raw)]
        if self.timbre_mlp is not None:
            parts.append(self.timbre_mlp(spec, raw))
        return combine_shares(parts, [1 - share - projected, share, projected][:len(parts)])

    def vibe(self, spec: torch.Tensor) -> torch.Tensor:
        """The vibe (invariant) subspace alone from the frontend output ``[B, 1, F, T']``."""
        slow, fast = self.trunk(spec)
        tail = self.tails["invariant"]
        learned = pool(tail[0](slow), tail[1](fast))
        return learned if self.timbre is None else self.with_timbre(learned, spec)

    def forward(self, y: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        if y.dim() == 1:
            y = y.unsqueeze(0)
        spec = self.frontend(y)
        emb = self.embed(y, spec)
        proj = {h: head(emb[h] if h in emb else emb["all"]) for h, head in self.heads.items()}
        return {"embeddings": emb, "projections": proj, "spectrogram": spec}


def build_model(cfg: ModelConfig) -> LoevNet:
    """The network a config describes (randomly initialised)."""
    return LoevNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
