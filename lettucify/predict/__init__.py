"""Batch prediction (``task=predict``): the photos of a folder labelled here, with the
server's own decoding, preprocessing and backend, or by a running server or deployment."""
