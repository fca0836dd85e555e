"""`knotanim live`: microphone -> animated portrait -> virtual camera and/or mp4, without a window.

Faults it survives (see docs/reliability.md): a lost microphone (silence, reconnect), a virtual
camera or recording that fails (that output stops with a note, the rest goes on), no GPU or GPU
out of memory (CPU fallback, noted); Ctrl+C and SIGTERM finalise the recording before exiting.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from knotanim.request import add_model_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="animate a portrait from the microphone, live (virtual camera / mp4, no window)",
                       description="Run the live pipeline headless: microphone -> portrait -> virtual camera and/or "
                       "an mp4 recording, with a status line. Ctrl+C stops (the recording is finalised).")
    p.add_argument("--image", help="portrait image (face is detected and cropped)")
    p.add_argument("--mic", help="input device: index, name or part of a name (default: the system default)")
    p.add_argument("--audio-file", help="use this audio file as a fake microphone (real-time playback) instead")
    p.add_argument("--virtual-camera", action="store_true", help="send frames to a virtual camera (pyvirtualcam)")
    p.add_argument("--camera-size", default="1280x720", help="virtual camera size WxH, letterboxed (default 1280x720)")
    p.add_argument("--camera-backend", help="pyvirtualcam backend (default: any available)")
    p.add_argument("--record", metavar="OUT.mp4", help="record video + microphone audio to this mp4")
    p.add_argument("--delayed-output", metavar="DEVICE",
                   help="play the microphone on this output device delayed by the video latency (lip sync in calls)")
    add_model_arguments(p, flags=("model", "profile", "backend", "dtype", "device", "steps", "tiny"), purpose="live",
                        steps_help="sampler steps (default: the model's; lowered automatically when too slow)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the profiles' speed at start (ignore the cache; on a CPU the rates are used from then on)")
    p.add_argument("--no-degrade", action="store_true", help="never lower the quality when the machine is too slow")
    p.add_argument("--head-motion", type=float, default=0.5, help="0..1 (default 0.5)")
    p.add_argument("--background", help="flat background colour #rrggbb (default: keep the generated one)")
    p.add_argument("--size", type=int, help="output frame side in pixels (default: the model's)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--no-face-detect", action="store_true", help="animate the centre square of the image")
    p.set_defaults(run=run)


def list_devices_text() -> str:
    from knotanim.live.sources import list_devices

    lines = ["Input devices (--mic):"] + [f"  {d.label()}" for d in list_devices("input")]
    lines += ["Output devices (--delayed-output):"] + [f"  {d.label()}" for d in list_devices("output")]
    if len(lines) == 2:
        lines.append("(no audio devices found)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from knotanim.errors import InputError

    if args.list_devices:
        print(list_devices_text())
        return 0
    if not args.image:
        raise InputError("--image is required (or use --list-devices)")
    if not (args.virtual_camera or args.record or args.delayed_output) and args.seconds is None:
        raise InputError("nothing to output: give --virtual-camera and/or --record OUT.mp4 (or --seconds for a dry run)")
    if not 0.0 <= args.head_motion <= 1.0:
        raise InputError(f"--head-motion must be between 0 and 1, got {args.head_motion}")
    return _run_live(args)


def _run_live(args: argparse.Namespace) -> int:
    from knotanim.animator import KnotAnimator
    from knotanim.config import tiny_config
    from knotanim.errors import InputError
    from knotanim.frontends.face import crop_face
    from knotanim.frontends.image import load_image
    from knotanim.live.compose import parse_colour
    from knotanim.loading import load_for_live
    from knotanim.live.outputs import RecorderOutput
    from knotanim.live.pipeline import LiveOptions, LivePipeline
    from knotanim.live.sources import ArraySource, MicrophoneSource

    chosen: list = []  # the profile choice of each load attempt (the device may fall back)
    if args.tiny:
        name = "tiny"
        anim, notes = load_for_live(lambda d: KnotAnimator.from_config(tiny_config(), device=d), args.device)
    else:
        names: list[str] = []  # the model each load attempt used (the device may fall back)
        anim, notes = load_for_live(lambda d: _load_model(args, d, names, chosen), args.device)
        name = names[-1]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if chosen and chosen[-1].animator is anim:
        backends = chosen[-1].backends
    else:
        backends = backends_for_model(args, anim)
    cfg = anim.config
    crop, _ = crop_face(load_image(args.image), cfg.crop, cfg.frame_size, detect=not args.no_face_detect)
    try:
        background = parse_colour(args.background)
    except ValueError as e:
        raise InputError(str(e)) from None
    if args.audio_file:
        from knotanim.frontends.audio_io import load_audio

        source = ArraySource(load_audio(args.audio_file, cfg.audio.sample_rate), cfg.audio.sample_rate, name=args.audio_file)
    else:
        source = MicrophoneSource(args.mic, cfg.audio.sample_rate)
    options = LiveOptions(head_motion=args.head_motion, steps=args.steps, background=background, output_size=args.size,
                          degrade=not args.no_degrade, model_name=name, backend=backends,
                          profile=None if args.tiny or args.model else name)  # GPU out of memory: smaller profiles next
    from knotanim.cli.render import stop_signals_interrupt

    pipeline = LivePipeline(anim, crop, source, options)
    outputs = []
    with stop_signals_interrupt() as interrupts:
        _stream(args, pipeline, source, outputs, name, anim, interrupts)
    rec = next((o for o in outputs if isinstance(o, RecorderOutput)), None)
    if rec is not None:
        print(f"recorded {rec.seconds:.1f} s -> {args.record}")
    stats = pipeline.stats()
    if stats.error:
        raise InputError(stats.error)
    return 0


def _stream(args, pipeline, source, outputs: list, name: str, anim, interrupts) -> None:
    """Start, attach the outputs, show the status line until done or `interrupts` (cli.render.Interrupts)
    says a stop signal came; always stop (finalising files)."""
    from knotanim.live.outputs import DelayedAudioOutput, RecorderOutput, VirtualCameraOutput
    from knotanim.profiles import dtype_label

    cfg = anim.config
    interrupted = False
    try:
        pipeline.start()
        if args.virtual_camera:
            w, h = (int(v) for v in args.camera_size.lower().split("x"))
            cam = VirtualCameraOutput(w, h, cfg.fps, backend=args.camera_backend)
            print(f"virtual camera: {w}x{h} on {cam.device}", file=sys.stderr)
            outputs.append(cam)
            pipeline.add_output(cam)
        if args.record:
            outputs.append(RecorderOutput(args.record, pipeline.ring, pipeline.fps, pipeline.spf))
            pipeline.add_output(outputs[-1])
        if args.delayed_output:
            outputs.append(DelayedAudioOutput(pipeline.ring, args.delayed_output, lambda: pipeline.latency))
            pipeline.add_output(outputs[-1])
        dtype = dtype_label(getattr(anim, "dtype", None), anim.device)
        print(f"live: {source.name} -> {name} on {anim.device} with {pipeline.backend_name}{dtype}; Ctrl+C stops",
              file=sys.stderr)
        _status_loop(pipeline, args.seconds, interrupts)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        pipeline.stop()  # closes every added output: the recording is finalised
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        if interrupted and args.record:
            print(f"knotanim live: recording finalised: {args.record}", file=sys.stderr)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_model(args: argparse.Namespace, device, names: list[str], chosen: list):
    """--model PATH as given; else the --profile choice (auto: measured with its backends, see knotanim.profiles)."""
    from knotanim.animator import KnotAnimator
    from knotanim.profiles import choose_profile, parse_dtype

    if args.model:
        names.append(args.model)
        return KnotAnimator.from_pretrained(args.model, device=device, dtype=parse_dtype(args.dtype))
    choice = choose_profile(device, args.profile, backend=args.backend, steps=args.steps, remeasure=args.remeasure,
                            dtype=args.dtype, progress=_say, quick=True)
    for note in choice.notes:
        _say(f"note: {note}")
    _say(f"profile: {choice.message}")
    names.append(choice.profile.name)
    chosen.append(choice)
    return choice.animator


def backends_for_model(args: argparse.Namespace, anim):
    """The backend for --model / --tiny (a profile's comes with its choice), said on stderr: StepBackends,
    or None for eager torch (knotanim.profiles.backend_for_model)."""
    from knotanim.profiles import backend_for_model

    bc = backend_for_model(anim, args.backend, model=args.model, tiny=args.tiny, steps=args.steps,
                           remeasure=args.remeasure, progress=_say)
    if bc is None:
        return None
    for note in bc.notes:
        _say(f"note: {note}")
    others = ", ".join(f"{n} {f:.1f}" for n, f in bc.tried if n != bc.backend.name)
    src = " (cached; --remeasure to measure again)" if bc.cached else ""
    _say(f"backend: {bc.backend.name} at {bc.fps:.1f} frames/s{f' ({others})' if others else ''}{src}")
    return bc.backends


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), None where unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _status_loop(pipeline, seconds: float | None, interrupts) -> None:
    """Print a one-line status every 0.5 s until `seconds` pass, the pipeline fails, or Ctrl+C / SIGTERM
    (KeyboardInterrupt, raised again by interrupts.check() if the signal handler's was lost); and once,
    when the first frame has been sent, how long after the process started (time to first frame)."""
    start = time.monotonic()
    tty = sys.stderr.isatty()
    last_message = ""
    warned: set[str] = set()
    first_said = False
    while seconds is None or time.monotonic() - start < seconds:
        time.sleep(0.5)
        interrupts.check()
        if not first_said and pipeline.first_frame_at is not None:
            first_said = True
            age = process_age()
            if age is not None:  # the pipeline's clock is time.monotonic, like the status loop's
                age -= time.monotonic() - pipeline.first_frame_at
                sys.stderr.write(("\n" if tty else "") + f"first frame: {age:.1f} s after knotanim started\n")
        s = pipeline.stats()
        lat = f"{s.latency * 1000:.0f} ms" if s.latency is not None else "-"
        line = (f"{time.monotonic() - start:6.1f} s  {s.fps_shown:4.1f} fps shown ({s.fps_generated:4.1f} generated)  "
                f"latency {lat}  level {pipeline.level():5.1f} dBFS  dropped {s.dropped}  repeated {s.repeated}  [{s.profile}]")
        sys.stderr.write(("\r" + line + "\033[K") if tty else line + "\n")
        sys.stderr.flush()
        if s.message and s.message != last_message:
            last_message = s.message
            sys.stderr.write(("\n" if tty else "") + f"note: {s.message}\n")
        for w in s.warnings:  # survived faults: said once each, the stream goes on
            if w not in warned and w != s.message:
                warned.add(w)
                sys.stderr.write(("\n" if tty else "") + f"warning: {w}\n")
        if s.error:
            return
