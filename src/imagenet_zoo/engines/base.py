"""The one contract every engine keeps, in the spirit of Triton's backends: a loaded model that `infer`s
batches, and the capabilities beyond it declared here with what an engine without them does. The pipeline
calls them without asking first; an engine overrides what it has (a heatmap engine is a subclass of its
engine, so it keeps everything else its engine does).

What an engine takes is the model's input pixels: uint8 NHWC RGB, resized and cropped as its `DataConfig`
says (`data.preprocess.model_input`). It scales them as the weights expect (`data.preprocess.normalization`),
inside its graph where it has one, so no caller makes a float32 copy of a photo.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imagenet_zoo.data.images import DecodeMode
from imagenet_zoo.data.preprocess import BatchPreprocessor, CpuPath
from imagenet_zoo.errors import ExplanationUnsupportedError
from imagenet_zoo.explain import ClassChoice
from imagenet_zoo.specs import DataConfig, ExplainMethod


class Engine:
    """A model ready to run: `infer` (required), and what else it can do."""

    name: str = "engine"
    # The heatmaps `explain` computes ("cam" or "grad-cam"); None: it computes none.
    explain_method: ExplainMethod | None = None
    # Whether `infer_top` ranks the classes where the logits are (a GPU's memory), so only the top k of each
    # row leave it: the pipeline then asks for rankings instead of logits where it needs no more.
    ranks_where_it_infers: bool = False

    def infer(self, batch: Any) -> np.ndarray:
        """A batch of model input pixels (`stacked`) to float32 logits, or pooled features (rows, D)."""
        raise NotImplementedError

    def infer_top(self, batch: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's `k` most probable classes, best first: indices (rows, k) and softmax probabilities
        (rows, k) in float32, as the pipeline's post-processing computes them, equal probabilities
        ranking the lower index first. Only an engine that `ranks_where_it_infers` has it: elsewhere the
        pipeline ranks the logits `infer` gives (`classifier.ranking_of`)."""
        raise NotImplementedError(f"the {self.name} engine does not rank where it infers")

    def explain(self, batch: Any, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits (rows, classes), each row's raw map of one class (rows, map rows, map columns) and the
        class of each map (`explain.explained_classes`), from one forward pass."""
        raise ExplanationUnsupportedError(f"the {self.name} engine was not loaded to draw heatmaps")

    def batch_preprocessor(
        self, config: DataConfig, *, decode: DecodeMode, max_pixels: int, cpu_path: CpuPath
    ) -> BatchPreprocessor | None:
        """Decoding and preprocessing of whole batches where the engine runs (a GPU's JPEG decoder), or
        None: the pipeline's decoding threads prepare each input on the CPU."""
        return None

    def stacked(self, rows: list[Any]) -> Any:
        """One batch from the rows the pipeline prepared (numpy pixels, HWC) or the batch preprocessor
        made: what `infer` takes."""
        return np.stack(rows)


class AdaptedEngine(Engine):
    """An engine written to the minimal contract alone (a `name` and `infer`, as a plugin or a test may
    give one), with the defaults of everything else."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name = str(engine.name)

    def infer(self, batch: Any) -> np.ndarray:
        return np.asarray(self.engine.infer(batch))


def as_engine(engine: Any) -> Engine:
    """`engine` as an `Engine`: itself, or adapted if it keeps only the minimal contract."""
    return engine if isinstance(engine, Engine) else AdaptedEngine(engine)


def pixel_batch(batch: np.ndarray) -> np.ndarray:
    """`batch` as the contiguous uint8 array an engine takes; a TypeError for any other dtype (floats
    already scaled, scaled again, would give wrong answers without a word)."""
    if batch.dtype != np.uint8:
        raise TypeError(f"an engine takes uint8 pixels, not {batch.dtype}: see imagenet_zoo.engines.base")
    return np.ascontiguousarray(batch)
