"""The linear head, fitted with numpy: no training framework is needed to train on the base's features.

It is fitted as a Keras `Dense` layer behind `Dropout(0.2)` is by `fit`: Glorot-uniform start, Adam at
1e-3 (Keras's defaults), shuffled mini-batches, a cross-entropy in which every class counts as much (each
photo weighted by its class's rarity), and an early stop on the validation loss that keeps the best
epoch's weights. The features fit in memory (the datasets `train` is for are small), so each epoch is a
few matrix products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DROPOUT = 0.2
LEARNING_RATE = 1e-3
_BETAS, _EPSILON = (0.9, 0.999), 1e-7  # Adam's, as Keras sets them


@dataclass(frozen=True)
class LinearFit:
    kernel: np.ndarray  # (features, classes), float32
    bias: np.ndarray  # (classes,), float32
    epochs: int  # epochs run before the early stop
    best_epoch: int  # the epoch whose weights are kept (1-based)


def class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Weights that make every class count as much in the loss: rare classes are not drowned out."""
    counts = np.bincount(labels, minlength=classes)
    return len(labels) / (classes * np.maximum(counts, 1))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


class _Adam:
    def __init__(self, *shapes: tuple[int, ...]) -> None:
        self.moments = [(np.zeros(shape), np.zeros(shape)) for shape in shapes]
        self.step = 0

    def update(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.step += 1
        b1, b2 = _BETAS
        rate = LEARNING_RATE * np.sqrt(1 - b2**self.step) / (1 - b1**self.step)
        for param, grad, (m, v) in zip(params, grads, self.moments, strict=True):
            m += (1 - b1) * (grad - m)
            v += (1 - b2) * (grad * grad - v)
            param -= rate * m / (np.sqrt(v) + _EPSILON)


def fit_linear(
    data: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    classes: int,
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    seed: int,
    log: Callable[[int, dict[str, float]], None] = lambda epoch, logs: None,
) -> LinearFit:
    """Softmax regression of `data` (features, labels), stopped early on the loss over `val`; `log` gets
    each epoch's losses and accuracies."""
    x, y = np.asarray(data[0], np.float64), np.asarray(data[1])
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6 / (x.shape[1] + classes))
    kernel, bias = rng.uniform(-limit, limit, (x.shape[1], classes)), np.zeros(classes)
    weights = class_weights(y, classes)
    adam = _Adam(kernel.shape, bias.shape)
    best = (np.inf, kernel.copy(), bias.copy(), 0)
    waited, epoch = 0, 0
    for epoch in range(1, epochs + 1):
        for rows in np.array_split(rng.permutation(len(x)), max(1, -(-len(x) // batch_size))):
            kept = rng.random(x[rows].shape) >= DROPOUT
            inputs = x[rows] * kept / (1 - DROPOUT)
            # d(mean of weighted cross-entropy)/d(logits): (softmax - one-hot) * weight / batch
            error = _softmax(inputs @ kernel + bias)
            error[np.arange(len(rows)), y[rows]] -= 1
            error *= weights[y[rows], None] / len(rows)
            adam.update([kernel, bias], [inputs.T @ error, error.sum(axis=0)])
        logs = _epoch_logs(x @ kernel + bias, y, val[0] @ kernel + bias, val[1])
        log(epoch, logs)
        if logs["val_loss"] < best[0]:
            best, waited = (logs["val_loss"], kernel.copy(), bias.copy(), epoch), 0
        else:
            waited += 1
            if waited >= patience:
                break
    _, kernel, bias, best_epoch = best
    return LinearFit(kernel.astype(np.float32), bias.astype(np.float32), epoch, best_epoch)


def _epoch_logs(
    logits: np.ndarray, y: np.ndarray, val_logits: np.ndarray, y_val: np.ndarray
) -> dict[str, float]:
    return {
        "accuracy": float((logits.argmax(axis=1) == y).mean()),
        "loss": cross_entropy(logits, y),
        "val_accuracy": float((val_logits.argmax(axis=1) == y_val).mean()),
        "val_loss": cross_entropy(val_logits, y_val),
    }
