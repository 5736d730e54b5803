"""What a run's work directory holds, and who may write it: orbax checkpoints, run.json, the lock."""
