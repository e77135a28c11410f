"""The graph description (`engines/graph.py`) and what is built from it: every tricky Keras operation,
translated once, then run by OpenVINO (`openvino_graph.py`) and torch (`torch_graph.py`) against Keras itself.

Whole networks are checked in `test_keras_networks.py` (every family, same weights, logits within 1e-4) and
real EfficientNet-Lite0 weights on the shared photos in `test_openvino.py` and `test_torch_engine.py`."""

from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import pytest

from imagenet_zoo.engines.graph import translate
from imagenet_zoo.engines.openvino_graph import build_model
from imagenet_zoo.errors import ModelTranslationError
from tests.keras_graphs import TRICKY, keras, layers, randomized, single

Runner = Callable[[Any, np.ndarray], list[np.ndarray]]


def run_openvino(model: Any, x: np.ndarray) -> list[np.ndarray]:
    graph = translate(model)
    compiled = ov.Core().compile_model(
        build_model(graph.spec, graph.weights), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    result = compiled(x)
    return [np.asarray(result[output]) for output in compiled.outputs]


def run_torch(model: Any, x: np.ndarray) -> list[np.ndarray]:
    torch = pytest.importorskip("torch")
    from imagenet_zoo.engines.torch_graph import GraphModule

    graph = translate(model)
    module = GraphModule(graph.spec, {k: torch.from_numpy(v) for k, v in graph.weights.items()}).eval()
    images = torch.from_numpy(x)
    with torch.no_grad():
        return [y.numpy() for y in module(images.permute(0, 3, 1, 2) if x.ndim == 4 else images)]


RUNNERS: dict[str, Runner] = {"openvino": run_openvino, "torch": run_torch}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("name", list(TRICKY))
@pytest.mark.parametrize("size", [8, 9])
def test_each_tricky_operation_equals_keras(runner: str, name: str, size: int) -> None:
    model = single(TRICKY[name])
    # Below zero at the borders, so padding that joins a max shows; above 6, so relu6 caps.
    x = np.random.default_rng(size).normal(0, 4, (2, size, size + 3, 3)).astype(np.float32) - 3.0
    (ours,) = RUNNERS[runner](model, x)
    np.testing.assert_allclose(ours, np.asarray(model(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_flatten_is_in_keras_order(runner: str) -> None:
    """VGG's classifier reads its features flattened row by row, then column, then channel."""
    inputs = keras.Input((3, 4, 5))
    model = randomized(keras.Model(inputs, layers.Dense(7)(layers.Flatten()(inputs))))
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(RUNNERS[runner](model, x)[0], np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_nested_models_and_a_shared_layer_are_inlined(runner: str) -> None:
    inputs = keras.Input((6, 6, 3))
    inner_in = keras.Input((6, 6, 3))
    inner = keras.Model(
        inner_in, layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in), name="base"
    )
    shared = layers.Conv2D(4, 1, name="shared")
    features = inner(inputs)
    twice = layers.Add()([shared(features), shared(layers.ReLU()(features))])
    model = randomized(keras.Model(inputs, [layers.GlobalAveragePooling2D()(twice), twice]))
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32)
    ours, expected = RUNNERS[runner](model, x), [np.asarray(y) for y in model(x)]
    for mine, theirs in zip(ours, expected, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_the_neighbour_vote_head_equals_keras(runner: str) -> None:
    from imagenet_zoo.models.neighbour_vote import NeighbourVote

    rng = np.random.default_rng(4)
    prototypes = rng.normal(size=(9, 5)).astype(np.float32)
    vote = NeighbourVote(prototypes, rng.integers(0, 3, 9), rng.normal(size=5), classes=3, temperature=0.1)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, vote(inputs))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(RUNNERS[runner](model, x)[0], np.asarray(model(x)), atol=1e-4, rtol=1e-5)


def test_a_layer_it_does_not_know_is_named() -> None:
    model = single(lambda x: layers.LayerNormalization(name="odd_one")(x))
    with pytest.raises(ModelTranslationError, match=r"odd_one.*LayerNormalization"):
        translate(model)


def test_the_input_shape_is_kept() -> None:
    inputs = keras.Input((10, 12, 3))
    graph = translate(randomized(keras.Model(inputs, layers.Conv2D(2, 3)(inputs))))
    assert graph.spec["input_shape"] == [None, 10, 12, 3]
    assert build_model(graph.spec, graph.weights).inputs[0].get_partial_shape() == ov.PartialShape(
        [-1, 10, 12, 3]
    )
