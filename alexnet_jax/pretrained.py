"""``python -m alexnet_jax.pretrained --weights=FILE --workdir=DIR``: imported weights as a checkpoint.

Writes torchvision's ``.pth`` or Caffe's ``.npy`` as step 0 of ``DIR/checkpoints``, with a ``run.json`` that
records the source's config (``configs/torchvision.py``, ``configs/caffe.py``), so that ``--mode=eval``,
``predict`` and ``visualize`` read it like any other run, without ``--config``:

    python -m alexnet_jax.pretrained --weights=alexnet-owt-7be5be79.pth --workdir=runs/torchvision
    python -m alexnet_jax.main --workdir=runs/torchvision --mode=eval
"""

import os

from absl import flags

from alexnet_jax import cli
from alexnet_jax.training import imported

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "weights",
    None,
    "torchvision's alexnet-owt-7be5be79.pth or Caffe's bvlc_alexnet.npy.",
)
flags.DEFINE_string(
    "workdir", None, "Work directory to write checkpoints/0 into."
)
flags.mark_flags_as_required(["weights", "workdir"])


def main(argv):
  del argv
  name = imported.save_imported(FLAGS.weights, FLAGS.workdir)
  print(
      f"wrote {os.path.join(FLAGS.workdir, 'checkpoints', '0')} and run.json (the network of configs/{name}.py); "
      f"evaluate it with\n  python -m alexnet_jax.main --workdir={FLAGS.workdir} --mode=eval"
  )


if __name__ == "__main__":
  cli.run(main)
