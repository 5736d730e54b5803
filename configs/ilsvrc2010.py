"""Table 1: the paper's network on ILSVRC-2010, "the only version of ILSVRC for which the test set labels
are available" (§6): 37.5% top-1 and 17.0% top-5 error on its test set, one CNN, 10 crops.

    python -m alexnet_jax.prepare --folder=/data/ilsvrc2010 --name=ilsvrc2010 --data_dir=~/tensorflow_datasets
    python -m alexnet_jax.main --config=configs/ilsvrc2010.py --workdir=runs/ilsvrc2010
    python -m alexnet_jax.main --config=configs/ilsvrc2010.py --workdir=runs/ilsvrc2010 --mode=eval \
        --config.data.eval_split=test

The data: ILSVRC-2010 as an ImageNet-style tree, DIR/train/SYNSET/IMAGE, DIR/val/SYNSET/IMAGE and
DIR/test/SYNSET/IMAGE (the 50,000 validation and 150,000 test images sorted into their synsets' folders
by the ground-truth files the challenge released); labels are the sorted folder names. The prepared copy
is read like configs/paper.py's ImageNet; ``--config.data.source=folder --config.data.data_dir=DIR``
reads the tree as it is instead.

Training evaluates on the validation set: §5's schedule divides the learning rate when "the validation
error rate stopped improving", and a schedule that watched the test set would be tuned on it. The test
set is the evaluation split of the last command, the one Table 1 reports (README, departures table).
"""

from alexnet_jax import config_files


def get_config():
  config = config_files.load("paper")
  config.model.num_classes = 1000  # §2: ILSVRC-2010's 1000 categories
  config.data.source = (
      "tfds"  # the prepared copy (python -m alexnet_jax.prepare --folder=...)
  )
  config.data.name = "ilsvrc2010"
  # §5: the schedule watches the validation error; --config.data.eval_split=test for Table 1 (§6)
  config.data.eval_split = "validation"
  config.data.eval_views = 10  # §4.1 / Table 1: 10 patches, softmax averaged
  return config
