"""alexnet_jax: the reference JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012).

Modules, in the order data flows: ``sources`` -> ``augment`` -> ``input_pipeline`` -> ``sharding`` ->
``model`` (``layers``) -> ``optim`` -> ``train`` (``metrics``, ``checkpointing``); CLIs ``main`` and ``summary``.
"""

__version__ = "0.1.0"
