"""Training from a folder of real videos (knotanim.train.videos), on tiny mp4s made from generated clips.

The folder mimics a talking-head dataset: one speaker per file, files in per-speaker sub-folders,
plus files that must be skipped (not a video, no audio track)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from knotanim import tiny_config
from knotanim.errors import ConfigError
from knotanim.frontends.audio_features import AudioFeatures
from knotanim.train.config import DataConfig
from knotanim.train.data import ClipRequest, clip_loader
from knotanim.train.videos import REF_GAP_S, VideoClips, index_folder, motion_intensity

FPS, SIZE, N = 25, 128, 75  # the test videos: 3 s of 128 x 128 at 25 fps
BURST_FRAME = 40  # video "still" has a loud 1 kHz tone during this frame only
T = 7  # window length of the tiny config's training clips (3 chunks of 2 + knot 1)


def make_video(path: Path, seed: int, head_motion: float, burst_frame: int | None = None, audio: bool = True) -> None:
    """Write a generated clip as H.264 + AAC mp4 (48 kHz, as `knotanim render` writes), audio = quiet
    noise plus an optional loud tone burst during one frame."""
    from knotanim.data import make_clip
    from knotanim.frontends.audio_io import load_audio, write_wav
    from knotanim.sinks.video import VideoFileSink

    clip = make_clip(seed, N, size=SIZE, fps=FPS, head_motion=head_motion, source="synthetic")
    spf = 16000 // FPS
    samples = (np.random.default_rng(seed).standard_normal(N * spf) * 0.003).astype(np.float32)
    if burst_frame is not None:
        t = np.arange(spf) / 16000
        samples[burst_frame * spf : (burst_frame + 1) * spf] += 0.8 * np.sin(2 * np.pi * 1000 * t)
    wav = path.with_suffix(".wav")
    write_wav(wav, samples, 16000)
    sink = VideoFileSink(path, SIZE, SIZE, FPS, audio_rate=48000 if audio else None, fragmented=False)
    sink.open()
    for f in clip.frames:
        sink.write(f)
    sink.write_audio(load_audio(wav, 48000))
    sink.close()
    wav.unlink()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name, seed, motion, burst in (("id001/still.mp4", 12, 0.0, BURST_FRAME), ("id002/moving.mp4", 16, 1.0, None),
                                      ("id003/clip.mp4", 13, 0.5, None)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_video(root / name, seed, motion, burst)
    (root / "id004").mkdir()
    make_video(root / "id004" / "silent.mp4", 14, 0.5, audio=False)
    (root / "id005").mkdir()
    (root / "id005" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (root / "notes.txt").write_text("ignored: not a video extension")
    return root


def dataset(folder: Path, rank: int = 0, world: int = 1) -> VideoClips:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoClips(tiny_config(), DataConfig(source="videos", video_folder=str(folder), workers=0),
                          ClipRequest(T, rank, world, base_seed=5))


def entry_index(ds: VideoClips, name: str) -> int:
    return next(i for i, e in enumerate(ds.index.entries) if e.path.endswith(name))


def test_index_skips_bad_files_with_a_count(folder):
    index = index_folder(folder, T / FPS)
    assert sorted(Path(e.path).name for e in index.entries) == ["clip.mp4", "moving.mp4", "still.mp4"]
    assert index.skipped == 2  # broken.mp4 (not decodable) and silent.mp4 (no audio track)
    assert any("no audio" in r for r in index.reasons) and any("broken.mp4" in r for r in index.reasons)
    assert all(e.fps == pytest.approx(FPS) and e.duration == pytest.approx(N / FPS, abs=0.1) for e in index.entries)
    with pytest.warns(UserWarning, match="2 video file"):
        VideoClips(tiny_config(), DataConfig(source="videos", video_folder=str(folder)), ClipRequest(T))
    with pytest.raises(ConfigError, match="no usable video"):  # every file shorter than the window
        VideoClips(tiny_config(), DataConfig(source="videos", video_folder=str(folder)), ClipRequest(200))
    with pytest.raises(ConfigError):
        VideoClips(tiny_config(), DataConfig(source="videos", video_folder=""), ClipRequest(T))


def test_batches_have_the_generated_clips_contract(folder):
    cfg = tiny_config()
    loader = clip_loader(cfg, DataConfig(source="videos", video_folder=str(folder), workers=0), ClipRequest(T), 2)
    batch = next(iter(loader))
    W = AudioFeatures(cfg).window
    assert set(batch) == {"frames", "reference", "audio", "motion", "mouth_box"}
    assert tuple(batch["mouth_box"].shape) == (2, T, 4)
    x0, y0, x1, y1 = batch["mouth_box"][0, 0].tolist()
    assert 0 < x0 < x1 < 64 and 32 < y0 < y1 <= 64  # the lower middle of the crop
    assert tuple(batch["frames"].shape) == (2, T, 64, 64, 3) and str(batch["frames"].dtype) == "torch.uint8"
    assert tuple(batch["reference"].shape) == (2, 64, 64, 3) and str(batch["reference"].dtype) == "torch.uint8"
    assert tuple(batch["audio"].shape) == (2, T, cfg.audio.n_mels, W) and str(batch["audio"].dtype) == "torch.float32"
    assert tuple(batch["motion"].shape) == (2,) and str(batch["motion"].dtype) == "torch.float32"
    assert ((batch["motion"] >= 0) & (batch["motion"] <= 1)).all()
    with pytest.raises(ConfigError, match="data.source"):
        clip_loader(cfg, DataConfig(source="webcam"), ClipRequest(T), 2)


@pytest.mark.parametrize("start", [36, 38, 34.7])
def test_audio_is_aligned_with_the_frames(folder, start):
    """The tone burst sounds during video frame 40; cut at frame `start`, window frame 40 - start
    holds it: the centre column of the feature windows is loudest there."""
    ds = dataset(folder)
    features = AudioFeatures(ds.model_cfg)
    item, info = ds.sample(np.random.default_rng(0), features, at=(entry_index(ds, "still.mp4"), start / FPS))
    assert info["face"]  # the generated face is found by the detector
    centre = item["audio"][:, :, ds.model_cfg.audio.context_frames]  # log-mel of each frame's centre
    energy = np.log(np.exp(centre).sum(axis=1))  # log of the total mel energy
    assert int(np.argmax(energy)) == int(np.ceil(BURST_FRAME - start - 0.5))
    assert energy.max() - np.median(energy) > 5.0  # a burst, far above the noise (natural log)


def test_reference_comes_from_another_time(folder):
    ds = dataset(folder)
    for seed in range(4):
        item, info = ds.sample(np.random.default_rng(seed), at=(entry_index(ds, "moving.mp4"), 1.0))
        window = (info["t0"], info["t0"] + T / FPS)
        assert info["t_ref"] <= window[0] - REF_GAP_S + 1e-9 or info["t_ref"] >= window[1] + REF_GAP_S - 1e-9
        assert not any(np.array_equal(item["reference"], f) for f in item["frames"])
        # same crop box: the reference is the same face, so it is close to the frames, not far
        diff = np.abs(item["reference"].astype(np.float32) - item["frames"][0].astype(np.float32)).mean()
        assert 0.5 < diff < 40.0


def test_motion_estimate_orders_still_and_moving(folder):
    ds = dataset(folder)
    rng = np.random.default_rng(1)
    still = [ds.sample(rng, at=(entry_index(ds, "still.mp4"), t))[0]["motion"] for t in (0.2, 1.0, 2.0)]
    moving = [ds.sample(rng, at=(entry_index(ds, "moving.mp4"), t))[0]["motion"] for t in (0.2, 1.0, 2.0)]
    assert max(still) < 0.2 and np.mean(moving) > np.mean(still) + 0.2
    frozen = np.repeat(np.full((1, 64, 64, 3), 128, np.uint8), 5, axis=0)
    assert motion_intensity(frozen, FPS) == 0.0 and motion_intensity(frozen[:1], FPS) == 0.0


def test_ranks_and_workers_draw_different_windows(folder):
    a = next(iter(dataset(folder, rank=0, world=2)))
    b = next(iter(dataset(folder, rank=1, world=2)))
    again = next(iter(dataset(folder, rank=0, world=2)))
    assert not np.array_equal(a["frames"], b["frames"])
    assert np.array_equal(a["frames"], again["frames"])  # seeded: reproducible


def test_two_training_steps_on_videos(tmp_path, folder):
    from knotanim.train.config import TrainConfig
    from knotanim.train.trainer import train

    cfg = {"model": tiny_config().to_dict(), "stage": "dit", "batch_size": 2, "chunks": 3, "steps": 2, "warmup": 1,
           "log_every": 1, "save_every": 100, "bf16": False,
           "data": {"source": "videos", "video_folder": str(folder), "workers": 0}}
    path = tmp_path / "videos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(TrainConfig.load(path), tmp_path / "run", device="cpu", progress=lambda s: None)
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all("nan" not in r for r in rows)
    assert (Path(result.model_dir) / "config.json").exists() or any(Path(result.model_dir).iterdir())
