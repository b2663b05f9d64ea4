"""Training: one loop for every model (checkpoints, resume, early stopping) and its uses."""
