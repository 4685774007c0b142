"""Train the stock-out model: a small Keras MLP on encoded gold features.

The network sees :func:`models.features.encode_for_model` of the raw features, standardized
by a mean / std learnt from the training rows. After training, standardization is folded into
the first layer's weights and the class-weight bias is removed from the last layer's bias, so
the exported graph is three plain dense layers from encoded features to a calibrated logit:
nothing to keep in sync on the gateway, and nothing for int8 to quantize twice.

TensorFlow is imported only inside :func:`train_mlp` (the gateway never imports this module).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.features import FEATURES, MODEL_ENCODING, encode_for_model

__all__ = ["MlpWeights", "TrainConfig", "train_mlp", "calibration_set", "set_int8_inputs"]

log = logging.getLogger(__name__)

#: Lowest logit of a row kept for int8 calibration (see ``train_mlp``).
CALIB_MIN_LOGIT = -8.0


@dataclass
class MlpWeights:
    """A trained MLP as plain arrays: ``layers`` is [(W (in, out), b (out,)), ...], ReLU between.

    Input: encoded features (``encode_for_model``); output: one logit per row.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    #: Encoded-feature rows that span the real range of every input (int8 calibration).
    calibration: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURES)), np.float32))
    #: The ``encode_for_model`` version the weights expect.
    encoding: str = MODEL_ENCODING
    #: (lowest, highest) logit the int8 export keeps (``models.export.int8_logit_range``, picked
    #: on validation rows); None: the calibration rows' range.
    logit_range: tuple[float, float] | None = None
    #: (2, F): each encoded input's lowest and highest value over the training rows (the int8
    #: export scales inputs per feature to it); None: the calibration rows' range.
    input_range: np.ndarray | None = None

    def logits(self, encoded: np.ndarray) -> np.ndarray:
        """Float forward pass in numpy, (n, F) -> (n,)."""
        h = np.asarray(encoded, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Raw features -> probabilities (float reference for the exported runtimes)."""
        return _sigmoid(self.logits(encode_for_model(features, self.encoding)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 2e-3
    #: "constant", or "cosine": the rate decays along a cosine to ``lr_floor`` x its start over
    #: the run (measured on validation, docs/model.md *Where the forecast loses to the oracle*).
    lr_decay: str = "constant"
    lr_floor: float = 0.05
    #: Positive class weight; None: negatives / positives, capped at 50.
    pos_weight: float | None = None
    #: Extra weight of positive rows whose shelf is not empty yet (the forecasts): without it
    #: the loss is dominated by shelves already empty, which every scorer gets right
    #: (docs/decisions/0304-forecast-rows-goal.md). 1 = no emphasis.
    ahead_weight: float = 1.0
    seed: int = 0
    #: Rows kept for int8 calibration (stratified, plus one per feature at its min and max).
    calibration_rows: int = 2000
    #: Floor of the per-input standard deviation used to standardize (encoded units). Folding
    #: 1/std into the first layer magnifies the weights of nearly constant inputs (the price
    #: ratio, 1 on most rows); a per-tensor int8 weight scale then spends its range on them.
    std_floor: float = 0.0


def train_mlp(
    X: np.ndarray,
    y: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    empty_now: np.ndarray | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> MlpWeights:
    """Fit the MLP on raw features ``X`` (n, F) and labels ``y`` (n,).

    ``empty_now`` (n,) marks rows whose shelf is already empty; positives that are not get
    ``config.ahead_weight`` on top of the class weight. The exported logit stays calibrated
    for the class weight only: with an ahead weight w, forecast rows score higher odds (by up
    to w) than their frequency, which the validation-picked threshold absorbs.

    Raises:
        ValueError: when there are no rows or only one class.
    """
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) says nothing a user can act on.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: F401  (loads Keras' backend)
    import keras

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=bool)
    if len(X) == 0 or y.all() or not y.any():
        raise ValueError(f"need both classes to train: {len(X)} rows, {int(y.sum())} positive")
    enc = encode_for_model(X)
    # In float64: a constant column (every training row has a sensor, say) summed in float32
    # gets a std of ~1e-5 from rounding alone, and dividing the folded first layer by that
    # gives weights int8 cannot quantize (the LiteRT delegate refuses the model).
    mean = enc.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = enc.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, np.maximum(std, config.std_floor)).astype(np.float32)
    z = (enc - mean) / std
    pos = float(y.sum())
    pos_weight = config.pos_weight or min(50.0, (len(y) - pos) / pos)

    sample_weight = np.where(y, pos_weight, 1.0).astype(np.float32)
    if empty_now is not None and config.ahead_weight != 1.0:
        ahead = y & ~np.asarray(empty_now, dtype=bool)
        sample_weight[ahead] *= config.ahead_weight

    keras.utils.set_random_seed(config.seed)
    model = keras.Sequential([keras.Input(shape=(len(FEATURES),))]
                             + [keras.layers.Dense(h, activation="relu") for h in config.hidden]
                             + [keras.layers.Dense(1)])
    lr = config.learning_rate
    if config.lr_decay == "cosine":
        steps = math.ceil(len(X) / config.batch_size) * config.epochs
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=config.lr_floor)
    elif config.lr_decay != "constant":
        raise ValueError(f"unknown lr_decay {config.lr_decay!r}: constant or cosine")
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if progress:
                progress(epoch + 1, dict(logs or {}))

    started = time.monotonic()
    model.fit(
        z, y.astype(np.float32),
        epochs=config.epochs,
        batch_size=config.batch_size,
        sample_weight=sample_weight,
        shuffle=True,
        verbose=0,
        callbacks=[_Report()],
    )
    log.info("trained on %d rows (%.0f positive, weight %.1f, ahead x%.1f) in %.1fs", len(y), pos, pos_weight,
             config.ahead_weight, time.monotonic() - started)

    dense = [(np.asarray(l.kernel, np.float32), np.asarray(l.bias, np.float32)) for l in model.layers]
    # Fold standardization into layer 1: W'x + b' = W(x - m)/s + b.
    w0, b0 = dense[0]
    w0f = w0 / std[:, None]
    b0f = b0 - (mean / std) @ w0
    dense[0] = (w0f.astype(np.float32), b0f.astype(np.float32))
    # Class weight w shifts the optimal logit by log(w): remove it for calibrated probabilities.
    wl, bl = dense[-1]
    dense[-1] = (wl, (bl - math.log(pos_weight)).astype(np.float32))
    weights = MlpWeights(layers=dense)
    set_int8_inputs(weights, enc, y, config)
    return weights


def set_int8_inputs(weights: MlpWeights, enc: np.ndarray, y: np.ndarray, config: TrainConfig) -> None:
    """Set what the int8 export needs of the encoded training rows ``enc``: the calibration
    rows (:func:`calibration_set`) and each input's range (``input_range``). Training and a
    package's re-export (``models.pipeline.reexport_int8``) both call it."""
    weights.input_range = np.stack([enc.min(axis=0), enc.max(axis=0)])
    weights.calibration = calibration_set(weights, enc, y, config)


def calibration_set(weights: MlpWeights, enc: np.ndarray, y: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The int8 calibration rows of trained ``weights`` from their encoded training rows: the
    same rows for the same weights, rows and seed (a package's int8 model can be re-exported)."""
    from models.export import int8_input_range

    observed = weights.input_range if weights.input_range is not None else np.stack([enc.min(axis=0), enc.max(axis=0)])
    calib = _calibration_rows(enc, y, config, int8_input_range(observed, weights.encoding))
    # Add the rows with the highest logits, so the int8 output scale covers the risky end.
    logits = weights.logits(enc)
    order = np.argsort(logits)
    calib = np.concatenate([calib, enc[order[-50:]]])
    # Rows the model calls near-impossible (logit < CALIB_MIN_LOGIT, P < 0.03 %) are left out:
    # they stretched the output scale to about -23 and cost the ranking of forecast rows a
    # 0.16-logit int8 step; without them the step halves and int8 stays within 0.004 PR-AUC
    # ahead of float instead of 0.009 (two held-out sets, docs/model.md). They clip low: harmless.
    return calib[weights.logits(calib) >= CALIB_MIN_LOGIT]


def _calibration_rows(enc: np.ndarray, y: np.ndarray, config: TrainConfig, ends: np.ndarray) -> np.ndarray:
    """Representative encoded rows: a stratified sample, plus for every feature a real row with
    that feature set to the low end of its int8 range (``ends``, (2, F): the training range
    widened, ``models.export.int8_input_range``) and one set to the high end, so the int8 input
    and activation scales cover every column's range without inventing impossible rows."""
    rng = np.random.default_rng(config.seed)
    n = config.calibration_rows
    pos_idx = np.flatnonzero(y)
    neg_idx = np.flatnonzero(~y)
    take_pos = rng.choice(pos_idx, size=min(len(pos_idx), n // 4), replace=False)
    take_neg = rng.choice(neg_idx, size=min(len(neg_idx), n - len(take_pos)), replace=False)
    rows = [enc[np.r_[take_pos, take_neg]]]
    lo, hi = ends
    base = enc[rng.choice(len(enc), size=2 * enc.shape[1])]
    for j in range(enc.shape[1]):
        base[2 * j, j] = lo[j]
        base[2 * j + 1, j] = hi[j]
    rows.append(base)
    return np.concatenate(rows).astype(np.float32)
