"""alexnet_jax: the reference JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012).

The network at the top (``model``, ``spec``, ``layers``, ``sharding``), one folder per role below it:
``data`` (a file on disk to a placed device batch), ``training`` (the loop and its parts), ``weights``
(other frameworks' weights, the predictor), ``workdir`` (checkpoints and the run record), ``platform``
(per-platform speed settings). Commands: ``python -m alexnet_jax.NAME`` for main, summary, prepare,
benchmark, predict, visualize, pretrained and ensemble.
"""

__version__ = "0.1.0"
