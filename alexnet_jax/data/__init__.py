"""From a file on disk to a placed device batch: sources, decoding, augmentation, statistics, the pipeline."""
