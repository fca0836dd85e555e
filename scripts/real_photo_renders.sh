#!/usr/bin/env bash
# Render KnotBench's real-photo set with `knotanim render` for judging with
# `knotanim eval --real-photos --judge-videos DIR` (here, or after carrying the mp4s back from
# a GPU machine, where the judge's face models cannot travel).
#   INPUTS: folder written by `knotanim eval --real-photos --write-inputs INPUTS --seconds S`
#   usage: scripts/real_photo_renders.sh INPUTS SECONDS PROFILE OUT_DIR PHOTO [PHOTO...]
# Each photo gives OUT_DIR/<photo>.mp4 (the held-out speech) and OUT_DIR/<photo>.audio-zeroed.mp4
# (the same length of silence), still head (--head-motion 0), seed 0, pasted back into the photo.
# Extra render flags (e.g. --device cuda --backend compiled) go in $RENDER_FLAGS.
set -euo pipefail
inputs=$1; seconds=$2; profile=$3; out=$4; shift 4
mkdir -p "$out"
for photo in "$@"; do
  for row in speech silence; do
    suffix=$([ "$row" = silence ] && echo ".audio-zeroed" || true)
    target="$out/$photo$suffix.mp4"
    [ -s "$target" ] && continue
    start=$(date +%s)
    knotanim render --profile "$profile" --head-motion 0 --seed 0 ${RENDER_FLAGS:-} \
      --image "$inputs/photos/$photo.png" --audio "$inputs/${row}_${seconds}s.wav" -o "$target"
    echo "$profile $photo $row ${seconds}s: $(( $(date +%s) - start )) s" | tee -a "$out/render_times.txt"
  done
done
