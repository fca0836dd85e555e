"""Profiles and the automatic choice at start-up (issue #10): order, messages, cache, CLI wiring."""
import dataclasses

import numpy as np
import torch
import pytest
from PIL import Image

from knotanim import profiles as P
from knotanim.cli.main import main
from knotanim.errors import BackendUnavailable, InputError
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
    """rates: {model name: fps, or {backend kind: fps}}; calls gets the model name (and "/backend" for dicts)."""
    def measure(animator, backend, seconds):
        rate = rates[animator.config.name]
        if isinstance(rate, dict):
            kind = backend.name.split("[")[0]
            calls.append(f"{animator.config.name}/{kind}")
            return rate[kind]
        calls.append(animator.config.name)
        return rate
    return measure


class FakeBackends:
    """Stands in for engines.select.StepBackends without exporting anything: records what is built."""

    def __init__(self, name, animator, log, fail_prepare=False):
        self.name, self.animator, self.log, self.fail_prepare = name, animator, log, fail_prepare
        self.prepared = ()

    def prepare(self, counts):
        if self.fail_prepare and len(counts) > 1:
            raise RuntimeError("graph for 1 step failed\nsecond line")
        self.prepared = tuple(sorted(set(self.prepared) | set(counts), reverse=True))
        self.log.append((self.animator.config.name, self.name, "prepare", self.prepared))
        return self

    def __call__(self, steps=None, build=True):
        label = {"onnxruntime": "onnxruntime[CPU]"}.get(self.name, self.name)
        return type("FakeChunkBackend", (), {"name": label, "device": self.animator.device})()


def fake_build(log, unavailable=(), fail_prepare=()):
    def build(name, animator, model_path, export):
        if name in unavailable:
            raise BackendUnavailable(f"{name} is not installed (pip install 'knotanim[onnx]')")
        log.append((animator.config.name, name, "build", export))
        return FakeBackends(name, animator, log, fail_prepare=name in fail_prepare)
    return build


def test_installed_profiles_best_first_and_only_complete_folders(assets, tmp_path):
    assert [p.name for p in P.installed_profiles(assets)] == ["default", "lite"]
    assert P.installed_profiles(tmp_path) == []
    assert P.installed_profiles()[0].name == "default"  # the package's own assets/default
    assert P.find_profile("auto", P.installed_profiles(assets)).path == assets / "default"


def test_first_profile_that_holds_wins_and_lighter_ones_are_not_measured(both):
    calls = []
    c = P.choose_profile("cpu", profiles=both, backend="torch", measure=fake_measure({"default": 30.0, "lite": 90.0}, calls))
    assert c.profile.name == "default" and c.holds and c.measured_fps == 30.0 and calls == ["default"]
    assert c.backend.name == "torch" and "holds 25 fps" in c.message
    calls.clear()
    c = P.choose_profile("cpu", profiles=both, backend="torch", measure=fake_measure({"default": 4.0, "lite": 26.0}, calls),
                         remeasure=True)
    assert c.profile.name == "lite" and c.holds and calls == ["default", "lite"]
    assert c.animator.config.name == "lite"


def test_none_holds_picks_the_fastest_and_says_so(both, only_default):
    c = P.choose_profile("cpu", profiles=both, backend="torch", measure=fake_measure({"default": 0.9, "lite": 12.0}, []))
    assert c.profile.name == "lite" and not c.holds
    assert c.message.startswith("no installed profile holds 25 fps on this CPU; running 'lite' at 12.0 frames/s")
    c = P.choose_profile("cpu", profiles=only_default, backend="torch", measure=fake_measure({"default": 0.9}, []),
                         remeasure=True)
    assert c.message == ("no installed profile holds 25 fps on this CPU; running 'default' at 0.9 frames/s with torch "
                         "(the app will repeat frames). The lite profile is missing: reinstall knotanim (docs/lite.md)")


def test_requested_profile_is_used_and_absent_lite_is_a_one_line_error(both, only_default):
    calls = []
    c = P.choose_profile("cpu", "lite", profiles=both, backend="torch",
                         measure=fake_measure({"default": 99.0, "lite": 5.0}, calls))
    assert c.profile.name == "lite" and calls == ["lite"] and "(requested) does not hold 25 fps" in c.message
    with pytest.raises(InputError) as e:
        P.choose_profile("cpu", "lite", profiles=only_default, measure=fake_measure({}, []))
    msg = str(e.value)
    assert "\n" not in msg and "not installed (installed: default)" in msg and "docs/lite.md" in msg


def test_cache_hit_miss_and_remeasure(both, cache_dir, monkeypatch):
    calls = []
    measure = fake_measure({"default": {"onnxruntime": 3.0, "torch": 2.0},
                            "lite": {"onnxruntime": 40.0, "compiled": 35.0, "torch": 30.0}}, calls)
    build = fake_build([])
    first = P.choose_profile("cpu", profiles=both, measure=measure, build=build)
    measured = ["default/onnxruntime", "default/torch", "lite/onnxruntime", "lite/torch"]
    assert calls == measured and not first.cached and (cache_dir / P.CACHE_FILE).is_file()
    second = P.choose_profile("cpu", profiles=both, measure=measure, build=build)
    assert calls == measured and second.cached and second.profile.name == "lite"  # every backend's rate cached
    assert second.backend_name == "onnxruntime[CPU]" and "cached; --remeasure" in second.message
    P.choose_profile("cpu", profiles=both, measure=measure, build=build, remeasure=True)
    assert calls == measured * 2
    P.choose_profile("cpu", profiles=both, measure=measure, build=build, steps=1)  # another variant: another key
    assert len(calls) == 12
    monkeypatch.delenv("KNOTANIM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir / "xdg"))
    assert P.speed_cache_path() == cache_dir / "xdg" / "knotanim" / P.CACHE_FILE


# --- the backend choice (fake rates, fake builds: no timing, no exports) -----------------------------------
def test_auto_picks_the_fastest_backend_that_holds_and_says_so(both):
    log, calls = [], []
    rates = {"default": {"onnxruntime": 12.0, "torch": 4.0}, "lite": {"onnxruntime": 31.0, "compiled": 27.0, "torch": 20.0}}
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure(rates, calls), build=fake_build(log))
    # a CPU builds nothing at start: ONNX Runtime only from a graph already exported (the fake build has one), no
    # torch.compile
    assert calls == ["default/onnxruntime", "default/torch", "lite/onnxruntime", "lite/torch"]
    assert c.profile.name == "lite" and c.holds and c.measured_fps == 31.0 and c.backend_name == "onnxruntime[CPU]"
    assert c.message == "profile 'lite' (holds 25 fps) on this CPU: 31.0 frames/s with onnxruntime[CPU] (torch 20.0)"
    assert c.backends.name == "onnxruntime" and c.backends.animator is c.animator
    assert c.backends.prepared == (2, 1)  # built for the quality ladder (tiny: 2 steps, then 1) at start
    assert [entry for entry in log if entry[2] == "prepare"] == [("lite", "onnxruntime", "prepare", (2, 1))]
    assert [e for e in log if e[2] == "build"] == [("default", "onnxruntime", "build", False), ("default", "torch", "build", True),
                                                  ("lite", "onnxruntime", "build", False), ("lite", "torch", "build", True)]
    assert c.tried == [("default", "onnxruntime[CPU]", 12.0), ("default", "torch", 4.0),
                       ("lite", "onnxruntime[CPU]", 31.0), ("lite", "torch", 20.0)]


def test_a_cpu_compiles_only_when_asked_and_then_prepares_compiled_for_the_ladder(both):
    log, calls = [], []
    rates = {"default": {"onnxruntime": 3.0, "torch": 2.0}, "lite": {"onnxruntime": 14.0, "compiled": 26.0, "torch": 19.0}}
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure(rates, calls), build=fake_build(log))
    assert not any("compiled" in call for call in calls) and not any(e[1] == "compiled" for e in log)
    assert c.profile.name == "lite" and c.backend_name == "torch" and not c.holds
    log, calls = [], []
    c = P.choose_profile("cpu", "lite", profiles=both, backend="compiled", measure=fake_measure(rates, calls),
                         build=fake_build(log))
    assert calls == ["lite/compiled"] and c.holds and c.backend_name == "compiled" and c.measured_fps == 26.0
    assert c.backends.name == "compiled" and c.backends.prepared == (2, 1)
    assert ("lite", "compiled", "build", True) in log
    assert c.message == "profile 'lite' (requested) on this CPU: 26.0 frames/s with compiled"


@pytest.mark.parametrize("rates, backend, fps", [
    ({"onnxruntime": 40.0, "torch": 26.0}, "onnxruntime[CPU]", 40.0),  # both hold: the faster
    ({"onnxruntime": 24.0, "torch": 26.0}, "torch", 26.0),  # only torch holds
])
def test_the_first_profile_keeps_its_fastest_backend_and_lighter_ones_are_not_measured(both, rates, backend, fps):
    calls = []
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure({"default": rates, "lite": {}}, calls),
                         build=fake_build([]))
    assert c.profile.name == "default" and c.backend_name == backend and c.measured_fps == fps and c.holds
    assert calls == ["default/onnxruntime", "default/torch"] and f"with {backend}" in c.message


def test_none_holds_runs_the_fastest_profile_and_backend_and_says_the_rate(both):
    rates = {"default": {"onnxruntime": 3.0, "torch": 1.0}, "lite": {"onnxruntime": 12.0, "compiled": 10.0, "torch": 9.0}}
    c = P.choose_profile("cpu", profiles=both, measure=fake_measure(rates, []), build=fake_build([]))
    assert c.profile.name == "lite" and c.backend_name == "onnxruntime[CPU]" and not c.holds
    assert c.message == ("no installed profile holds 25 fps on this CPU; running 'lite' at 12.0 frames/s with "
                         "onnxruntime[CPU] (torch 9.0) (the app will repeat frames). An NVIDIA GPU or fewer --steps helps")


def test_a_backend_that_cannot_be_built_falls_back_to_torch_with_one_line(both):
    log = []
    rates = {"default": {"onnxruntime": 90.0, "torch": 30.0}}
    c = P.choose_profile("cpu", "default", profiles=both, backend="onnxruntime", measure=fake_measure(rates, []),
                         build=fake_build(log, unavailable={"onnxruntime"}))
    assert c.backend_name == "torch" and c.backends.name == "torch" and c.measured_fps == 30.0
    assert c.notes == ["the onnxruntime backend could not be built (onnxruntime is not installed (pip install "
                       "'knotanim[onnx]')): running torch"]
    c = P.choose_profile("cpu", "default", profiles=both, measure=fake_measure(rates, []),
                         build=fake_build(log, unavailable={"onnxruntime"}), remeasure=True)  # auto: skipped
    assert c.backend_name == "torch" and c.notes[0].startswith("onnxruntime skipped (onnxruntime is not installed")
    # Built for the first rung and measured, but the ladder's other step count fails: torch, rate measured.
    calls = []
    c = P.choose_profile("cpu", "default", profiles=both, backend="onnxruntime", measure=fake_measure(rates, calls),
                         build=fake_build(log, fail_prepare={"onnxruntime"}), remeasure=True)
    assert c.backend_name == "torch" and c.measured_fps == 30.0 and calls == ["default/onnxruntime", "default/torch"]
    assert c.notes == ["the onnxruntime backend could not be built for the quality ladder (RuntimeError: graph for "
                       "1 step failed): running torch"]
    assert "\n" not in c.notes[0] and c.backends.prepared == (2, 1)


def test_choose_backend_real_onnxruntime_build_is_prepared_for_the_ladder(assets, tmp_path, monkeypatch):
    """No fakes but the rates: auto on a CPU exports nothing; the named backend really exports the ONNX graphs
    (into $KNOTANIM_CACHE) for every rung, and from then on auto measures them."""
    from knotanim import KnotAnimator

    anim = KnotAnimator.from_pretrained(assets / "lite", device="cpu")
    lite = P.Profile("lite", assets / "lite", "")
    rate = lambda a, b, s: {"torch": 10.0}.get(b.name, 20.0)  # noqa: E731
    bc = P.choose_backend(anim, "auto", profile=lite, measure=rate)
    assert bc.backend.name == "torch" and bc.tried == [("torch", 10.0)]
    assert bc.notes[0].startswith("onnxruntime skipped (no exported ONNX graph")
    bc = P.choose_backend(anim, "onnxruntime", profile=lite, measure=rate)
    assert bc.backend.name == "onnxruntime[CPU]" and bc.backends.prepared == (2, 1) and bc.fps == 20.0
    assert bc.backends(1, build=False).name == "onnxruntime[CPU]" and bc.tried == [("onnxruntime[CPU]", 20.0)]
    bc = P.choose_backend(anim, "auto", profile=lite, measure=rate)
    assert bc.backend.name == "onnxruntime[CPU]" and bc.tried == [("onnxruntime[CPU]", 20.0), ("torch", 10.0)]


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

        def load(profile, device, dtype=None):
            loaded.append(profile.name)
            return real_load(profile, device, dtype)
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
    loaded = cli_profiles({"default", "lite"}, {"default": 2.0, "lite": 30.0})  # both backends alike: the first wins
    img, wav = _inputs(tmp_path)
    base = ["live", "--image", img, "--audio-file", wav, "--seconds", "0.3", "--device", "cpu", "--no-face-detect"]
    assert main(base + ["--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert loaded == ["default", "lite"]
    assert "profile: profile 'lite' (holds 25 fps) on this CPU: 30.0 frames/s with torch" in err
    assert "-> lite on cpu with torch" in err
    loaded.clear()
    assert main(base + ["--profile", "default", "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert loaded == ["default"] and "(cached; --remeasure" in err and "-> default on cpu with torch" in err


def test_live_cli_auto_on_a_cpu_starts_unmeasured_and_uses_rates_measured_on_request(cli_profiles, tmp_path, capsys):
    loaded = cli_profiles({"default", "lite"}, {"default": {"onnxruntime": 3.0, "torch": 2.0},
                                                "lite": {"onnxruntime": 40.0, "torch": 30.0}})
    img, wav = _inputs(tmp_path)
    base = ["live", "--image", img, "--audio-file", wav, "--seconds", "0.5", "--device", "cpu", "--no-face-detect"]
    rc = main(base)  # nothing cached: nothing measured or built before the first frame
    err = capsys.readouterr().err
    assert rc == 0, err
    assert loaded == ["default"] and "measuring" not in err and "Traceback" not in err  # tiny: both could hold
    assert "(chosen by its size: " in err and "not measured; --remeasure measures the candidates once" in err
    assert "-> default on cpu with torch" in err and "first frame: " in err
    loaded.clear()
    assert main(base + ["--remeasure"]) == 0  # measured on request, without building anything
    err = capsys.readouterr().err
    assert loaded == ["default", "lite"] and "export" not in err.replace("exported", "")
    assert "note: onnxruntime skipped (no exported ONNX graph" in err
    assert "profile: profile 'lite' (holds 25 fps) on this CPU: 30.0 frames/s with torch" in err
    loaded.clear()
    assert main(base) == 0  # the rates are cached now: the measured choice, at once
    err = capsys.readouterr().err
    assert loaded == ["default", "lite"] and "measuring" not in err and "(cached; --remeasure" in err
    assert "-> lite on cpu with torch" in err
    # asked by name: exported, and built for every rung of the ladder before streaming starts
    assert main(base + ["--backend", "onnxruntime", "--profile", "lite"]) == 0
    err = capsys.readouterr().err
    assert "preparing the onnxruntime backend for 2 sampler steps" in err
    assert err.index("preparing the onnxruntime backend for 1 sampler step…") < err.index("live: ")
    assert "-> lite on cpu with onnxruntime[CPU]" in err


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


# --- bf16 on a CPU with native bf16 (the lite profile: CPU_BF16_PROFILES) ----------------------------------
def dtype_measure(rates, calls):
    """rates: {model name: {backend kind or "kind bf16": fps}}; calls gets "model/kind" or "model/kind bf16"."""
    def measure(animator, backend, seconds):
        kind = backend.name.split("[")[0] + (" bf16" if animator.dtype == torch.bfloat16 else "")
        calls.append(f"{animator.config.name}/{kind}")
        return rates[animator.config.name][kind]
    return measure


def recording_load(loads):
    def load(profile, device, dtype=None):
        loads.append((profile.name, dtype))
        return P._load(profile, device, dtype)
    return load


@pytest.fixture()
def native_bf16(monkeypatch):
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)


LITE_RATES = {"default": {"onnxruntime": 3.0, "torch": 2.0},
              "lite": {"onnxruntime": 20.0, "compiled": 24.3, "torch": 18.3, "compiled bf16": 34.9, "torch bf16": 25.9}}


def test_native_bf16_flags():
    assert P.native_bf16_flags("model name\t: Xeon\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert P.native_bf16_flags("flags\t: fpu amx_bf16 amx_tile\n")
    assert not P.native_bf16_flags("flags\t: fpu sse avx2 avx512f\n") and not P.native_bf16_flags("")


def test_lite_is_measured_in_bf16_first_on_a_native_bf16_cpu_and_float32_not_at_all_when_bf16_holds(both,
                                                                                                   native_bf16):
    log, calls, loads = [], [], []
    c = P.choose_profile("cpu", profiles=both, measure=dtype_measure(LITE_RATES, calls), build=fake_build(log),
                         load=recording_load(loads))
    assert loads == [("default", None), ("lite", torch.bfloat16)]  # never the default profile in bf16
    # bf16 with the torch backends only (an ONNX graph is float32 whatever the model's dtype); it holds 25 fps,
    # so lite's float32 candidates are never measured
    assert calls == ["default/onnxruntime", "default/torch", "lite/torch bf16"]
    assert c.profile.name == "lite" and c.holds and c.measured_fps == 25.9 and c.dtype == torch.bfloat16
    assert c.animator.dtype == torch.bfloat16 and c.backends.animator is c.animator
    assert c.backend_name == "torch (bf16)" and c.backends.name == "torch" and c.backends.prepared == (2, 1)
    assert c.tried[2:] == [("lite", "torch (bf16)", 25.9)]
    assert c.message == "profile 'lite' (holds 25 fps) on this CPU: 25.9 frames/s with torch (bf16)"


def test_bf16_below_the_target_measures_float32_too_and_keeps_the_faster(both, native_bf16):
    rates = {"lite": {"onnxruntime": 20.0, "torch": 18.0, "torch bf16": 23.0}}
    calls, loads = [], []
    c = P.choose_profile("cpu", "lite", profiles=both, measure=dtype_measure(rates, calls), build=fake_build([]),
                         load=recording_load(loads))
    assert loads == [("lite", torch.bfloat16), ("lite", None)]
    assert calls == ["lite/torch bf16", "lite/onnxruntime", "lite/torch"]
    assert c.backend_name == "torch (bf16)" and c.animator.dtype == torch.bfloat16 and not c.holds


def test_bf16_slower_keeps_float32_and_lists_the_bf16_rates(both, native_bf16):
    rates = {"lite": {"onnxruntime": 30.0, "compiled": 26.0, "torch": 20.0, "compiled bf16": 12.0, "torch bf16": 9.0}}
    c = P.choose_profile("cpu", "lite", profiles=both, measure=dtype_measure(rates, []), build=fake_build([]))
    assert c.backend_name == "onnxruntime[CPU]" and c.dtype == torch.float32 and c.animator.dtype == torch.float32
    assert c.message.endswith("(torch (bf16) 9.0, torch 20.0)")


def test_bf16_is_never_measured_without_native_bf16_or_when_a_dtype_is_given(both, monkeypatch):
    rates = {"lite": dict(LITE_RATES["lite"])}
    for native, dtype in ((False, None), (False, "auto"), (True, "float32")):
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda native=native: native)
        calls, loads = [], []
        c = P.choose_profile("cpu", "lite", profiles=both, measure=dtype_measure(rates, calls), build=fake_build([]),
                             load=recording_load(loads), dtype=dtype, remeasure=True)
        assert calls == ["lite/onnxruntime", "lite/torch"] and not any("bf16" in n for n in calls)
        assert loads == [("lite", None if dtype != "float32" else torch.float32)]
        assert c.backend_name == "onnxruntime[CPU]" and "bf16" not in c.message and c.notes == []
    # bf16 asked for: only bf16 (every candidate), and said; without native bf16 a note warns it is slow
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    rates["lite"]["onnxruntime bf16"] = 5.0
    calls = []
    c = P.choose_profile("cpu", "lite", profiles=both, measure=dtype_measure(rates, calls), build=fake_build([]),
                         dtype="bfloat16", remeasure=True)
    assert calls == ["lite/onnxruntime bf16", "lite/torch bf16"]
    assert c.backend_name == "torch (bf16)" and c.animator.dtype == torch.bfloat16
    assert c.notes[0].startswith("this CPU has no native bf16")
    with pytest.raises(InputError):
        P.choose_profile("cpu", "lite", profiles=both, dtype="float16")


def test_bf16_follows_an_explicit_torch_backend_but_not_onnxruntime(both, native_bf16):
    calls = []
    c = P.choose_profile("cpu", "lite", profiles=both, backend="torch", measure=dtype_measure(LITE_RATES, calls),
                         build=fake_build([]))
    assert calls == ["lite/torch bf16"] and c.backend_name == "torch (bf16)"  # 25.9 holds: no float32
    calls.clear()
    c = P.choose_profile("cpu", "lite", profiles=both, backend="onnxruntime", measure=dtype_measure(LITE_RATES, calls),
                         build=fake_build([]))
    assert calls == ["lite/onnxruntime"] and c.backend_name == "onnxruntime[CPU]"


def test_bf16_rates_are_cached_under_their_own_keys(both, native_bf16, cache_dir):
    import json

    calls = []
    measure, build = dtype_measure(LITE_RATES, calls), fake_build([])
    P.choose_profile("cpu", "lite", profiles=both, measure=measure, build=build)
    assert len(calls) == 1  # bf16 holds 25 fps: float32 not measured
    keys = sorted(json.loads((cache_dir / P.CACHE_FILE).read_text()))
    assert len(keys) == 1 and all("|bfloat16|" in k for k in keys)
    c = P.choose_profile("cpu", "lite", profiles=both, measure=measure, build=build)
    assert len(calls) == 1 and c.cached and c.backend_name == "torch (bf16)" and c.measured_fps == 25.9
    slow = {"lite": dict(LITE_RATES["lite"], **{"torch bf16": 15.0})}  # below: float32 too
    P.choose_profile("cpu", "lite", profiles=both, measure=dtype_measure(slow, calls), build=build, remeasure=True)
    keys = sorted(json.loads((cache_dir / P.CACHE_FILE).read_text()))
    assert len(keys) == 3 and sum("|bfloat16|" in k for k in keys) == 1 and sum("|float32|" in k for k in keys) == 2
    lite = both[1]
    dev = torch.device("cpu")
    assert P.cache_key(lite, "torch", dev, None, torch.bfloat16) != P.cache_key(lite, "torch", dev, None, torch.float32)
    assert P.cache_key(lite, "torch", dev, None).endswith(f"|rates v{P.RATES_VERSION}")  # stale rates are not read


def test_live_cli_dtype(cli_profiles, tmp_path, capsys, monkeypatch, native_bf16):
    loaded = cli_profiles({"lite"})
    monkeypatch.setattr(P, "measure_profile", lambda a, b, s: 40.0 if a.dtype == torch.bfloat16 else 30.0)
    img, wav = _inputs(tmp_path)
    base = ["live", "--image", img, "--audio-file", wav, "--seconds", "0.3", "--device", "cpu", "--no-face-detect",
            "--backend", "torch"]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "profile: profile 'lite' (holds 25 fps) on this CPU: 40.0 frames/s with torch (bf16)" in err
    assert "-> lite on cpu with torch (bf16)" in err and loaded == ["lite"]  # bf16 holds: float32 never loaded
    loaded.clear()
    assert main(base + ["--dtype", "float32"]) == 0
    err = capsys.readouterr().err
    # float32 measured now (the first start never needed it), then cached like every rate
    assert "30.0 frames/s with torch" in err and "bf16" not in err and loaded == ["lite"]
    assert main(base + ["--dtype", "float32"]) == 0
    assert "30.0 frames/s with torch (cached" in capsys.readouterr().err


def test_render_cli_dtype_reaches_the_animator(cli_profiles, tmp_path, monkeypatch):
    from knotanim.animator import KnotAnimator

    cli_profiles({"lite"}, {})
    dtypes = []
    real = KnotAnimator.from_pretrained.__func__
    record = classmethod(lambda cls, path=None, **kw: dtypes.append(kw.get("dtype")) or real(cls, path, **kw))
    monkeypatch.setattr(KnotAnimator, "from_pretrained", record)
    img, wav = _inputs(tmp_path)
    base = ["render", "-i", img, "-a", wav, "--device", "cpu", "--no-face-detect", "--backend", "torch", "-q"]
    assert main(base + ["-o", str(tmp_path / "a.mp4")]) == 0
    assert main(base + ["-o", str(tmp_path / "b.mp4"), "--dtype", "bfloat16"]) == 0
    assert dtypes == [None, torch.bfloat16]


# --- the start-up decision on a CPU with the shipped profiles (their real configs; tiny stand-in weights) ----
def test_cpu_auto_never_loads_exports_or_compiles_the_default_model_before_the_first_frame(tmp_path):
    """The default model needs ~21x lite's FLOPs per frame: from lite's measured rate on a CPU it cannot hold
    25 fps, so it is not even loaded (the first start used to export and parity-check its ONNX graph, then
    measure it: minutes on 2 cores before the first frame). Nothing is exported or compiled."""
    from knotanim import KnotAnimator, tiny_config

    shipped = P.installed_profiles()
    assert [p.name for p in shipped] == ["default", "lite"]
    loads, log, calls = [], [], []

    def load(profile, device, dtype=None):
        loads.append(profile.name)
        return KnotAnimator.from_config(dataclasses.replace(tiny_config(), name=profile.name), device=device)

    for lite_fps, default_loaded in ((18.0, False), (1000.0, True)):  # a 2-core laptop; a CPU 50x faster
        loads.clear(), log.clear(), calls.clear()
        rates = {"lite": {"onnxruntime": lite_fps, "torch": lite_fps}, "default": {"onnxruntime": 20.0, "torch": 20.0}}
        c = P.choose_profile("cpu", profiles=shipped, measure=fake_measure(rates, calls), build=fake_build(log),
                             load=load, cache_path=tmp_path / f"speed{lite_fps}.json")
        assert loads == (["lite", "default"] if default_loaded else ["lite"])  # cheapest first
        assert not any(export for _, name, what, export in log if what == "build" and name != "torch")
        assert not any(name == "compiled" for _, name, *_ in log)
        assert c.profile.name == "lite" and c.holds == (lite_fps >= 25)
    loads.clear()
    c = P.choose_profile("cpu", profiles=shipped, measure=fake_measure({"lite": 18.0}, []), build=fake_build([]),
                         load=load, cache_path=tmp_path / "again.json", backend="torch")
    assert loads == ["lite"] and c.notes == [
        "profile 'default' not tried: about 0.9 frames/s expected here (130 GFLOP per frame, 21x 'lite', which ran at "
        "18.0)"]
    # asked for by name, the default profile is loaded and measured as asked
    c = P.choose_profile("cpu", "default", profiles=shipped, measure=fake_measure({"default": 1.0}, []),
                         build=fake_build([]), load=load, cache_path=tmp_path / "named.json", backend="torch")
    assert loads[-1] == "default" and c.profile.name == "default" and not c.holds


def test_frame_flops_match_the_counted_flops_of_the_chunk_step():
    """engines.flops.frame_flops against torch's FLOP counter on the real ChunkStep (meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    from knotanim import tiny_config
    from knotanim.checkpoint import read_manifest
    from knotanim.engines.descriptors import chunk_step_descriptor
    from knotanim.engines.flops import frame_flops, matmul_rate
    from knotanim.model.dit import KnotDiT
    from knotanim.stream.step import ChunkStep

    for cfg in (tiny_config(), read_manifest(P.installed_profiles()[-1].path)[0]):  # tiny, lite
        meta = torch.device("meta")
        with meta:
            model = KnotDiT(cfg)
        step = ChunkStep(model, cfg.stream.chunk, cfg.sampler.steps, cfg.sampler.shift)
        inputs = [torch.empty(s.shape, dtype=s.dtype, device=meta) for s in chunk_step_descriptor(cfg).inputs]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            step(*inputs)
        counted = counter.get_total_flops() / cfg.stream.chunk
        assert 0.9 * counted <= frame_flops(cfg) <= counted  # the embeddings are left out
    state = torch.random.get_rng_state()
    assert 1e8 < matmul_rate("cpu", seconds=0.02) < 1e15  # any CPU multiplies faster than 0.1 GFLOP/s
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("matmul_flops, chosen", [(40e9, "lite"), (20e12, "default")])
def test_quick_cpu_start_with_nothing_cached_measures_nothing(tmp_path, native_bf16, matmul_flops, chosen):
    """knotanim live / the app on a CPU with an empty cache: no measurement, no export, no compile before the
    first frame; the profile comes from its FLOPs per frame against the CPU's matmul rate (a 2-core laptop: lite,
    in bf16 on a CPU with native bf16; a CPU 500x faster: the default model)."""
    from knotanim import KnotAnimator, tiny_config

    loads, log = [], []

    def load(profile, device, dtype=None):
        loads.append((profile.name, dtype))
        return KnotAnimator.from_config(dataclasses.replace(tiny_config(), name=profile.name), device=device,
                                        dtype=dtype or torch.float32)

    def measure(*_):
        raise AssertionError("measured before the first frame")

    c = P.choose_profile("cpu", profiles=P.installed_profiles(), measure=measure, build=fake_build(log), load=load,
                         cache_path=tmp_path / "speed.json", quick=True, matmul=lambda device: matmul_flops)
    dtype = torch.bfloat16 if chosen == "lite" else None
    assert loads == [(chosen, dtype)] and c.profile.name == chosen and c.measured_fps is None
    assert [e for e in log if e[2] == "build"] == [(chosen, "torch", "build", True)] and c.backends.prepared == (2, 1)
    assert c.message.startswith(f"profile {chosen!r} (chosen by its size: ") and "not measured" in c.message
    if chosen == "lite":
        assert c.backend_name == "torch (bf16)" and c.notes == [
            "profile 'default' not tried: about 0.2 frames/s at most here (130 GFLOP per frame; this CPU multiplies "
            "at 40 GFLOP/s)"]
    assert not (tmp_path / "speed.json").exists()
