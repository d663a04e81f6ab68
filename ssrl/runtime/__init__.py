"""What every run needs around its work: seeding and devices, checkpoints, logs, progress, evaluation, run metadata."""
