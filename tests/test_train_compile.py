"""Training's regional compile (every DiT block compiled, same loss and gradients as eager), and its log."""
import copy

import pytest
import torch

from knotanim import tiny_config
from knotanim.model.dit import KnotDiT
from knotanim.model.layout import expand_frame_mask
from knotanim.train.trainer import TeacherForcedLoss, all_training_layouts, compile_blocks


def test_training_draws_every_layout_variant_once():
    sc = tiny_config().stream
    layouts = all_training_layouts(sc, chunks=3)
    spans = {lay.span for lay in layouts}
    assert spans == {sc.chunk, sc.chunk + sc.knot}
    # per span: one layout per phase of the running-ahead lead, plus the fixed reference
    assert len(layouts) == len(spans) * (sc.run_ahead_stride + 1)
    assert len({(lay.span, lay.ref_positions) for lay in layouts}) == len(layouts)


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_loss_and_gradients():
    cfg = tiny_config()
    torch.manual_seed(0)
    eager = KnotDiT(cfg).randomize_zero_init(std=0.1, seed=1)
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    assert all(block._compiled_call_impl is not None for block in compiled.blocks)
    layout = all_training_layouts(cfg.stream, chunks=2)[0]
    mask = expand_frame_mask(layout.frame_mask(), cfg.tokens_per_frame)
    B, c, h, n, F = 2, cfg.autoencoder.latent_channels, cfg.latent_size, layout.n_chunks, layout.span
    x0 = torch.randn(B, n, F, c, h, h)
    inputs = (layout, mask, torch.randn(B, c, h, h), torch.randn(B, layout.n_clean, c, h, h), x0,
              torch.randn(B, n, c, h, h), torch.rand(B, n), torch.randn_like(x0),
              torch.randn(B, layout.n_frames, cfg.audio.n_mels, cfg.audio_window), torch.rand(B),
              torch.ones(B, n, F, 1, h, h))
    losses = []
    for model in (eager, compiled):
        loss = TeacherForcedLoss(model, 10.0)(*inputs)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name


def test_a_fresh_run_does_not_continue_an_earlier_runs_log(tmp_path):
    import csv

    from knotanim.train.common import TrainLog

    old = TrainLog(tmp_path)
    for step in (1, 2):
        old.write(step, loss=1.0)
    resumed = TrainLog(tmp_path)  # resuming with the same columns continues the file
    resumed.write(3, loss=0.9)
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "log.csv"))] == ["1", "2", "3"]
    widened = TrainLog(tmp_path)  # resuming with new columns: the old file is kept aside, a new one starts
    widened.write(4, loss=0.8, listen_gap=0.1)
    (row,) = csv.DictReader(open(tmp_path / "log.csv"))
    assert (row["step"], row["loss"], row["listen_gap"]) == ("4", "0.8", "0.1")
    assert len(list(csv.DictReader(open(tmp_path / "log.previous.csv")))) == 3
    TrainLog(tmp_path, fresh=True).write(1, loss=2.0, listen_gap=0.0)  # a fresh run starts its own log
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "log.csv"))] == ["1"]
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "log.previous.csv"))] == ["4"]
