"""`build_autoencoder`: the frame codec a config names (autoencoder.kind: conv, pixel or warp)."""
from __future__ import annotations

from torch import nn

from knotanim.config import AutoencoderConfig
from knotanim.model.autoencoder import ConvAutoencoder, PixelAutoencoder
from knotanim.model.warp import WarpCodec


def build_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    if cfg.kind == "warp":
        return WarpCodec(cfg)
    return ConvAutoencoder(cfg) if cfg.kind == "conv" else PixelAutoencoder(cfg)
