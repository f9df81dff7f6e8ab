"""Training runs: the generic trainer, the supervised and unsupervised tasks, checkpoints, run folders, the
exported program and the path from a checkpoint to its metrics."""
