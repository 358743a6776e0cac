"""Running a recipe: the training loop and its fast paths (graphs, stacked seeds), checkpoints, devices,
metrics, and the planning, estimating and launching of many runs. Writes records; never reads the report."""
