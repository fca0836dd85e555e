"""Training batches: synthetic clips made on the fly by knotanim.data, one seed per clip (or, with
data.source = "videos", clips cut from real videos: knotanim.train.videos.VideoClips, same items).

Each item is a dict of numpy arrays:
  frames    uint8 [T, H, W, 3]    ground-truth video (T = SequenceLayout.n_frames)
  reference uint8 [H, W, 3]
  audio     float32 [T, n_mels, W] per-frame audio windows
  motion    float32 []             head-motion intensity the clip was made with
  mouth_box float32 [T, 4]         mouth box per frame (x0, y0, x1, y1 pixels), for the loss weighting
Seeds never repeat across ranks, workers or steps: seed = base + (step * world + rank) * workers + worker.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from knotanim.config import KnotAnimConfig
from knotanim.errors import ConfigError
from knotanim.frontends.audio_features import AudioFeatures
from knotanim.train.config import DataConfig


@dataclass(frozen=True)
class ClipRequest:
    n_frames: int
    rank: int = 0
    world: int = 1
    base_seed: int = 0


class GeneratedClips(IterableDataset):
    """An endless stream of generated clips for one rank."""

    def __init__(self, model_cfg: KnotAnimConfig, data_cfg: DataConfig, request: ClipRequest):
        self.model_cfg, self.data_cfg, self.request = model_cfg, data_cfg, request

    def __iter__(self):
        from knotanim.data import SpeechCorpus, make_clip

        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cfg, dc, rq = self.model_cfg, self.data_cfg, self.request
        corpus = SpeechCorpus(dc.speech_corpus) if dc.speech_corpus else None
        features = AudioFeatures(cfg)
        i = 0
        while True:
            seed = rq.base_seed + dc.seed_offset + ((i * rq.world + rq.rank) * n_workers + worker)
            i += 1
            rng = np.random.default_rng(seed + 7_000_003)
            still = rng.random() < dc.still_fraction
            motion = 0.0 if still else float(rng.uniform(0.2, 1.0))
            source = "photo" if rng.random() < dc.photo_fraction else "synthetic"
            clip = make_clip(seed, rq.n_frames, size=cfg.frame_size, fps=cfg.fps, head_motion=motion,
                             corpus=corpus, split="train", source=source)
            yield {
                "frames": clip.frames,
                "reference": clip.reference,
                "audio": features.clip_features(clip.audio, rq.n_frames),
                "motion": np.float32(motion),
                "mouth_box": np.asarray(clip.params["mouth_box"], np.float32).reshape(rq.n_frames, 4),
            }


def clip_loader(model_cfg: KnotAnimConfig, data_cfg: DataConfig, request: ClipRequest, batch_size: int) -> DataLoader:
    """Batches of `batch_size` items for one rank, from data_cfg.source: "generator" (GeneratedClips)
    or "videos" (knotanim.train.videos.VideoClips over data_cfg.video_folder)."""
    workers = data_cfg.workers
    if data_cfg.source == "generator":
        dataset: IterableDataset = GeneratedClips(model_cfg, data_cfg, request)
    elif data_cfg.source == "videos":
        from knotanim.train.videos import VideoClips

        dataset = VideoClips(model_cfg, data_cfg, request)
    else:
        raise ConfigError(f"data.source must be 'generator' or 'videos', not {data_cfg.source!r}")
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None)
