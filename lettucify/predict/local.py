"""Label files here, as the server would: its decoder, preprocessing and backend.

Photos are decoded on a thread pool while the model runs the batch before them; a file
the decoder refuses is a result with its reason and the batch goes on without it.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from lettucify.config import ServeBackend
from lettucify.data.images import BadImageError
from lettucify.predict.results import Result, from_probabilities
from lettucify.serve.inference import BACKENDS, Preprocessor, load_net, probabilities

log = logging.getLogger(__name__)

Decoded = Union[np.ndarray, str]  # the model's input, or why there is none


class LocalPredictor:
    """``predict(files) -> results`` in order, with the model of ``source`` (load_trained's
    checkpoint, model_uri and tracking_uri); ``settings`` is the ``predict`` config."""

    def __init__(self, source: Mapping[str, Optional[str]], settings, work_dir: Path) -> None:
        net, self.classes, preprocess = load_net(source, settings.tta_flip)
        backend = BACKENDS[ServeBackend(settings.backend)]
        spec = {"source": dict(source), "tta_flip": settings.tta_flip, **backend.prepare(net, preprocess, work_dir)}
        self.run = probabilities(backend.load(spec, settings.intra_op_threads, net))
        self.preprocessor = Preprocessor(preprocess, settings.max_image_pixels)
        self.batch_size = settings.batch_size
        self.decode_threads = settings.decode_threads

    def _decode(self, path: Path) -> Decoded:
        try:
            return self.preprocessor(path)
        except BadImageError as err:
            return err.reason

    def predict(self, files: Sequence[Path]) -> Iterator[Result]:
        batches = [files[i : i + self.batch_size] for i in range(0, len(files), self.batch_size)]
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="lettucify-decode") as pool:
            ahead: List[Future] = [pool.submit(self._decode, p) for p in batches[0]] if batches else []
            for number, batch in enumerate(batches):
                decoded = [f.result() for f in ahead]
                # The next batch decodes while this one runs.
                ahead = [pool.submit(self._decode, p) for p in batches[number + 1]] if number + 1 < len(batches) else []
                yield from self._label(batch, decoded)

    def _label(self, batch: Sequence[Path], decoded: Sequence[Decoded]) -> Iterator[Result]:
        good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        probs = self.run(np.stack([decoded[i] for i in good])) if good else np.empty((0, len(self.classes)))
        labelled = dict(zip(good, from_probabilities([batch[i] for i in good], probs, self.classes)))
        for i, path in enumerate(batch):
            yield labelled.get(i) or Result(path, error=decoded[i])
