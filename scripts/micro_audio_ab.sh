#!/usr/bin/env bash
# A/B of how speech reaches the mouth, on the micro recipe (CPU-sized; configs/train/experiments/):
#   arm "adaln":         audio only through the frame-wide adaLN modulation, plain loss (the first checkpoint's recipe)
#   arm "attn_mouth":    + per-frame audio cross-attention + mouth-box loss weight x4 (the session-2 recipe)
#   arm "attn_mouth_ctx": + history and knot noised up to std 0.5 (so copying the last mouth pays less)
#   (also "attn", "mouth": one change each)
# Both arms: same stage-1 autoencoder, same seed, same data, same steps. Then KnotBench quick on each.
#
#   STEPS=600 ARMS="adaln attn_mouth" bash scripts/micro_audio_ab.sh      (runs/micro/...)
set -euo pipefail
STEPS=${STEPS:-600}
ARMS=${ARMS:-"adaln attn_mouth"}
DEVICE=${DEVICE:-cpu}
train() { python -m knotanim.cli.train "$@" --device "$DEVICE"; }
[ -f runs/micro/stage1/model/config.json ] || train configs/train/experiments/micro_stage1_autoencoder.yaml --out runs/micro/stage1
for arm in $ARMS; do
  case $arm in
    adaln)      SET="--set model.model.audio_attention=false --set mouth_weight=1" ;;
    attn)       SET="--set model.model.audio_attention=true --set mouth_weight=1" ;;
    mouth)      SET="--set model.model.audio_attention=false --set mouth_weight=4" ;;
    attn_mouth) SET="--set model.model.audio_attention=true --set mouth_weight=4" ;;
    attn_mouth_ctx) SET="--set model.model.audio_attention=true --set mouth_weight=4 --set context_noise=0.5 --set knot_noise=0.5" ;;
    *) echo "unknown arm $arm"; exit 2 ;;
  esac
  train configs/train/experiments/micro_stage2_teacher_forcing.yaml --out runs/micro/$arm --fresh --set steps="$STEPS" $SET
done
for arm in $ARMS; do
  python -m knotanim.cli.main eval --model runs/micro/$arm/model --quick --corpus .cache/data/speech_eval.npz \
    --device "$DEVICE" --out runs/micro/knotbench_$arm --quiet
done
python - "$ARMS" <<'PY'
import csv, sys
for arm in sys.argv[1].split():
    rows = list(csv.DictReader(open(f"runs/micro/{arm}/log.csv")))
    gaps = [float(r["listen_gap"]) for r in rows]
    tail = gaps[-5:]
    print(f"{arm}: listen_gap over the last {len(tail)} log rows: mean {sum(tail) / len(tail):.4f}; "
          f"loss {float(rows[-1]['loss']):.4f} at step {rows[-1]['step']}")
PY
