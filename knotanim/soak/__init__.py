"""The soak test (`knotanim soak`): memory, per-chunk time, output drift and queue depths over a long stream.

Two modes: knotanim.soak.stream drives a KnotStream directly, as fast as the hardware allows, for hours of
stream time; knotanim.soak.live runs the real LivePipeline from a fake microphone in real time. Both write a
CSV (one row per sample), a JSON summary of pass/fail checks (knotanim.soak.report) and PNG plots.
docs/reliability.md has the thresholds and the recorded runs.
"""
