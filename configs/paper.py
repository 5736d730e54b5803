"""The paper's setup: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012. Each value carries the section it comes from.

    python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper

Expected (paper, single model, ILSVRC-2012 val, 10 crops): 40.7% top-1, 18.2% top-5 error.
Where the code interprets or departs from the paper: the README's deviation table.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # §5: "We trained our models using stochastic gradient descent with a batch size of 128 examples".
  config.batch_size = 128
  # §5: "roughly 90 cycles through the training set of 1.2 million images".
  config.num_epochs = 90
  config.num_train_steps = -1  # -1: from num_epochs
  config.log_every_steps = 100
  # -1: once per epoch (the plateau schedule watches these evals)
  config.eval_every_steps = -1
  config.checkpoint_every_steps = 2000
  config.checkpoints_to_keep = 3
  # not in the paper: stop when a layer's units stay zero for every image for
  # this many steps (a collapsed net; README); 0: train on regardless
  config.dead_network_steps = 100
  # not in the paper: a profiler trace of this many steps after the first log
  # interval, into the work directory (README, Performance); 0: none
  config.profile_steps = 0
  # fine-tuning: a checkpoint dir, torchvision .pth or Caffe .npy to start from
  config.init_from = ""

  # §3.2: the net is spread across two GPUs -> two towers on the mesh axis `model`; data parallel over the rest.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # -1: all devices that `model` leaves
  config.mesh.model = 2

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 1000  # §2: ILSVRC-2012, 1000 classes
  # §3.5: "224x224x3 input image" (conv1 padding below gives 55x55)
  config.model.image_size = 224
  config.model.towers = 2  # §3.2: half of the kernels on each GPU
  # §3.5: conv1..conv5 kernels
  config.model.conv_features = (96, 256, 384, 384, 256)
  # §3.5: fc6, fc7 neurons
  config.model.fc_features = (4096, 4096)
  # not in the paper: pads 224 so that 11x11/4 gives 55x55 (README)
  config.model.conv1_padding = (2, 1)
  # §3.3: local response normalisation after conv1 and conv2
  config.model.lrn = True
  config.model.lrn_size = 5  # §3.3: n = 5
  config.model.lrn_k = 2.0  # §3.3: k = 2
  config.model.lrn_alpha = 1e-4  # §3.3: alpha = 10^-4 (not divided by n)
  config.model.lrn_beta = 0.75  # §3.3: beta = 0.75
  # §3.3 with §3.2: each GPU normalises its own kernel maps
  config.model.lrn_scope = "tower"
  # not in the paper: batch normalisation in LRN's place (an ablation)
  config.model.batch_norm = False
  # §3.1: ReLU nonlinearity; "tanh" is Figure 1's saturating unit
  config.model.activation = "relu"
  config.model.overlap_pool = True  # §3.4: overlapping pooling, z = 3, s = 2
  # §6, Table 2's "1 CNN*": a sixth conv layer over pool5 (configs/cnn_star_*.py)
  config.model.extra_conv = False
  config.model.dropout_rate = 0.5  # §4.2: dropout 0.5 in fc6 and fc7
  # §5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7
  config.model.init = "paper"
  # §5: "zero-mean Gaussian distribution with standard deviation 0.01"
  config.model.init_std = 0.01
  # compute dtype: bfloat16 on GPUs/TPUs, float32 on CPUs; parameters float32
  config.model.dtype = "auto"
  # not in the paper, and no change to the network: conv1 and conv3 (which both towers read) as one
  # convolution per tower ("per_tower", XLA:CPU's faster layout) or one for both ("one_op")
  config.model.shared_input_convs = "per_tower"

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 0.01  # §5: "initialized at 0.01"
  config.optimizer.momentum = 0.9  # §5: momentum 0.9
  # §5: weight decay 0.0005, inside the update rule
  config.optimizer.weight_decay = 5e-4
  # not in the paper: decay applies to weights w only (README)
  config.optimizer.decay_biases = False
  # §5: "divide the learning rate by 10 when the validation error
  config.optimizer.schedule = "plateau"
  #      rate stopped improving ... reduced three times"
  config.optimizer.factor = 0.1
  # not in the paper: evals without improvement before a reduction
  config.optimizer.patience = 2
  # §5: "reduced three times prior to termination"
  config.optimizer.max_reductions = 3
  config.optimizer.min_improvement = 0.0
  config.optimizer.step_epochs = (30, 60, 80)  # only for schedule="step"
  # fine-tuning: keep conv1-conv5 as loaded, train the FC layers
  config.optimizer.freeze_convs = False

  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"  # §2: ImageNet (ILSVRC-2012)
  config.data.name = "imagenet2012"
  # "": TFDS's default (~/tensorflow_datasets)
  config.data.data_dir = ""
  config.data.train_split = "train"
  # §6: results on the ILSVRC-2012 validation set
  config.data.eval_split = "validation"
  config.data.num_workers = 8
  # not in the paper: batches placed on the devices ahead of the step
  config.data.prefetch = 2
  # §4.1: random 224x224 patches and their horizontal reflections
  config.data.random_flip = True
  # §4.1: add multiples of the RGB principal components ...
  config.data.pca_lighting = True
  # §4.1: ... alpha ~ N(0, 0.1), once per image per pass
  config.data.lighting_std = 0.1
  # §4.1: test on 10 patches (corners, centre, mirrored), average softmax
  config.data.eval_views = 10
  # §2: images stored at 256x256 for 224 crops; 0 keeps that ratio (64 -> 73)
  config.data.stored_size = 0
  # §2: raw pixel values (0..255) minus the mean image
  config.data.pixel_scale = 1.0
  # (): the training set's mean image (§2); (R, G, B): one colour instead
  config.data.mean_rgb = ()
  # (): no per-channel division (§2); (R, G, B) in 0..255 units to divide by
  config.data.std_rgb = ()
  return config
