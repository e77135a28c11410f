"""Training a classifier for the user's own classes on top of an ImageNet network (transfer learning).

A new head is fitted on the frozen base's pooled features, which are computed once with the fast engine:
a dense layer (`linear`, fitted with numpy: `linear_head.py`), a vote of the most similar training photos
(`neighbours`, see `heads.py`), or by default (`auto`) both, keeping the one with the better balanced
accuracy on the held-out photos: none of this needs a training framework. Then, optionally, the last layers
of the base are fine-tuned on the photos at a low learning rate, or a network is trained from scratch:
those train with Keras on TensorFlow (the `train` extra). Training stops early on the validation loss and
keeps its best weights. The result is a bundle (see `bundles.py`) that every command accepts as a model.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from imagenet_zoo.api import create_model, load_pipeline, resolve_model
from imagenet_zoo.classifier import FeatureExtractor
from imagenet_zoo.data.images import decode_image, find_images
from imagenet_zoo.data.preprocess import draft_short_side, model_input, normalize
from imagenet_zoo.errors import ImageError, MissingExtraError, UsageError, install_hint
from imagenet_zoo.models._keras import import_keras
from imagenet_zoo.models.bundle import (
    FEATURES_LAYER,
    bundle_writer,
    load_keras_safely,
    naming_problem,
    save_bundle,
)
from imagenet_zoo.models.described import Described
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.transfer.heads import LinearHead, NeighbourHead, fit_neighbours, neighbour_head
from imagenet_zoo.transfer.linear_head import DROPOUT, class_weights, fit_linear

Log = Callable[[str], None]
Head = LinearHead | NeighbourHead
HEADS = ("auto", "linear", "neighbours")
MAX_PLOT_SIDE = 2048  # pixels of the confusion plot's matrix: 1,000 classes at 64 each were 11.6 GiB
TRAIN_EXTRA = "train"  # the extra that brings what trains a network's own layers (TensorFlow)


@dataclass(frozen=True)
class TrainConfig:
    # The base network (`load.model`) and how its features are computed (engine, decode, batch size).
    load: LoadConfig = field(default_factory=lambda: LoadConfig(task="features", batch_size=32))
    epochs: int = 30
    fine_tune_layers: int = 0
    val_split: float = 0.2
    augment: bool = False
    patience: int = 5
    seed: int = 0
    from_scratch: bool = False  # train `base`'s architecture from random weights (no ImageNet features)
    resume: bool = False  # with from_scratch: continue from the last epoch's checkpoint in the bundle folder
    # From scratch: the start of a cosine decay to zero. SqueezeNet from random weights at batch 8 with
    # Adam from 1e-3 collapsed to one answer for every photo in 2 of 4 seeds; from 3e-4 it learned in 6 of 6.
    learning_rate: float = 3e-4
    head: str = "auto"  # "linear", "neighbours" (see heads.py), or auto: the better of the two on validation

    @property
    def base(self) -> str:
        return str(self.load.model)

    @property
    def batch_size(self) -> int:
        return self.load.batch_size


@dataclass(frozen=True)
class TrainReport:
    bundle: Path
    classes: list[str]
    train_size: int
    val_size: int
    accuracy: float
    balanced_accuracy: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    skipped: list[str]
    head: str | None = None  # the head that was kept (None from scratch)
    head_scores: dict[str, float] = field(
        default_factory=dict
    )  # auto: each head's held-out balanced accuracy


def class_folders(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (the sub-folders, sorted) and every photo in them with its class index."""
    if not root.is_dir():
        raise UsageError(f"train needs a folder with one sub-folder of photos per class: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = [
        (p, i) for i, name in enumerate(classes) for p in find_images([str(root / name)], recursive=True)
    ]
    counts = [sum(label == i for _, label in items) for i in range(len(classes))]
    if len(classes) < 2 or min(counts, default=0) < 2:
        raise UsageError(f"{root} needs at least two class sub-folders with at least two photos each")
    return classes, items


def stratified_split(
    items: list[tuple[str, int]], val_split: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Each class split alike, so a rare class is in both parts."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({label for _, label in items}):
        members = [item for item in items if item[1] == label]
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(val_split * len(members))))
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val


Data = tuple[np.ndarray, np.ndarray]
Items = list[tuple[str, int]]


@dataclass(frozen=True)
class _Trained:
    write: Callable[[Path], None]  # writes the bundle's model file: photos in, logits out
    num_params: int  # the values it learned (Keras's trainable weights)
    val_logits: np.ndarray  # its logits of the held-out photos
    val_labels: np.ndarray
    skipped: set[str]  # photos that could not be read
    head: str | None = None
    head_scores: dict[str, float] = field(default_factory=dict)


def _keras_trained(model: Any, val: Data, skipped: set[str], config: TrainConfig, **head: Any) -> _Trained:
    """What a Keras network trained: its file, its trainable values, its answers on the held-out photos."""
    images, labels = val
    logits = np.asarray(model.predict(images, batch_size=config.batch_size, verbose=0))
    learned = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    return _Trained(model.save, learned, logits, labels, skipped, **head)


def _seeded_keras(config: TrainConfig) -> Any:
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    return keras


def train(root: Path, output: Path, config: TrainConfig, log: Log = print) -> TrainReport:
    _check(config)
    classes, items = class_folders(root)
    problem = naming_problem(output.resolve().name, classes)
    if problem:  # what the loader would refuse, refused before the training, not after it
        raise UsageError(f"a bundle {output} of the classes in {root} could not be loaded: {problem}")
    train_items, val_items = stratified_split(items, config.val_split, config.seed)
    base = resolve_model(config.base).spec
    log(f"{len(train_items)} training and {len(val_items)} validation photos in {len(classes)} classes")
    if config.from_scratch:
        trained = _from_scratch(
            _seeded_keras(config), len(classes), train_items, val_items, output, config, log
        )
    else:
        trained = _transfer(len(classes), train_items, val_items, config, log)
    confusion = confusion_matrix(trained.val_labels, trained.val_logits.argmax(axis=1), len(classes))
    accuracy = float(np.trace(confusion) / confusion.sum())
    balanced = balanced_accuracy(confusion)
    validation = {"accuracy": accuracy, "balanced_accuracy": balanced, "confusion": confusion.tolist()}
    training = {
        "base": base.name,
        "from_scratch": config.from_scratch,
        "epochs": config.epochs,
        "fine_tune_layers": config.fine_tune_layers,
        "augment": config.augment,
        "head": trained.head,
        "head_scores": trained.head_scores,
        "train_size": len(train_items),
        "val_size": len(val_items),
    }
    extra = {"validation": validation, "training": training}
    save_bundle(output, trained.write, num_params=trained.num_params, classes=classes, base=base, extra=extra)
    confusion_plot(confusion, classes).save(output / "confusion.png")
    return TrainReport(
        output,
        classes,
        len(train_items),
        len(val_items),
        accuracy,
        balanced,
        confusion.tolist(),
        sorted(trained.skipped),
        trained.head,
        trained.head_scores,
    )


def _check(config: TrainConfig) -> None:
    if not 0 < config.val_split < 1:
        raise UsageError("--val-split must be between 0 and 1")
    if not 0 < config.learning_rate < math.inf:  # NaN fails too
        raise UsageError("--learning-rate must be a positive number")
    if config.resume and not config.from_scratch:
        raise UsageError("--resume continues a --from-scratch training")
    if config.head not in HEADS:
        raise UsageError(f"--head must be one of {', '.join(HEADS)}")
    if config.head == "neighbours" and (config.fine_tune_layers or config.from_scratch):
        raise UsageError("the neighbours head compares with fixed training features: it cannot be fine-tuned")
    if (config.fine_tune_layers or config.from_scratch) and find_spec("tensorflow") is None:
        what = "training from scratch" if config.from_scratch else "fine-tuning"
        raise MissingExtraError(f"{what} needs TensorFlow: {install_hint(TRAIN_EXTRA)}")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    confusion = np.zeros((classes, classes), int)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class recall: a rare class counts as much as a common one."""
    recalls = [confusion[i, i] / confusion[i].sum() for i in range(len(confusion)) if confusion[i].sum()]
    return float(np.mean(recalls))


def _transfer(classes: int, train_items: Items, val_items: Items, config: TrainConfig, log: Log) -> _Trained:
    """A new head on the frozen base's features, then optionally fine-tuning the base's last layers. Without
    fine-tuning, no training framework: the bundle's model file is written from the base's shipped
    description (`models.bundle.bundle_writer`)."""
    extractor = load_pipeline(replace(config.load, task="features"), progress=False)
    assert isinstance(extractor, FeatureExtractor)
    x_train, y_train, skipped = _features(extractor, train_items, mirrored=config.augment)
    x_val, y_val, skipped_val = _features(extractor, val_items, mirrored=False)
    heads = _candidate_heads(config)
    fitted = {name: _fit_head(name, x_train, y_train, x_val, y_val, classes, config, log) for name in heads}
    scores = {name: _head_score(head, x_val, y_val, classes) for name, head in fitted.items()}
    # Ties go to the linear head: it is smaller and keeps no training photos.
    chosen = max(heads, key=lambda name: (scores[name], name == "linear"))
    if len(heads) > 1:
        shown = ", ".join(f"{name} {score:.1%}" for name, score in scores.items())
        log(f"head: {chosen} (auto: balanced accuracy on the {len(y_val)} held-out photos: {shown})")
    head, skipped_all = fitted[chosen], skipped | skipped_val
    shown_scores = scores if len(heads) > 1 else {}
    base = resolve_model(config.base)
    if config.fine_tune_layers == 0 and isinstance(base.network, Described):
        write, learned = bundle_writer(base, head.layers())
        logits = head.logits(x_val)
        return _Trained(write, learned, logits, y_val, skipped_all, chosen, shown_scores)
    keras = _seeded_keras(config)
    features = create_model(config.base, include_top=False, pooling="avg", progress=False)
    model = _compose(keras, features, _keras_head(keras, head))
    val, _ = _pixels(config, val_items)
    if config.fine_tune_layers > 0:
        (train_images, train_labels), _ = _pixels(config, train_items)
        _fine_tune(keras, model, train_images, train_labels, val, config, log)
    return _keras_trained(model, val, skipped_all, config, head=chosen, head_scores=shown_scores)


def _keras_head(keras: Any, head: Head) -> Any:
    """A fitted head as a Keras model, for a bundle composed by Keras."""
    if isinstance(head, NeighbourHead):
        return neighbour_head(head.fit, head.classes)
    dense = _dense_head(keras, *head.fit.kernel.shape)
    dense.get_layer("predictions").set_weights([head.fit.kernel, head.fit.bias])
    return dense


def _candidate_heads(config: TrainConfig) -> tuple[str, ...]:
    if config.head != "auto":
        return (config.head,)
    # Fine-tuning trains through the head: only the dense one can follow the base as it changes.
    return ("linear",) if config.fine_tune_layers else ("linear", "neighbours")


def _fit_head(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    classes: int,
    config: TrainConfig,
    log: Log,
) -> Head:
    if name == "neighbours":
        return _neighbour_head(x, y, classes, log)
    fit = fit_linear(
        (x, y),
        (x_val, y_val),
        classes,
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        seed=config.seed,
        log=lambda epoch, logs: log(_epoch_line("head", epoch, config.epochs, logs)),
    )
    log(f"linear head: the weights of epoch {fit.best_epoch} of {fit.epochs} (lowest validation loss)")
    return LinearHead(fit)


def _head_score(head: Head, x_val: np.ndarray, y_val: np.ndarray, classes: int) -> float:
    predicted = head.logits(x_val).argmax(axis=1)
    return balanced_accuracy(confusion_matrix(y_val, predicted, classes))


CHECKPOINT = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"


def _from_scratch(
    keras: Any,
    classes: int,
    train_items: Items,
    val_items: Items,
    output: Path,
    config: TrainConfig,
    log: Log,
) -> _Trained:
    """The architecture from random weights: augmentation, a cosine learning-rate schedule, and a checkpoint
    after every epoch (model and optimizer) that `resume` continues from."""
    (x, y), skipped = _pixels(config, train_items)
    val, skipped_val = _pixels(config, val_items)
    checkpoint, state = output / CHECKPOINT, output / CHECKPOINT_STATE
    output.mkdir(parents=True, exist_ok=True)
    if config.resume and checkpoint.is_file():
        trainer = load_keras_safely(checkpoint, compile=True)
        done = int(json.loads(state.read_text())["epochs_done"])
        log(f"resuming from {checkpoint} after epoch {done}")
    else:
        trainer, done = _new_scratch_trainer(keras, classes, len(x), config), 0
    if done >= config.epochs:
        log(f"already trained for {done} epochs")
    save = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: _save_checkpoint(trainer, checkpoint, state, epoch + 1)
    )
    fit = partial(_fit, keras, trainer, (x, y), val, config, log)
    fit(phase="scratch", epochs=config.epochs, initial_epoch=done, callbacks=[save])
    return _keras_trained(trainer.get_layer("bundle"), val, skipped | skipped_val, config)


def _new_scratch_trainer(keras: Any, classes: int, samples: int, config: TrainConfig) -> Any:
    base = resolve_model(config.base).build(weights=None, include_top=False, pooling="avg", input_shape=None)
    model = _compose(keras, base, _dense_head(keras, base.output_shape[-1], classes))
    steps = max(1, -(-samples // config.batch_size)) * config.epochs
    trainer = _trainer(keras, model, augment=config.augment, name="trainer")
    _compile(keras, trainer, keras.optimizers.schedules.CosineDecay(config.learning_rate, steps))
    return trainer


def _dense_head(keras: Any, dim: int, classes: int) -> Any:
    return keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dropout(DROPOUT, name="head_dropout"),
            keras.layers.Dense(classes, name="predictions"),
        ]
    )


def _trainer(keras: Any, model: Any, *, augment: bool, name: str | None = None) -> Any:
    """What is fitted: `model`, behind random flips and shifts (active only in training) with `augment`."""
    inputs = keras.Input(model.input_shape[1:])
    x = inputs
    if augment:
        flips_and_shifts = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.1, 0.1)]
        x = keras.Sequential(flips_and_shifts, name="augment")(inputs)
    return keras.Model(inputs, model(x), name=name)


def _compile(keras: Any, model: Any, learning_rate: Any) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _fit(
    keras: Any,
    model: Any,
    data: Data,
    val: Data,
    config: TrainConfig,
    log: Log,
    *,
    phase: str,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list[Any] | None = None,
    batch_size: int | None = None,
) -> None:
    """Fit with class weights and a line of log per epoch; without extra callbacks, stop early on the
    validation loss and keep the best weights."""
    x, y = data
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    model.fit(
        x,
        y,
        validation_data=val,
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=batch_size or config.batch_size,
        class_weight=dict(enumerate(class_weights(y, int(max(y.max(), val[1].max())) + 1).tolist())),
        callbacks=[*(callbacks or [stop]), _epoch_log(keras, phase, epochs, log)],
        verbose=0,
    )


def _save_checkpoint(trainer: Any, checkpoint: Path, state: Path, epochs_done: int) -> None:
    """Model and optimizer, written atomically so an interrupted run never leaves a broken checkpoint."""
    tmp = checkpoint.with_name(f".{checkpoint.name}.tmp.keras")
    trainer.save(tmp)
    os.replace(tmp, checkpoint)
    state.write_text(json.dumps({"epochs_done": epochs_done}))


def _features(
    extractor: FeatureExtractor, items: Items, *, mirrored: bool
) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Pooled base features of the photos (and of their mirror images with `mirrored`).

    Unreadable photos are skipped and returned by path.
    """
    label_of = dict(items)
    feature_set = extractor.extract([p for p, _ in items])
    x, y = feature_set.features, np.array([label_of[p] for p in feature_set.paths])
    if mirrored:
        short_side = draft_short_side(extractor.data_config) if extractor.decode == "fast" else None
        flipped = [
            ImageOps.mirror(decode_image(p, min_short_side=short_side).image) for p in feature_set.paths
        ]
        more = extractor.extract(flipped)
        x, y = np.concatenate([x, more.features]), np.concatenate([y, y])
    return x, y, {path for path, _ in feature_set.failures}


def _epoch_log(keras: Any, phase: str, epochs: int, log: Log) -> Any:
    """A Keras callback printing one line per epoch."""

    class EpochLog(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            log(_epoch_line(phase, epoch + 1, epochs, logs or {}))

    return EpochLog()


def _epoch_line(phase: str, epoch: int, epochs: int, logs: dict[str, float]) -> str:
    shown = "  ".join(f"{k} {v:.3f}" for k, v in sorted(logs.items()) if "loss" in k or "acc" in k)
    return f"{phase} epoch {epoch}/{epochs}  {shown}"


def _neighbour_head(x: np.ndarray, y: np.ndarray, classes: int, log: Log) -> NeighbourHead:
    fit = fit_neighbours(x, y, classes)
    log(
        f"neighbours head: {len(x)} training photos, temperature {fit.temperature} "
        f"(leave-one-out balanced accuracy {fit.loo_balanced_accuracy:.1%})"
    )
    return NeighbourHead(fit, classes)


def _compose(keras: Any, base: Any, head: Any) -> Any:
    """Base (pooled features) + head as one flat network named `bundle`: photos in, logits out."""
    inputs = keras.Input(base.input_shape[1:], name="pixels")
    logits = keras.layers.Identity(name=FEATURES_LAYER)(base(inputs))
    for layer in head.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            logits = layer(logits)
    return keras.Model(inputs, logits, name="bundle")


def _pixels(config: TrainConfig, items: Items) -> tuple[Data, set[str]]:
    """Preprocessed photos in memory (the datasets this command is for are small) and their labels, and
    the photos that could not be read (left out)."""
    data_config = resolve_model(config.base).spec.data_config
    images, labels, skipped = [], [], set()
    for path, label in items:
        try:
            _, pixels = model_input(
                path, data_config, max_pixels=config.load.max_pixels, decode=config.load.decode
            )
        except ImageError:
            skipped.add(path)
            continue
        images.append(pixels)
        labels.append(label)
    return (normalize(np.stack(images), data_config.mode), np.array(labels)), skipped


def _fine_tune(
    keras: Any, model: Any, x: np.ndarray, y: np.ndarray, val: Data, config: TrainConfig, log: Log
) -> None:
    """Train the base's last layers too, at a low learning rate.

    BatchNorm layers stay frozen: statistics from small batches would corrupt the pretrained ones.
    """
    base = model.layers[1]
    base.trainable = True
    for layer in base.layers[: -config.fine_tune_layers]:
        layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    trainer = _trainer(keras, model, augment=config.augment)
    _compile(keras, trainer, 1e-5)
    epochs = max(1, config.epochs // 3)
    fit = partial(_fit, keras, trainer, (x, y), val, config, log)
    fit(phase="fine-tune", epochs=epochs, batch_size=min(config.batch_size, 16))


def confusion_plot(confusion: np.ndarray, classes: list[str], cell: int = 64) -> Image.Image:
    """The confusion matrix as a picture: rows are true classes, columns predicted ones. Its side is
    bounded whatever the class count (`MAX_PLOT_SIDE`): the cells shrink, and below 16 pixels they carry
    no names or counts."""
    n = len(classes)
    cell = max(1, min(cell, MAX_PLOT_SIDE // n))
    margin = 8 * min(max(len(c) for c in classes), 32) + 16
    image = Image.new("RGB", (margin + n * cell + 8, margin + n * cell + 8), "white")
    shades = (255 - 200 * np.asarray(confusion, np.float64) / max(1, int(confusion.max()))).astype(np.uint8)
    blue = np.full((n, n), 255, np.uint8)
    cells = Image.fromarray(np.stack([shades, shades, blue], axis=-1)).resize(
        (n * cell, n * cell), Image.Resampling.NEAREST
    )
    image.paste(cells, (margin, margin))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    if cell >= 16:  # white lines between the cells, and each one's count and names
        for k in range(n + 1):
            edge = margin + k * cell - 1
            draw.line([(margin, edge), (margin + n * cell, edge)], fill="white", width=2)
            draw.line([(edge, margin), (edge, margin + n * cell)], fill="white", width=2)
        for i in range(n):
            draw.text((4, margin + i * cell + cell // 2 - 7), classes[i][:32], fill="black", font=font)
            draw.text((margin + i * cell + 4, margin - 20), classes[i][: cell // 8], fill="black", font=font)
            for j in range(n):
                at = (margin + j * cell + cell // 3, margin + i * cell + cell // 3)
                draw.text(at, str(int(confusion[i, j])), fill="black", font=font)
    draw.text((4, 4), "rows: true class, columns: predicted", fill="black", font=font)
    return image


def confusion_text(confusion: list[list[int]], classes: list[str]) -> str:
    width = max(8, *(len(c) for c in classes)) + 2
    header = "true \\ predicted".ljust(width) + "".join(c[: width - 2].rjust(width) for c in classes)
    rows = [
        classes[i].ljust(width) + "".join(str(v).rjust(width) for v in row) for i, row in enumerate(confusion)
    ]
    return "\n".join([header, *rows])
