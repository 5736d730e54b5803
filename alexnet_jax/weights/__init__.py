"""Weights in and out: other frameworks' AlexNets, a run's weights for use, the predictor."""
