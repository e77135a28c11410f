"""Loaded models shared by all requests: loaded lazily; least recently used ones are unloaded to stay
within `max_loaded_models` and `max_model_memory_mb` (fp32 weights), always keeping the newest. Each
loaded model has its dynamic batcher: requests decode their uploads in parallel and submit the pixels
to it, and it runs them through the pipeline's `forward` in shared engine calls.

A model loads outside the pool's lock (each model has a lock of its own, so it loads once): requests for
a loaded model never wait on another model's load."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from imagenet_zoo.api import Checked, check_config, resolve_model
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.engines.batching import BatchObserver, DynamicBatcher
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.server.settings import Settings


@dataclass(frozen=True)
class ServedModel:
    """A loaded classifier and the batcher in front of its engine. The batcher's results are the
    engine's output rows, or with `explain` (row, heat) pairs for `Classifier.postprocess`."""

    classifier: Classifier
    batcher: DynamicBatcher
    explain: bool


def _batch_runner(classifier: Classifier, explain: bool) -> Callable[[np.ndarray], Sequence[Any]]:
    if not explain:
        return lambda batch: list(classifier.forward(batch).rows)

    def explained(batch: np.ndarray) -> list[tuple[np.ndarray, Any]]:
        forward = classifier.forward(batch, explain=True)
        assert forward.heats is not None
        return list(zip(forward.rows, forward.heats, strict=True))

    return explained


class ModelPool:
    def __init__(self, settings: Settings, observe: Callable[[str], BatchObserver] | None = None) -> None:
        self._settings, self._observe = settings, observe
        # The served models, resolved once (bundles by folder): requests can name only these.
        self.served: dict[str, RegisteredModel] = {}
        for ref in settings.models:
            model = resolve_model(ref, registry=settings.registry)
            self.served.setdefault(model.spec.name, model)
        # Keyed by (name, explain): a model that draws heatmaps is a second compiled model (CAM outputs),
        # loaded only when a request asks for one, so plain requests never pay for the maps.
        self._loaded: OrderedDict[tuple[str, bool], ServedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _loaded, briefly
        # One load at a time per model and kind.
        self._loading = {
            (name, explain): threading.Lock() for name in self.served for explain in (False, True)
        }

    def check(self, name: str, *, explain: bool = False) -> Checked:
        """The model's load configuration checked (refused with its `UsageError`), nothing loaded."""
        config = replace(self._settings.load, model=self.served[name], explain=explain)
        return check_config(config, progress=False)

    def get(self, name: str, *, explain: bool = False) -> ServedModel:
        """A served model, by canonical name (loaded now if needed): its classifier and batcher; with
        `explain`, one that computes heatmaps too."""
        key = (name, explain)
        loaded = self.loaded_model(name, explain=explain)
        if loaded is not None:
            return loaded
        with self._loading[key]:
            loaded = self.loaded_model(name, explain=explain)  # another request may have loaded it
            if loaded is not None:
                return loaded
            classifier = self.check(name, explain=explain).load()
            assert isinstance(classifier, Classifier)
            observe = self._observe(name) if self._observe else None
            runner = _batch_runner(classifier, explain)
            served = ServedModel(
                classifier, DynamicBatcher(runner, self._settings.batching, observe=observe), explain
            )
            with self._lock:
                self._loaded[key] = served
                while len(self._loaded) > 1 and self._over_budget():
                    _, evicted = self._loaded.popitem(last=False)
                    evicted.batcher.close()  # requests still holding it get their results all the same
            return served

    def loaded_model(self, name: str, *, explain: bool = False) -> ServedModel | None:
        """The model if it is loaded now (never loads it); it becomes the most recently used."""
        key = (name, explain)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        return None

    def _over_budget(self) -> bool:
        weights_mb = sum(m.classifier.spec.num_params * 4 for m in self._loaded.values()) / 2**20
        too_many = len(self._loaded) > self._settings.max_loaded_models
        return too_many or weights_mb > self._settings.max_model_memory_mb

    def loaded(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys(name for name, _ in self._loaded))

    def close(self) -> None:
        with self._lock:
            loaded = list(self._loaded.values())
            self._loaded.clear()
        for served in loaded:
            served.batcher.close(wait=True)
