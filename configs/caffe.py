"""BVLC Caffe's AlexNet ("bvlc_alexnet"), for its widely shared weights (``bvlc_alexnet.npy``).

It is the paper's two-tower network (conv2, conv4, conv5 in two groups; 60,965,224 parameters) with
Caffe's own choices, which differ from the paper:
- 227x227 input and no padding in conv1 (gives the paper's 55x55);
- LRN across all maps of a layer (not per tower), k=1 and alpha = 1e-4 / 5 in the paper's convention
  (Caffe divides its alpha=1e-4 by the window of 5);
- inputs were BGR with Caffe's mean subtracted: ``alexnet_jax.convert.from_caffe_npy`` reorders conv1's
  input channels so the model takes RGB; ``data.mean_rgb`` below subtracts Caffe's mean in training,
  evaluation and ``alexnet_jax.predict``; a caller of the bare model subtracts it itself.

    model = alexnet_jax.convert.from_caffe_npy("bvlc_alexnet.npy")
"""

from alexnet_jax import config_files


def get_config():
  config = config_files.load("paper")
  config.model.image_size = 227
  # Caffe's ImageNet was stored at 256x256 too: 227 crops of the same data
  config.data.stored_size = 256
  config.model.conv1_padding = (0, 0)
  config.model.lrn_scope = "layer"
  config.model.lrn_k = 1.0
  config.model.lrn_alpha = 1e-4 / 5
  # Caffe's ImageNet mean (ilsvrc_2012_mean.npy averaged per channel, BGR 104.0, 116.7, 122.7), here as RGB.
  config.data.mean_rgb = (122.68, 116.67, 104.01)
  return config
