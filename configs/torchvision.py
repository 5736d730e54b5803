"""torchvision's AlexNet layout, for like-for-like benchmarks and for torchvision's pretrained weights.

torchvision follows "One weird trick..." (Krizhevsky 2014), not the NIPS 2012 paper: one tower,
64-192-384-256-256 kernels, no LRN, conv1 padded by 2 on every side. At 224x224 input its adaptive
average pooling to 6x6 is the identity, so this config reproduces it exactly at that size.

    python -m alexnet_jax.benchmark --config=configs/torchvision.py --config.batch_size=32
"""

from alexnet_jax import config_files


def get_config():
  config = config_files.load("paper")
  config.mesh.model = 1
  config.model.towers = 1
  config.model.conv_features = (64, 192, 384, 256, 256)
  config.model.conv1_padding = (2, 2)
  config.model.lrn = False
  # torchvision's Kaiming-uniform family; only matters when training from scratch
  config.model.init = "he"
  # torchvision's input: RGB / 255, minus ImageNet's mean (0.485, 0.456, 0.406), over its std (0.229, 0.224, 0.225).
  config.data.mean_rgb = (123.675, 116.28, 103.53)
  config.data.std_rgb = (58.395, 57.12, 57.375)
  return config
