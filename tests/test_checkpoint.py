import json

import numpy as np
import pytest
import torch

from knotanim import KnotAnimConfig, tiny_config
from knotanim.animator import KnotAnimator
from knotanim.checkpoint import MAX_SHARD_BYTES, load_checkpoint, read_manifest, save_checkpoint
from knotanim.errors import CheckpointError, ConfigError


def test_save_load_round_trip_is_exact(tmp_path):
    anim = KnotAnimator.from_config(tiny_config(), seed=3)
    anim.save_pretrained(tmp_path / "m")
    back = KnotAnimator.from_pretrained(tmp_path / "m", device="cpu")
    assert back.config == anim.config
    a, b = anim.state_tensors(), back.state_tensors()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).standard_normal(640 * 6).astype(np.float32)
    fa = [f.image for f in anim.stream(ref).push_audio(audio)]
    fb = [f.image for f in back.stream(ref).push_audio(audio)]
    assert len(fa) > 0 and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_shards_respect_the_size_limit_and_carry_checksums(tmp_path):
    tensors = {f"t{i}": torch.randn(1024, 1024) for i in range(9)}  # 36 MiB in fp32
    save_checkpoint(tmp_path, tiny_config(), tensors)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert len(meta["shards"]) >= 3
    for e in meta["shards"]:
        assert (tmp_path / e["file"]).stat().st_size <= MAX_SHARD_BYTES
        assert len(e["sha256"]) == 64
    _, back, _ = load_checkpoint(tmp_path)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_corrupted_truncated_and_missing_shards_are_named(tmp_path):
    anim = KnotAnimator.from_config(tiny_config())
    folder = anim.save_pretrained(tmp_path / "m")
    shard = next(folder.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=shard.name):
        KnotAnimator.from_pretrained(folder, device="cpu")
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(CheckpointError, match="truncated"):
        KnotAnimator.from_pretrained(folder, device="cpu")
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        KnotAnimator.from_pretrained(folder, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        KnotAnimator.from_pretrained(tmp_path / "nope", device="cpu")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        KnotAnimator.from_pretrained(tmp_path / "junk", device="cpu")


def test_config_round_trip_and_validation(tmp_path):
    cfg = tiny_config()
    assert KnotAnimConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.yaml").write_text("frame_size: 128\nmodel:\n  depth: 3\n")
    loaded = KnotAnimConfig.load(tmp_path / "c.yaml")
    assert loaded.frame_size == 128 and loaded.model.depth == 3
    with pytest.raises(ConfigError, match="unknown"):
        KnotAnimConfig.from_dict({"model": {"depht": 3}})
    with pytest.raises(ConfigError, match="heads"):
        KnotAnimConfig.from_dict({"model": {"heads": 5}})
    with pytest.raises(ConfigError):
        KnotAnimConfig.from_dict({"frame_size": "big"})
    assert KnotAnimConfig().audio_lookahead_seconds > 0


def test_shipped_profiles_are_complete_checksummed_and_within_the_size_rules():
    """Every model folder in assets/ (issues #9, #10): safetensors shards <= 16 MiB whose sizes and
    checksums match config.json, nothing else in the folder but config.json, the default model
    <= 64 MiB, all profiles together < 96 MiB; and each one loads."""
    from knotanim.profiles import assets_root, installed_profiles

    profiles = installed_profiles()
    assert profiles and profiles[0].name == "default"
    total = 0
    for p in profiles:
        _, meta = read_manifest(p.path)
        listed = {e["file"] for e in meta["shards"]}
        assert {f.name for f in p.path.iterdir()} == listed | {"config.json"}, p.name
        assert all(f.endswith(".safetensors") for f in listed)
        size = sum((p.path / f).stat().st_size for f in listed) + (p.path / "config.json").stat().st_size
        assert all((p.path / f).stat().st_size <= MAX_SHARD_BYTES for f in listed)
        if p.name == "default":
            assert size <= 64 * 2**20
        _, tensors, _ = load_checkpoint(p.path, verify=True)  # sizes and sha256 against the manifest
        assert tensors
        total += size
    assert total < 96 * 2**20
    assert [p.path.parent for p in profiles] == [assets_root()] * len(profiles)
