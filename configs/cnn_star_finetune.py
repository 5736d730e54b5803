"""Table 2's "1 CNN*", step 2 of 2: the CNN* pretrained by configs/cnn_star_pretrain.py on the ImageNet Fall
2011 release, "fine-tuned" on ILSVRC-2012 (§6).

    python -m alexnet_jax.main --config=configs/cnn_star_finetune.py --workdir=runs/cnn_star \
        --config.init_from=runs/cnn_star_pretrain
    python -m alexnet_jax.main --workdir=runs/cnn_star --mode=eval

Expected (paper, Table 2, ILSVRC-2012 validation set, 10 crops): 39.0% top-1, 16.6% top-5 error.
``init_from`` loads every layer of the pretrained run, the sixth conv layer included; fc8 starts afresh
(N(0, 0.01), as §5), as its 1000 classes are not the 21,841 it was trained on. Every layer trains. The
paper gives no fine-tuning schedule: §5's is kept (learning rate 0.01, /10 on plateaus); ImageNet as
configs/paper.py prepares it.
"""

from alexnet_jax import config_files


def get_config():
  config = config_files.load("paper")
  # §6: the same net, "an extra sixth convolutional layer over the last pooling layer"
  config.model.extra_conv = True
  # §6: "'fine-tuning' it on ILSVRC-2012": every layer from the pretraining run, fc8 new
  config.init_from = "runs/cnn_star_pretrain"
  return config
