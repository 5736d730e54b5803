"""alexnet_jax: the reference JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012).

Modules, in the order data flows: ``sources`` (``images``) -> ``augment`` -> ``input_pipeline`` -> ``sharding``
-> ``preprocess`` -> ``model`` (``layers``) -> ``optim`` -> ``train`` (``metrics``, ``checkpointing``).
CLIs: ``main``, ``summary``, ``prepare``, ``benchmark``, ``predict``, ``visualize``, ``pretrained``.
"""

__version__ = "0.1.0"
