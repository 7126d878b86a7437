"""The HTTP server of ``task=serve``: one module per job.

``app`` (routes), ``inputs`` (request bodies to images), ``inference`` (decoding,
preprocessing, backends), ``batching`` (the micro-batcher), ``limits`` (refusals and the
body limit), ``auth`` (the API key), ``metrics`` (Prometheus and the access log).
"""
