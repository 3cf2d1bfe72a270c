"""A fine-tuning run: its settings, the training loop (crops, degradations, losses, two-stage
schedule, validation), resumable checkpoints on a timeline, and the run with its executor."""
