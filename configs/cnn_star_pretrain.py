"""Table 2's "1 CNN*", step 1 of 2: the paper's network "with an extra sixth convolutional layer over the
last pooling layer", trained on "the entire ImageNet Fall 2011 release (15M images, 22K categories)" (§6).
Step 2, the fine-tuning on ILSVRC-2012 that Table 2 reports (39.0% / 16.6%), is configs/cnn_star_finetune.py.

    python -m alexnet_jax.prepare --folder=/data/fall11 --name=imagenet_fall2011 --data_dir=~/tensorflow_datasets
    python -m alexnet_jax.main --config=configs/cnn_star_pretrain.py --workdir=runs/cnn_star_pretrain

The data is any ImageNet-style tree, DIR/train/SYNSET/IMAGE and DIR/val/SYNSET/IMAGE (classes: the sorted
folder names), prepared once at 256x256 as above, or read as it is with
``--config.data.source=folder --config.data.data_dir=DIR``; any TFDS image-classification dataset works too
(``--config.data.name=NAME``). The release has no validation split: move a few images of each synset into
val/ (the plateau schedule of §5 watches them). ``model.num_classes`` must be the tree's class count:
21,841 synsets in the Fall 2011 release (fall11_whole.tar, 14,197,122 images), fewer in a copy that lacks
some. The sixth layer's size is not in the paper: see ``spec.EXTRA_CONV`` and the README's departures table.
§6 gives no schedule for this run either: §5's is kept (90 epochs, /10 on plateaus; at ~14M images that is
~12x the compute of the ILSVRC-2012 run: shorten it with --config.num_epochs=N).
"""

from alexnet_jax import config_files


def get_config():
  config = config_files.load("paper")
  # §6: "an extra sixth convolutional layer over the last pooling layer"
  config.model.extra_conv = True
  # §6: "22K categories": the Fall 2011 release's 21,841 synsets
  config.model.num_classes = 21841
  # §6: "the entire ImageNet Fall 2011 release", prepared as above
  config.data.source = "tfds"
  config.data.name = "imagenet_fall2011"
  config.data.eval_split = "validation"
  return config
