"""One model request: the model flags mean the same on every command, and a bad request is one line."""
import argparse

import pytest

from knotanim.cli.main import build_parser
from knotanim.errors import InputError
from knotanim.request import FLAGS, ModelRequest, add_model_arguments


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions for opt in a.option_strings}


def _command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_the_model_flags_have_the_same_choices_on_every_command():
    from knotanim.app.main import parse_args  # noqa: F401 (the app's parser is built inside parse_args)

    reference = _options(add_model_arguments(argparse.ArgumentParser()))
    commands = {name: _options(_command(name)) for name in ("render", "live", "eval", "bench")}
    seen = {flag: 0 for flag in FLAGS}
    for name, options in commands.items():
        for flag in FLAGS:
            action = options.get(f"--{flag}")
            if action is None:
                continue
            seen[flag] += 1
            assert action.choices == reference[f"--{flag}"].choices, (name, flag)
            assert action.type == reference[f"--{flag}"].type, (name, flag)
    assert all(seen[f] >= 3 for f in ("model", "device", "dtype", "backend", "steps")), seen


def test_the_app_takes_the_same_flags():
    from knotanim.app.main import parse_args

    args = parse_args(["--profile", "lite", "--backend", "compiled", "--device", "cuda:1", "--tiny"])
    request = ModelRequest.from_args(args)
    assert (request.profile, request.backend, request.device, request.tiny) == ("lite", "compiled", "cuda:1", True)


def test_request_reads_back_and_checks():
    args = _command("render").parse_args(["-i", "a.png", "-a", "b.wav", "-o", "c.mp4", "--dtype", "bfloat16",
                                          "--steps", "2", "--backend", "onnxruntime", "--model", "m"])
    request = ModelRequest.from_args(args)
    assert (request.first_model, request.dtype, request.steps, request.backend) == ("m", "bfloat16", 2, "onnxruntime")
    import torch

    assert request.torch_dtype() is torch.bfloat16 and ModelRequest().torch_dtype() is None
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        ModelRequest(device="gpu0")
    with pytest.raises(InputError, match="steps must be >= 1"):
        ModelRequest(steps=0)


def test_eval_takes_several_models():
    args = _command("eval").parse_args(["--model", "a", "--model", "b"])
    assert ModelRequest.from_args(args).model == ("a", "b")


def test_steps_must_be_positive_at_the_command_line(capsys):
    with pytest.raises(SystemExit):
        _command("render").parse_args(["-i", "a.png", "-a", "b.wav", "-o", "c.mp4", "--steps", "0"])
    assert "must be >= 1" in capsys.readouterr().err
