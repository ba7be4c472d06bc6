"""The segmentation network: backbone → projection head → L2-normalised pixel embedding (METHOD §6)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uniseg_cli.models.backbones import Backbone


@dataclass(frozen=True)
class SegmenterConfig:
    """Configuration of a :class:`Segmenter` (stored in checkpoints to rebuild it).

    Args:
        backbone: a registered backbone name (see ``uniseg_cli.models.list_backbones()``).
        embed_dim: D, the pixel-embedding width (512 in the paper).
        pretrained: load ImageNet weights for timm backbones (from the Hugging Face cache).
        proj_hidden: width of the first 1×1 convolution; None = the concatenated feature width
            (720 for hrnet_w48, as the reference's ``convmlp`` head).
        align_corners: bilinear upsampling mode of the feature levels (True in the reference).
    """

    backbone: str = "tiny"
    embed_dim: int = 512
    pretrained: bool = False
    proj_hidden: int | None = None
    align_corners: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ProjectionHead(nn.Module):
    """Upsample all levels to the first, concatenate, Conv1×1–BN–ReLU–Conv1×1, L2-normalise.

    Args:
        in_channels: channels of each backbone level.
        embed_dim: D.
        hidden: width of the hidden 1×1 convolution (default: sum of ``in_channels``).
        align_corners: bilinear upsampling mode.

    Shapes:
        - input: list of (B, C_i, H_i, W_i), level 0 the finest.
        - output: (B, D, H_0, W_0), unit L2 norm over D at every pixel.
    """

    def __init__(self, in_channels: list[int], embed_dim: int, hidden: int | None = None,
                 align_corners: bool = True):
        super().__init__()
        total = sum(in_channels)
        hidden = hidden or total
        self.align_corners = align_corners
        self.proj = nn.Sequential(
            nn.Conv2d(total, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, embed_dim, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners)
                            for f in feats[1:]]
        emb = self.proj(torch.cat(ups, dim=1))
        return F.normalize(emb, p=2, dim=1)


class Segmenter(nn.Module):
    """Backbone + projection head: images → L2-normalised D-dim pixel embeddings at stride 4.

    Args:
        config: the :class:`SegmenterConfig`.
        backbone: the built backbone (see ``uniseg_cli.models.build_segmenter``).

    Shapes:
        - input: images (B, 3, H, W), normalised RGB.
        - output: emb (B, D, H/4, W/4) (the size of the backbone's stride-4 level; exactly H/4 when
          H and W are multiples of the coarsest stride), unit norm over D.

    Submodule names matter to the trainer: everything under ``backbone.`` gets the backbone learning
    rate multiplier (METHOD §7), ``head.`` the base rate.
    """

    def __init__(self, config: SegmenterConfig, backbone: Backbone):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = ProjectionHead(backbone.channels, config.embed_dim, config.proj_hidden, config.align_corners)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
