"""The training loop and its parts: steps, setup, guards, optimizer, checkpoints, metrics, the run record."""
