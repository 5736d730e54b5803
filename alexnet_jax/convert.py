"""Ready AlexNets from other frameworks' weights (the public names; ``alexnet_jax.weights.convert`` holds them):
``from_torchvision(state_dict_or_path)`` and ``from_caffe_npy(path)``."""

from alexnet_jax.weights.convert import from_caffe_npy, from_torchvision

__all__ = ["from_caffe_npy", "from_torchvision"]
