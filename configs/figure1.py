"""The paper's Figure 1: a four-layer convolutional net with ReLUs against the same net with tanh units,
training error rate against epochs, and how many times sooner the ReLU net reaches 25% training error
(the paper: six times, on CIFAR-10).

    python experiments/figure1.py --workdir=runs/figure1                    # the bundled digits, minutes on a CPU
    python experiments/figure1.py --config=configs/figure1.py:cifar10 --workdir=runs/figure1-cifar10
        [--config.data.data_dir=~/tensorflow_datasets]                      # CIFAR-10, built with TFDS beforehand

CIFAR-10 is meant for a GPU: its 50,000 images, measured ten times an epoch until 25%, take hours per run on a
few CPU cores.

The network is the paper's source for it, cuda-convnet's CIFAR-10 example net: example-layers/layers-18pct.cfg
("18% error on CIFAR-10 in 20 minutes"; code.google.com/p/cuda-convnet, mirrored at github.com/dnouri/cuda-convnet)
with its parameter file layer-params-18pct.cfg. Its four weight layers are the caption's "four-layer" net:

    conv1 32@5x5 pad 2 -> f -> max pool 3/2 -> rnorm1 (3x3, scale 5e-5, pow 0.75)
    conv2 32@5x5 pad 2 -> f -> avg pool 3/2 -> rnorm2 (3x3, scale 5e-5, pow 0.75)
    conv3 64@5x5 pad 2 -> f -> avg pool 3/2
    fc10 -> softmax

f is a ReLU or tanh. (layers-80sec.cfg, "26% in 80 seconds", has a fifth weight layer, fc64, and no
normalisation, so it is not the four-layer net.) cuda-convnet's ``rnorm`` normalises each map over a 3x3
*spatial* window, b = a (1 + scale / 9 * sum a^2)^-pow, unlike the paper's §3.3 normalisation across maps
(``cmrnorm`` there). Pools are cuda-convnet's (start 0, outputsX 0): windows that overhang the edge are clipped,
an average divides by the pixels inside, so 32 -> 16 -> 8 -> 4.

"No regularization of any kind was employed": no weight decay (the cfg's wc=0.004 and 1 are dropped), no
dropout, no augmentation (whole 32x32 images, no crops or flips); the response normalisation stays, as part
of the architecture (the paper describes it under §3 "The Architecture", not §4 "Reducing Overfitting"; README,
the deviation table). Pixels as cuda-convnet's CIFAR provider gives them: 0..255 with the training set's mean
image subtracted.

"The learning rates for each network were chosen independently to make training as fast as possible": each
unit tries every rate of its grid (``optimizer.learning_rates.<unit>``, a one-element tuple fixes it) and keeps
the one that first reaches ``threshold`` training error; the others stop once they can no longer win.
"""

import ml_collections


def get_config(data: str = "digits") -> ml_collections.ConfigDict:
  if data not in ("digits", "cifar10"):
    raise ValueError(f"figure1: data must be digits or cifar10, got {data!r}")
  config = ml_collections.ConfigDict()
  # the same initial weights and batch order for every unit and rate
  config.seed = 0
  # cuda-convnet's default --minibatch-size
  config.batch_size = 128
  # Figure 1's x axis runs to 35 epochs; on the digits both cross 25% within four.
  config.num_epochs = 40 if data == "cifar10" else 4
  # The training error is measured on the whole training set, in a separate pass with the weights of the
  # moment: every eval_every_steps steps until a run reaches the threshold (on the digits every step: 11
  # steps an epoch; CIFAR-10: 390 steps, tenths of an epoch), then evals_per_epoch times an epoch.
  config.eval_every_steps = 39 if data == "cifar10" else 1
  config.evals_per_epoch = 1 if data == "cifar10" else 2
  config.threshold = 0.25  # Figure 1's dashed line
  config.units = ("relu", "tanh")

  # example-layers/layers-18pct.cfg
  config.model = ml_collections.ConfigDict()
  config.model.image_size = 32  # CIFAR-10's size, whole images
  config.model.conv_features = (32, 32, 64)  # conv1..conv3 filters
  config.model.kernel_size = 5  # filterSize=5
  config.model.padding = 2  # padding=2
  config.model.pools = ("max", "avg", "avg")  # pool1..pool3 pool=
  config.model.pool_window = 3  # sizeX=3
  config.model.pool_stride = 2  # stride=2
  config.model.response_norm = True  # rnorm1, rnorm2 (type=rnorm)
  config.model.rnorm_size = 3  # size=3
  # layer-params-18pct.cfg: scale=0.00005 (cuda-convnet divides it by size^2), pow=.75
  config.model.rnorm_scale = 5e-5
  config.model.rnorm_power = 0.75
  # initW of conv1, conv2, conv3, fc10: N(0, initW^2) weights; biases 0 (initB's default)
  config.model.init_std = (1e-4, 1e-2, 1e-2, 1e-2)

  # layer-params-18pct.cfg: momW=0.9; epsB=0.002 is twice epsW=0.001, kept as a factor for the biases.
  # No weight decay (wc): no regularisation in Figure 1.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.momentum = 0.9
  config.optimizer.bias_lr_factor = 2.0
  # Each unit's grid of epsW, tried in this order (the likeliest first, so that the others stop soon).
  config.optimizer.learning_rates = ml_collections.ConfigDict()
  if data == "cifar10":
    # Not tried (no CIFAR-10 on this project's machines): wide, starting at cuda-convnet's 0.001.
    grid = (0.001, 0.0005, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
    config.optimizer.learning_rates.relu = grid
    config.optimizer.learning_rates.tanh = grid
  else:
    # Factors of 2 around each unit's best in a coarse search on the digits (relu 0.001-0.03, tanh
    # 0.001-0.8): the ReLU net stalled above 0.01, the tanh net learned fastest near 0.2.
    config.optimizer.learning_rates.relu = (0.0025, 0.005, 0.00125, 0.01)
    config.optimizer.learning_rates.tanh = (0.2, 0.1, 0.4)

  config.data = ml_collections.ConfigDict()
  if data == "cifar10":
    config.data.source = "tfds"
    config.data.name = "cifar10"
  else:  # the bundled digits (alexnet_jax/data/digits.py): its 1,437 training images
    config.data.source = "digits"
    config.data.name = "digits"
  config.data.train_split = "train"
  # read by the data loader; Figure 1 measures training error only
  config.data.eval_split = "test"
  config.data.data_dir = ""  # TFDS: its default data directory
  config.data.stored_size = 32  # whole images, no crops
  # cuda-convnet's CIFAR provider: 0..255, the mean image subtracted
  config.data.pixel_scale = 1.0
  return config
