"""Loaded models shared by all requests. Each served model is loaded once, on an engine that also gives
heatmaps where its engine can (the maps come from the same forward pass, so one loaded model answers
plain and explained requests alike), with its dynamic batcher in front: requests decode their uploads in
parallel and submit the pixels, and it runs them through the pipeline's `forward` in shared engine calls.

Loads run one at a time, and make room first: least recently used models are unloaded to stay within
`max_loaded_models` and `max_model_memory_mb` (fp32 weights) with the newcomer counted. A model in use
by requests is unloaded only when its last request is done, so no request ever finds its batcher closed.
Requests for a loaded model never wait on another model's load."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from imagenet_zoo.api import LoadPlan, check_config, resolve_model
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.engines.batching import BatchObserver, DynamicBatcher
from imagenet_zoo.errors import UsageError
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import Wanted
from imagenet_zoo.server.settings import Settings


@dataclass
class ServedModel:
    """A loaded classifier and the batcher in front of its engine (results: (row, heat) per input)."""

    classifier: Classifier
    batcher: DynamicBatcher
    explain: bool  # its engine gives heatmaps
    users: int = 0  # requests using it now
    retired: bool = False  # unloaded from the pool: closed once its last request is done
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def weights_mb(self) -> float:
        return self.classifier.spec.num_params * 4 / 2**20

    def retire(self) -> None:
        with self._lock:
            self.retired = True
            idle = self.users == 0
        if idle:
            self.batcher.close()


def _batch_runner(classifier: Classifier) -> Callable[[np.ndarray, list[Wanted]], Sequence[Any]]:
    def run(batch: np.ndarray, wanted: list[Wanted]) -> list[tuple[np.ndarray, Any]]:
        forward = classifier.forward(batch, wanted)
        heats = forward.heats if forward.heats is not None else [None] * len(batch)
        return list(zip(forward.rows, heats, strict=True))

    return run


class ModelPool:
    def __init__(self, settings: Settings, observe: Callable[[str], BatchObserver] | None = None) -> None:
        self._settings, self._observe = settings, observe
        # The served models, resolved once (bundles by folder): requests can name only these.
        self.served: dict[str, RegisteredModel] = {}
        for ref in settings.models:
            model = resolve_model(ref, registry=settings.registry)
            self.served.setdefault(model.spec.name, model)
        self._loaded: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _loaded and the use counts, briefly
        self._loading = threading.Lock()  # one load at a time: each makes room before it loads

    def check(self, name: str, *, explain: bool = False) -> LoadPlan:
        """The model's load configuration checked (refused with its `UsageError`), nothing loaded."""
        config = replace(self._settings.load, model=self.served[name], explain=explain)
        return check_config(config, progress=False)

    def can_explain(self, name: str) -> bool:
        try:
            self.check(name, explain=True)
        except UsageError:
            return False
        return True

    @contextmanager
    def using(self, name: str) -> Iterator[ServedModel]:
        """A served model, loaded now if needed, held for the block: it is not unloaded meanwhile."""
        served = self.acquire(name)
        try:
            yield served
        finally:
            self.release(served)

    def acquire(self, name: str) -> ServedModel:
        """A served model, loaded now if needed, held until `release`: it is not unloaded meanwhile."""
        return self.acquire_loaded(name) or self._load(name)

    def acquire_loaded(self, name: str) -> ServedModel | None:
        """The model if it is loaded (it becomes the most recently used), held until `release`."""
        with self._lock:
            served = self._loaded.get(name)
            if served is not None:
                self._loaded.move_to_end(name)
                with served._lock:
                    served.users += 1
            return served

    def release(self, served: ServedModel) -> None:
        with served._lock:
            served.users -= 1
            idle = served.retired and served.users == 0
        if idle:
            served.batcher.close()

    def _load(self, name: str) -> ServedModel:
        with self._loading:
            loaded = self.acquire_loaded(name)  # another request may have loaded it meanwhile
            if loaded is not None:
                return loaded
            self._make_room(self.served[name].spec.num_params * 4 / 2**20)
            explain = self.can_explain(name)
            classifier = self.check(name, explain=explain).load()
            assert isinstance(classifier, Classifier)
            observe = self._observe(name) if self._observe else None
            batcher = DynamicBatcher(
                _batch_runner(classifier),
                self._settings.batching,
                observe=observe,
                stack=classifier.engine.stacked,
            )
            served = ServedModel(classifier, batcher, explain, users=1)
            with self._lock:
                self._loaded[name] = served
            return served

    def _make_room(self, weights_mb: float) -> None:
        """Unload least recently used models until one more of `weights_mb` fits the bounds."""
        with self._lock:
            while self._loaded and self._over_budget(extra_mb=weights_mb, extra_models=1):
                _, evicted = self._loaded.popitem(last=False)
                evicted.retire()

    def _over_budget(self, *, extra_mb: float, extra_models: int) -> bool:
        weights_mb = sum(m.weights_mb for m in self._loaded.values()) + extra_mb
        too_many = len(self._loaded) + extra_models > self._settings.max_loaded_models
        return too_many or weights_mb > self._settings.max_model_memory_mb

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def close(self) -> None:
        with self._lock:
            loaded = list(self._loaded.values())
            self._loaded.clear()
        for served in loaded:
            served.batcher.close(wait=True)
