"""A Vision Transformer (Dosovitskiy et al., 2021) for 32x32 inputs: 4x4 patches, 64 tokens.

Pre-norm blocks with a learned positional embedding. The head averages the
tokens instead of reading a class token: Beyer et al. (2022, "Better plain ViT
baselines") find it no worse, and with every token spatial the final tokens
form an 8x8 feature map that Grad-CAM reads like a convolutional stage.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import DropPath, Mlp, init_transformer_weights, merge_heads, split_heads


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be 1 or more, got {heads}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.heads)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(merge_heads(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TokenGrid(nn.Module):
    """Tokens [N, h*w, C] -> feature map [N, C, h, w]: the layer Grad-CAM hooks."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.grid, self.grid)).permute(0, 3, 1, 2)


class VisionTransformer(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 384,
        depth: int = 6,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size < 1 or patch_size < 1:
            raise ValueError(f"image_size {image_size} and patch_size {patch_size} must be 1 or more")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, grid = image_size, image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout, rate) for rate in rates))
        self.norm = nn.LayerNorm(dim)
        self.grid = TokenGrid(grid)
        self.fc = nn.Linear(dim, num_classes)
        init_transformer_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters the optimizer leaves undecayed, as DeiT and timm do: decay pulls a position's embedding toward
        zero, towards the same token for every position."""
        return {"pos_embed"}

    @property
    def cam_layer(self) -> nn.Module:
        return self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            # The learned positional embedding fixes the token count; say so rather than fail on a broadcast.
            raise ValueError(
                f"this ViT takes {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}: its "
                "image_size argument sets the size it takes"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.grid(self.norm(self.blocks(x)))
        return self.fc(x.mean((2, 3)))
