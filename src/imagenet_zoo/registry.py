"""Which models exist: name and aliases -> spec, Keras builder and weights provider."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from imagenet_zoo.errors import UnknownModelError, UsageError
from imagenet_zoo.specs import ModelSpec
from imagenet_zoo.weights.store import WeightsProvider

Pooling = Literal["avg", "max"] | None


class ModelBuilder(Protocol):
    """One signature for every model (as `keras.applications`): returns a `keras.Model` producing logits."""

    def __call__(
        self,
        *,
        weights: Path | None,
        include_top: bool,
        pooling: Pooling,
        input_shape: tuple[int, int, int] | None,
    ) -> Any: ...


@dataclass(frozen=True)
class RegisteredModel:
    spec: ModelSpec
    build: ModelBuilder
    weights: WeightsProvider

    @property
    def weights_available(self) -> bool:
        """Packaged weights are always at hand; downloaded ones only once they are cached."""
        return self.spec.weights.url is None or self.weights.is_present(self.spec)


def normalize_name(name: str) -> str:
    """Names and aliases match case-insensitively, with `-` and `_` alike."""
    return name.strip().lower().replace("-", "_")


class Registry:
    """A set of models addressable by name or alias (case-insensitive, `-` and `_` alike)."""

    def __init__(self, models: Iterable[RegisteredModel] = ()) -> None:
        self._models: dict[str, RegisteredModel] = {}
        self._aliases: dict[str, str] = {}
        for model in models:
            self.register(model)

    def register(self, model: RegisteredModel) -> None:
        name = model.spec.name
        for key in (name, *model.spec.aliases):
            owner = self._aliases.get(normalize_name(key))
            if owner is not None and owner != name:
                raise ValueError(f"{key!r} already names {owner}")
            self._aliases[normalize_name(key)] = name
        self._models[name] = model

    def get(self, name: str | os.PathLike[str]) -> RegisteredModel:
        """A model by name or alias, or a bundle by its folder (registered on first use)."""
        name = os.fspath(name)
        key = self._aliases.get(normalize_name(name))
        if key is not None:
            return self._models[key]
        from imagenet_zoo.bundles import is_bundle, load_bundle

        if is_bundle(name):
            return self._register_bundle(load_bundle(Path(name)), name)
        known = ", ".join(self._models)
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {known}, or a bundle folder")

    def _register_bundle(self, bundle: RegisteredModel, folder: str) -> RegisteredModel:
        bundle = replace(bundle, spec=replace(bundle.spec, aliases=(folder,)))
        try:
            self.register(bundle)
        except ValueError as exc:
            raise UsageError(f"bundle {folder}: {exc}; rename the bundle folder") from None
        return bundle

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(self._models.values())


@cache
def default_registry() -> Registry:
    from imagenet_zoo.models import ALL_MODELS

    return Registry(ALL_MODELS)


def list_models() -> list[str]:
    """Names of every registered model."""
    return [model.spec.name for model in default_registry()]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a model, by name or alias."""
    return default_registry().get(name).spec
