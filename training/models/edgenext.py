"""EdgeNeXt (Maaz et al., 2022), the small configuration, adapted to 32x32 inputs.

Four stages of ConvNeXt-style conv encoders (depth-wise kernels 3-5-7-9); the
last block of stages 2-4 is an SDTA encoder: Res2Net-like split depth-wise
convolutions, then cross-covariance ("transposed") attention across channels,
whose cost is linear in the number of pixels. Stage 2's SDTA adds a Fourier
positional encoding. Everything but the stem follows the reference code.
"""

from __future__ import annotations

import math
from typing import Sequence, TypedDict

import torch
from torch import nn
from torch.nn import functional as F

from .layers import DropPath, LayerNorm2d, Mlp, init_transformer_weights, merge_heads, split_heads


class _Size(TypedDict):
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    sdta_blocks: tuple[int, ...]
    split_scales: tuple[int, ...]
    pos_embed: tuple[bool, ...]


SMALL = _Size(
    depths=(3, 3, 9, 3),
    dims=(48, 96, 160, 304),
    kernel_sizes=(3, 5, 7, 9),
    sdta_blocks=(0, 1, 1, 1),
    split_scales=(2, 2, 3, 4),
    pos_embed=(False, True, False, False),
)


class InvertedBottleneck(nn.Module):
    """Channels-last LayerNorm -> expanding MLP -> layer scale; [N, H, W, C] in, [N, C, H, W] out."""

    def __init__(self, dim: int, expansion: int, layer_scale: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, expansion * dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gamma * self.mlp(self.norm(x))).permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    def __init__(self, dim: int, kernel_size: int, expansion: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.bottleneck = InvertedBottleneck(dim, expansion, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.bottleneck(self.dwconv(x).permute(0, 2, 3, 1)))


class SplitDepthwise(nn.Module):
    """Channel groups; each one's 3x3 depth-wise conv also sees the previous one's output; the last passes through."""

    def __init__(self, dim: int, scales: int) -> None:
        super().__init__()
        self.width = math.ceil(dim / scales)
        self.convs = nn.ModuleList(
            nn.Conv2d(self.width, self.width, 3, padding=1, groups=self.width) for _ in range(max(scales - 1, 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.width, 1)
        out, y = [], None
        for conv, chunk in zip(self.convs, chunks):
            y = conv(chunk if y is None else y + chunk)
            out.append(y)
        return torch.cat([*out, *chunks[len(self.convs) :]], 1)


class FourierPositions(nn.Module):
    """Sine/cosine features of normalised (y, x) positions, projected to ``dim`` channels (DETR-style)."""

    def __init__(self, dim: int, hidden: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * hidden, dim, 1)
        self.hidden, self.temperature = hidden, temperature

    def _encode(self, length: int) -> torch.Tensor:
        pos = torch.arange(1, length + 1, dtype=torch.float32, device=self.proj.weight.device)
        pos = pos / (length + 1e-6) * 2 * math.pi
        freq = self.temperature ** (2 * (torch.arange(self.hidden, device=pos.device) // 2) / self.hidden)
        pos = pos[:, None] / freq
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), 2).flatten(1)  # [length, hidden]

    def forward(self, h: int, w: int) -> torch.Tensor:
        """[1, dim, h, w]; computed from the shape, so it fits any input size (and folds to a constant in ONNX)."""
        y = self._encode(h)[:, None].expand(h, w, -1)
        x = self._encode(w)[None].expand(h, w, -1)
        return self.proj(torch.cat((y, x), 2).permute(2, 0, 1)[None])


class CrossCovarianceAttention(nn.Module):
    """XCA (El-Nouby et al., 2021): a [d x d] attention map between the channels of each head."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be 1 or more, got {heads}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.transpose(-2, -1) for t in split_heads(self.qkv(x), self.heads))  # [N, heads, d, T]
        # L2-normalising over tokens bounds the logits; the learned temperature sets their scale.
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.temperature).softmax(-1)
        return self.proj(merge_heads((attn @ v).transpose(-2, -1)))


class SDTAEncoder(nn.Module):
    """Split depth-wise transposed attention; as in the reference, the MLP's residual is the block's input."""

    def __init__(
        self, dim: int, scales: int, heads: int, pos_embed: bool, expansion: int, layer_scale: float, drop_path: float
    ) -> None:
        super().__init__()
        self.split = SplitDepthwise(dim, scales)
        self.pos = FourierPositions(dim) if pos_embed else None
        self.norm_xca = nn.LayerNorm(dim, eps=1e-6)
        self.xca = CrossCovarianceAttention(dim, heads)
        self.gamma_xca = nn.Parameter(torch.full((dim,), layer_scale))
        self.bottleneck = InvertedBottleneck(dim, expansion, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.split(x)
        if self.pos is not None:
            y = y + self.pos(h, w)
        y = y.flatten(2).transpose(1, 2)
        y = y + self.drop_path(self.gamma_xca * self.xca(self.norm_xca(y)))
        return x + self.drop_path(self.bottleneck(y.unflatten(1, (h, w))))


class EdgeNeXt(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        depths: Sequence[int] = SMALL["depths"],
        dims: Sequence[int] = SMALL["dims"],
        kernel_sizes: Sequence[int] = SMALL["kernel_sizes"],
        sdta_blocks: Sequence[int] = SMALL["sdta_blocks"],
        split_scales: Sequence[int] = SMALL["split_scales"],
        pos_embed: Sequence[bool] = SMALL["pos_embed"],
        heads: int = 8,
        expansion: int = 4,
        stem_stride: int = 1,
        layer_scale: float = 1e-6,
        drop_path: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        per_stage = {
            "dims": dims,
            "kernel_sizes": kernel_sizes,
            "sdta_blocks": sdta_blocks,
            "split_scales": split_scales,
            "pos_embed": pos_embed,
        }
        uneven = [f"{key} {list(value)}" for key, value in per_stage.items() if len(value) != len(depths)]
        if uneven:
            raise ValueError(f"EdgeNeXt takes one entry per stage, {len(depths)} as depths: not {', '.join(uneven)}")
        if min(split_scales) < 1:
            raise ValueError(f"split_scales {list(split_scales)} must each be 1 or more")
        if any(sdta > depth for sdta, depth in zip(sdta_blocks, depths)):
            # a stage has only its depth's blocks to make SDTA encoders of: more would silently be fewer
            raise ValueError(f"sdta_blocks {list(sdta_blocks)} ask more of a stage than its depth {list(depths)}")
        # Why not the reference's 4x4 stride-4 patchify stem: on 32x32 inputs it would leave stage 4 a 1x1 map, where
        # the 9x9 depth-wise kernels and the attention see a single pixel. A 3x3 stride-1 stem gives the 32-16-8-4
        # pyramid of CIFAR ResNets (stage 4 at 4x4, the reference's 8x8 at 256 px halved); stem_stride=2 gives
        # 16-8-4-2 at about a quarter of the compute.
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 3, stem_stride, 1), LayerNorm2d(dims[0], eps=1e-6))
        rates = iter(torch.linspace(0, drop_path, sum(depths), device="cpu").tolist())
        stages = []
        for i, depth in enumerate(depths):
            blocks = [] if i == 0 else [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, 2)]
            for j in range(depth):
                if j >= depth - sdta_blocks[i]:
                    blocks.append(
                        SDTAEncoder(dims[i], split_scales[i], heads, pos_embed[i], expansion, layer_scale, next(rates))
                    )
                else:
                    blocks.append(ConvEncoder(dims[i], kernel_sizes[i], expansion, layer_scale, next(rates)))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dims[-1], num_classes)
        init_transformer_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x)).mean((2, 3))
        return self.fc(self.dropout(self.norm(x)))
