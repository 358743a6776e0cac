"""Scores beyond a plain run: the gate (re-scores runs against a committed baseline), its sabotage self-test,
and outside models' predictions or ONNX files (submit)."""
