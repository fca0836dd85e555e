"""Profiles and the automatic choice at start-up (issue #10): order, messages, cache, CLI wiring."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from knotanim import profiles as P
from knotanim.cli.main import main
from knotanim.errors import InputError
from knotanim.frontends.audio_io import write_wav


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A fake assets folder with tiny `default` and `lite` models (lite: another seed)."""
    from knotanim import KnotAnimator, tiny_config

    root = tmp_path_factory.mktemp("assets")
    for seed, name in ((0, "default"), (1, "lite")):
        cfg = dataclasses.replace(tiny_config(), name=name)  # how fake_measure tells them apart
        KnotAnimator.from_config(cfg, device="cpu", seed=seed).save_pretrained(root / name)
    (root / "broken").mkdir()
    return root


@pytest.fixture()
def both(assets):
    return P.installed_profiles(assets)


@pytest.fixture()
def only_default(assets):
    return [p for p in P.installed_profiles(assets) if p.name == "default"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOTANIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_measure(rates, calls):
    def measure(animator, backend, seconds):
        calls.append(animator.config.name)
        return rates[animator.config.name]
    return measure


def test_installed_profiles_best_first_and_only_complete_folders(assets, tmp_path):
    assert [p.name for p in P.installed_profiles(assets)] == ["default", "lite"]
    assert P.installed_profiles(tmp_path) == []
    assert P.installed_profiles()[0].name == "default"  # the package's own assets/default
    assert P.find_profile("auto", P.installed_profiles(assets)).path == assets / "default"


def test_first_profile_that_holds_wins_and_lighter_ones_are_not_measured(both):
    calls = []
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure({"default": 30.0, "lite": 90.0}, calls))
    assert c.profile.name == "default" and c.holds and c.measured_fps == 30.0 and calls == ["default"]
    assert c.backend.name == "torch" and "holds 25 fps" in c.message
    calls.clear()
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure({"default": 4.0, "lite": 26.0}, calls), remeasure=True)
    assert c.profile.name == "lite" and c.holds and calls == ["default", "lite"]
    assert c.animator.config.name == "lite"


def test_none_holds_picks_the_fastest_and_says_so(both, only_default):
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure({"default": 0.9, "lite": 12.0}, []))
    assert c.profile.name == "lite" and not c.holds
    assert c.message.startswith("no installed profile holds 25 fps on this CPU; running 'lite' at 12.0 frames/s")
    c = P.choose_profile("cpu", profiles=only_default, measure=fake_measure({"default": 0.9}, []), remeasure=True)
    assert c.message == ("no installed profile holds 25 fps on this CPU; running 'default' at 0.9 frames/s with torch "
                         "(the app will repeat frames). Install or train the lite profile (docs/lite.md)")


def test_requested_profile_is_used_and_absent_lite_is_a_one_line_error(both, only_default):
    calls = []
    c = P.choose_profile("cpu", "lite", profiles=both, measure=fake_measure({"default": 99.0, "lite": 5.0}, calls))
    assert c.profile.name == "lite" and calls == ["lite"] and "(requested) does not hold 25 fps" in c.message
    with pytest.raises(InputError) as e:
        P.choose_profile("cpu", "lite", profiles=only_default, measure=fake_measure({}, []))
    msg = str(e.value)
    assert "\n" not in msg and "not installed (installed: default)" in msg and "docs/lite.md" in msg


def test_cache_hit_miss_and_remeasure(both, cache_dir, monkeypatch):
    calls = []
    measure = fake_measure({"default": 3.0, "lite": 40.0}, calls)
    first = P.choose_profile("cpu", profiles=both, measure=measure)
    assert calls == ["default", "lite"] and not first.cached and (cache_dir / P.CACHE_FILE).is_file()
    second = P.choose_profile("cpu", profiles=both, measure=measure)
    assert calls == ["default", "lite"] and second.cached and second.profile.name == "lite"
    assert "cached; --remeasure" in second.message
    P.choose_profile("cpu", profiles=both, measure=measure, remeasure=True)
    assert calls == ["default", "lite"] * 2
    P.choose_profile("cpu", profiles=both, measure=measure, steps=1)  # another variant: another key
    assert len(calls) == 6
    monkeypatch.delenv("KNOTANIM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir / "xdg"))
    assert P.speed_cache_path() == cache_dir / "xdg" / "knotanim" / P.CACHE_FILE


def test_measure_profile_streams_the_real_path(assets):
    from knotanim import KnotAnimator

    anim = KnotAnimator.from_pretrained(assets / "default", device="cpu")
    speed = P.measure_stream(anim, 0.5, warmup_frames=3)
    assert speed.frames > 0 and speed.fps > 0 and len(speed.chunk_times) >= 1
    assert P.measure_profile(anim, None, seconds=0.05) > 0


# --- CLI wiring ----------------------------------------------------------------------------------------
@pytest.fixture()
def cli_profiles(monkeypatch, assets):
    """use(names, rates): only `names` installed (tiny models), rates for a fake measure; returns the loads."""
    installed, real_load = P.installed_profiles, P._load

    def use(names, rates=None):
        monkeypatch.setattr(P, "installed_profiles", lambda root=None: [p for p in installed(assets) if p.name in names])
        loaded = []

        def load(profile, device):
            loaded.append(profile.name)
            return real_load(profile, device)
        monkeypatch.setattr(P, "_load", load)
        if rates is not None:
            monkeypatch.setattr(P, "measure_profile", fake_measure(rates, []))
        return loaded
    return use


def _inputs(tmp_path):
    img = tmp_path / "face.png"
    y, x = np.mgrid[0:72, 0:90]
    Image.fromarray(np.stack([x * 2, y * 3, x + y], axis=2).clip(0, 255).astype(np.uint8)).save(img)
    wav = tmp_path / "s.wav"
    t = np.arange(16000) / 16000
    write_wav(wav, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return str(img), str(wav)


def test_live_cli_measures_and_runs_the_chosen_profile(cli_profiles, tmp_path, capsys):
    loaded = cli_profiles({"default", "lite"}, {"default": 2.0, "lite": 30.0})
    img, wav = _inputs(tmp_path)
    base = ["live", "--image", img, "--audio-file", wav, "--seconds", "0.3", "--device", "cpu", "--no-face-detect"]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert loaded == ["default", "lite"]
    assert "profile: profile 'lite' (holds 25 fps) on this CPU: 30.0 frames/s with torch" in err
    assert "-> lite on cpu" in err
    loaded.clear()
    assert main(base + ["--profile", "default"]) == 0
    err = capsys.readouterr().err
    assert loaded == ["default"] and "(cached; --remeasure" in err and "-> default on cpu" in err


def test_live_and_render_cli_absent_lite_is_one_line(cli_profiles, tmp_path, capsys):
    cli_profiles({"default"}, {"default": 1.0})
    img, wav = _inputs(tmp_path)
    assert main(["live", "--image", img, "--seconds", "0.1", "--device", "cpu", "--profile", "lite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "docs/lite.md" in err and err.startswith("knotanim live: error:")
    assert main(["render", "-i", img, "-a", wav, "-o", str(tmp_path / "o.mp4"), "--profile", "lite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "docs/lite.md" in err


def test_render_cli_profile_reaches_the_animator_without_measuring(cli_profiles, tmp_path, capsys, monkeypatch):
    from knotanim.animator import KnotAnimator

    cli_profiles({"default", "lite"}, {})  # any measurement would raise KeyError
    paths = []
    real = KnotAnimator.from_pretrained.__func__
    monkeypatch.setattr(KnotAnimator, "from_pretrained",
                        classmethod(lambda cls, path=None, **kw: paths.append(str(path)) or real(cls, path, **kw)))
    img, wav = _inputs(tmp_path)
    base = ["render", "-i", img, "-a", wav, "--device", "cpu", "--no-face-detect", "--backend", "torch", "-q"]
    assert main(base + ["-o", str(tmp_path / "a.mp4")]) == 0
    assert main(base + ["-o", str(tmp_path / "l.mp4"), "--profile", "lite"]) == 0
    assert main(base + ["-o", str(tmp_path / "m.mp4"), "--profile", "lite", "--model", paths[0]]) == 0
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["default", "lite", "default"]
