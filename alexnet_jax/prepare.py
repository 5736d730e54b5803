"""``python -m alexnet_jax.prepare``: ImageNet at the paper's 256x256 resolution, once, before training.

    python -m alexnet_jax.prepare --tars=DIR --data_dir=~/tensorflow_datasets

reads the two ILSVRC2012 tars (``ILSVRC2012_img_train.tar``, ``ILSVRC2012_img_val.tar``) from DIR, rescales
every image as §2 says (short side to 256, central 256x256 patch), writes them as JPEG into ArrayRecord
files under ``DATA_DIR/alexnet_jax/imagenet2012-256/`` (~22 GB instead of ~150 GB), and computes the
training-set statistics (mean image, RGB eigenvectors) into ``stats.npz`` beside them. Labels follow
TFDS's imagenet2012 (sorted synsets; validation labels from TFDS's file), so results compare with TFDS runs.

    python -m alexnet_jax.prepare --from_tfds=imagenet2012 --data_dir=DIR

does the same from a TFDS dataset that is already built (e.g. with ``tfds build imagenet2012``, which needs
TensorFlow: ``pip install -e ".[imagenet]"``); any TFDS image-classification dataset works.

    python -m alexnet_jax.prepare --folder=DIR --name=ilsvrc2010 --data_dir=~/tensorflow_datasets

does the same from any ImageNet-style tree (ILSVRC-2010, the Fall 2011 release): ``DIR/train/CLASS/IMAGE``,
``DIR/val/CLASS/IMAGE`` and, if there is one, ``DIR/test/CLASS/IMAGE``, into ``DATA_DIR/alexnet_jax/NAME-256/``,
read back with ``--config.data.name=NAME``. Labels: the sorted class directory names of train/.

Re-running skips finished files; an interrupted run leaves only ``*.tmp`` files, which are redone. The
directory is usable once ``info.json`` exists: it is written last.
"""

import os

from absl import app, flags

from alexnet_jax import cli
from alexnet_jax.data import folder_preparation, imagenet

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "tars",
    None,
    "Directory holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.",
)
flags.DEFINE_string(
    "from_tfds",
    None,
    "Instead of tars: the name of a built TFDS dataset to convert.",
)
flags.DEFINE_string(
    "folder",
    None,
    "Instead of tars: an ImageNet-style tree DIR/train/CLASS/IMAGE, DIR/val/CLASS/IMAGE (and DIR/test/...).",
)
flags.DEFINE_string(
    "name",
    None,
    "With --folder: the prepared dataset's name (data.name); default: the folder's own name.",
)
flags.DEFINE_string(
    "data_dir",
    "~/tensorflow_datasets",
    "Where the prepared data goes (TFDS's data_dir).",
)
flags.DEFINE_integer("size", 256, "Stored resolution (the paper: 256).")
flags.DEFINE_integer("quality", 90, "JPEG quality of the stored images.")
flags.DEFINE_integer(
    "num_workers",
    os.cpu_count() or 1,
    "Worker processes (0: all in this process).",
)


def main(argv):
  del argv
  if sum(map(bool, (FLAGS.tars, FLAGS.from_tfds, FLAGS.folder))) != 1:
    raise app.UsageError(
        "give exactly one of --tars=DIR, --from_tfds=NAME and --folder=DIR"
    )
  if FLAGS.name and not FLAGS.folder:
    raise app.UsageError("--name goes with --folder")
  if FLAGS.folder:
    folder_preparation.prepare_from_folder(
        FLAGS.folder,
        os.path.expanduser(FLAGS.data_dir),
        FLAGS.name,
        FLAGS.size,
        FLAGS.quality,
        FLAGS.num_workers,
    )
  elif FLAGS.tars:
    imagenet.prepare_from_tars(
        os.path.expanduser(FLAGS.tars),
        os.path.expanduser(FLAGS.data_dir),
        FLAGS.size,
        FLAGS.quality,
        FLAGS.num_workers,
    )
  else:
    imagenet.prepare_from_tfds(
        FLAGS.from_tfds,
        FLAGS.data_dir,
        FLAGS.size,
        FLAGS.quality,
        FLAGS.num_workers,
    )


if __name__ == "__main__":
  cli.run(main)
