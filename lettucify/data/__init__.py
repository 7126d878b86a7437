"""Datasets: find, fetch, check, decode and transform the images of an ImageFolder tree.

Kept free of torch at import: the CLI and the config schema import ``lettucify.data``
before anything is trained. ``lettucify.data.datamodule`` is the config's ``_target_``.
"""
