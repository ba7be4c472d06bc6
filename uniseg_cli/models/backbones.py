"""Backbones: a registry of multi-level feature extractors (timm ``features_only`` + a tiny one).

Every backbone returns a list of feature maps, the first at stride 4, the others coarser
(``Backbone.channels`` / ``Backbone.reductions`` describe them). The projection head of METHOD §6
upsamples them all to the first level and concatenates them (720 channels for hrnet_w48).

Pretrained ImageNet weights come from the Hugging Face cache through timm. When they are cached
they are loaded from the cached file directly (no network round trip); when they are not and
``HF_HUB_OFFLINE`` is set, building fails at once with a :class:`ServiceError` and a hint rather
than waiting on the network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from uniseg_cli.errors import ServiceError


class Backbone(nn.Module):
    """A feature extractor returning ``len(channels)`` maps, the first at stride ``reductions[0]``.

    Shapes:
        - input: images (B, 3, H, W), normalised.
        - output: list of (B, channels[i], ~H/reductions[i], ~W/reductions[i]).
    """

    def __init__(self, body: nn.Module, channels: list[int], reductions: list[int]):
        super().__init__()
        self.body = body
        self.channels = list(channels)
        self.reductions = list(reductions)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(images)
        return list(feats)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBody(nn.Module):
    """Pure-torch three-level CNN (strides 4, 8, 16) for tests and CPU demos.

    Two 3×3 stride-2 convolutions reach stride 4 (as HRNet's stem); each further level adds a
    stride-2 and a stride-1 3×3 convolution, so the coarse levels see texture over ~30–60 px.
    About 60k parameters; a 128×128 batch of 8 runs forward+backward in well under a second on one
    CPU core.
    """

    def __init__(self, widths: tuple[int, int, int] = (24, 32, 48)):
        super().__init__()
        w1, w2, w3 = widths
        self.level1 = nn.Sequential(_conv_bn_relu(3, 16, 2), _conv_bn_relu(16, w1, 2), _conv_bn_relu(w1, w1, 1))
        self.level2 = nn.Sequential(_conv_bn_relu(w1, w2, 2), _conv_bn_relu(w2, w2, 1))
        self.level3 = nn.Sequential(_conv_bn_relu(w2, w3, 2), _conv_bn_relu(w3, w3, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.level1(x)
        f2 = self.level2(f1)
        f3 = self.level3(f2)
        return [f1, f2, f3]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Args:
        name: registry name (what users write in ``backbone:``).
        description: one line for listings.
        timm_name: timm architecture, or None for a pure-torch builder.
        timm_kwargs: extra ``timm.create_model`` arguments (levels, feature location).
        builder: pure-torch builder ``() -> Backbone`` when ``timm_name`` is None.
    """

    name: str
    description: str
    timm_name: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    builder: Callable[[], Backbone] | None = None


def _tiny(widths: tuple[int, int, int] = (24, 32, 48)) -> Backbone:
    return Backbone(TinyBody(widths), list(widths), [4, 8, 16])


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("tiny", "pure-torch 3-level CNN (24/32/48 ch), tests and CPU demos", builder=_tiny),
        BackboneSpec("tiny-wide", "the tiny CNN at twice the width (48/64/96 ch, ~4x the compute)", builder=lambda: _tiny((48, 64, 96))),
        # HRNetV2 branches at strides 4..32 (48+96+192+384 = 720 channels): the paper's backbone.
        BackboneSpec("hrnet_w48", "HRNetV2-W48 (timm), the paper's backbone, 720 channels",
                     "hrnet_w48", {"feature_location": "", "out_indices": (1, 2, 3, 4)}),
        BackboneSpec("hrnet_w18_small_v2", "HRNetV2-W18-small-v2 (timm), 270 channels",
                     "hrnet_w18_small_v2", {"feature_location": "", "out_indices": (1, 2, 3, 4)}),
        BackboneSpec("resnet18", "ResNet-18 (timm), strides 4..32, 960 channels",
                     "resnet18", {"out_indices": (1, 2, 3, 4)}),
        BackboneSpec("mobilenetv3_small_100", "MobileNetV3-small (timm), strides 4..32, 664 channels",
                     "mobilenetv3_small_100", {"out_indices": (1, 2, 3, 4)}),
    )
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_weights(hub_id: str) -> str | None:
    """Path of the cached weight file of a timm hub id, or None (never touches the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a pinned dependency
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it at import
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename, cache_dir=cache_dir)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _build_timm(spec: BackboneSpec, pretrained: bool) -> Backbone:
    import timm

    kwargs: dict[str, Any] = dict(features_only=True, **spec.timm_kwargs)
    if pretrained:
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        cached = _cached_weights(hub_id) if hub_id else None
        hint = (f"download them once with network access (python -c \"import timm; "
                f"timm.create_model('{spec.timm_name}', pretrained=True)\"), or set pretrained: false")
        if cached:
            kwargs["pretrained_cfg_overlay"] = {"file": cached}
        elif _offline():
            raise ServiceError(f"backbone {spec.name}: ImageNet weights ({hub_id}) are not in the Hugging Face "
                               "cache and HF_HUB_OFFLINE is set", hint=hint)
        try:
            model = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except Exception as e:  # network, hub and file errors all end here
            raise ServiceError(f"backbone {spec.name}: could not load ImageNet weights ({hub_id}): {e}",
                               hint=hint) from e
    else:
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    info = model.feature_info
    return Backbone(model, info.channels(), info.reduction())


def build_backbone(spec: BackboneSpec, pretrained: bool = False) -> Backbone:
    """Build a registered backbone (``pretrained`` is ignored by pure-torch ones, which have none)."""
    if spec.timm_name is None:
        assert spec.builder is not None
        return spec.builder()
    return _build_timm(spec, pretrained)
