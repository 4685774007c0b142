"""Export a trained MLP: float and full-integer int8 TFLite (edge), ONNX (cloud).

* **TFLite int8**: every op int8 (``TFLITE_BUILTINS_INT8``), int8 input and output tensors;
  calibrated on :attr:`MlpWeights.calibration`, which spans the observed range of every input,
  so no real input clips. The output is the logit (not a sigmoid): an int8 sigmoid output has a
  fixed 1/256 step that would tie every low-risk facing at 0 and flatten the ranking.

  Two choices keep int8's ranking of forecast rows close to float's (docs/model.md, *int8*):

  * **Per-feature input scaling** (:func:`int8_input_affine`): an int8 input tensor has one
    scale for all features, so a feature spanning 0.8-1.25 (the price ratio) got 17 of its 256
    steps, and its standardized first-layer weights (about 20, ten times the others) set the
    per-channel weight scale of most hidden units, leaving the other inputs' weights coarse.
    The runtime maps each feature's int8 range (its training range with a margin,
    :func:`int8_input_range`) onto [-1, 1] before quantizing (offset and scale in the int8
    manifest, ``input_affine``) and the map is folded into the first layer, so the float
    function is unchanged and no retraining is needed.
  * **Output range** (:attr:`MlpWeights.logit_range`, :func:`int8_logit_range`): the logit is
    clipped to the span the two alert kinds rank, chosen on validation rows, instead of up to
    the highest logit of an already-empty shelf (about 30): the int8 step fell from 0.10-0.15
    to about 0.05 logit, so fewer forecast rows tie.
* **ONNX**: written directly with ``onnx.helper`` from the weights (Gemm / Relu), checked with
  ``onnx.checker``. tf2onnx is not needed for three dense layers (docs/decisions/0302).

TensorFlow and onnx are imported inside the functions: only training machines need them.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from models.features import FEATURES
from models.train import MlpWeights

__all__ = ["to_tflite", "to_onnx", "int8_input_affine", "int8_input_range", "int8_logit_range", "int8_manifest_fields",
           "weights_from_onnx", "AFFINE_SUFFIX", "INPUT_NAME", "OUTPUT_NAME", "ONNX_OPSET"]

INPUT_NAME = "features"
OUTPUT_NAME = "logit"
ONNX_OPSET = 17
#: Appended to the encoding an int8 manifest names when its inputs are scaled per feature
#: (``input_affine``): a runtime that does not know it refuses the model instead of feeding it
#: unscaled features.
AFFINE_SUFFIX = "+affine"
#: Output range (``int8_logit_range``): the lowest logit kept is this quantile of the
#: validation forecast positives' logits (rows below it tie at the floor) ...
LOGIT_FLOOR_QUANTILE = 0.005
#: ... and the highest is this quantile of the logits of validation rows whose shelf still has
#: stock: above it (about 6-9 for the shipped models) nearly every row is an already-empty
#: shelf, whose order among themselves neither alert kind uses.
LOGIT_CEILING_QUANTILE = 0.9999
#: ... and at least logit(0.99): every operating threshold up to P = 0.99 stays representable
#: (the shipped ones are 0.89-0.98), also for a weak model whose rows with stock all score low.
LOGIT_CEILING_MIN = 4.6
#: Input range (``int8_input_range``): each input's training range widened by this share of
#: its span on each side (within the feature's domain), so a store a little beyond the
#: training stores is scored as float scores it, not clipped to the training stores' end.
INPUT_MARGIN = 0.25


def int8_input_range(observed: np.ndarray, encoding: str, margin: float | None = None) -> np.ndarray:
    """(2, F): the encoded range each int8 input covers: the ``observed`` (training) range
    widened by ``margin`` (default :data:`INPUT_MARGIN`) x its span on each side, but not
    beyond what the feature can take (:func:`models.features.encoded_domain`: a count's 0, a
    planogram capacity's 0, a share's 1, the price ratio's cap of 4). Without the margin,
    held-out facings of 2-3 units (every training facing held 4 or more) were scored by int8 as
    4-unit ones while float extrapolated: int8 - float PR-AUC ahead -0.015 there
    (docs/model.md, *Beyond the training range*).

    Raises:
        ValueError: the observed range holds NaN or infinity.
    """
    from models.features import encoded_domain

    lo, hi = (np.asarray(v, dtype=np.float64) for v in observed)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("the int8 input range has non-finite values: a NaN offset would feed the model NaN")
    margin = INPUT_MARGIN if margin is None else margin
    dom_lo, dom_hi = encoded_domain(encoding)
    span = hi - lo
    # A value already beyond the domain (never, for features computed by this build) stays covered.
    return np.stack([np.minimum(lo, np.maximum(dom_lo, lo - margin * span)),
                     np.maximum(hi, np.minimum(dom_hi, hi + margin * span))])


def int8_input_affine(weights: MlpWeights) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per feature: ``(x - offset) * scale`` maps each input's int8 range
    (:func:`int8_input_range` of the training rows' range, ``weights.input_range``, else the
    calibration rows') onto [-1, 1] (a constant column keeps scale 1). Inputs outside it clip.

    Raises:
        ValueError: the range holds NaN or infinity.
    """
    if weights.input_range is not None:
        observed = np.asarray(weights.input_range, dtype=np.float64)
    else:
        calib = np.asarray(weights.calibration, dtype=np.float64)
        observed = np.stack([calib.min(axis=0), calib.max(axis=0)])
    lo, hi = int8_input_range(observed, weights.encoding)
    span = hi - lo
    scale = np.where(span > 1e-6, 2.0 / np.where(span > 1e-6, span, 1.0), 1.0)
    return ((lo + hi) / 2).astype(np.float32), scale.astype(np.float32)


def int8_logit_range(logits: np.ndarray, y: np.ndarray, empty_now: np.ndarray | None = None) -> tuple[float, float]:
    """The int8 output range, from validation rows' float logits: from the
    :data:`LOGIT_FLOOR_QUANTILE` quantile of the forecast positives (positives whose shelf is
    not empty yet; all positives when ``empty_now`` is unknown) to the
    :data:`LOGIT_CEILING_QUANTILE` quantile of the rows whose shelf still has stock, at least
    :data:`LOGIT_CEILING_MIN`.

    Raises:
        ValueError: no positive or no row with stock.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    stock = np.ones(len(y), bool) if empty_now is None else ~np.asarray(empty_now, dtype=bool)
    fc_pos = y & stock
    if not fc_pos.any() or not stock.any():
        raise ValueError("the int8 output range needs validation positives and rows with stock")
    lo = float(np.quantile(logits[fc_pos], LOGIT_FLOOR_QUANTILE))
    hi = float(np.quantile(logits[stock], LOGIT_CEILING_QUANTILE))
    return lo, max(hi, LOGIT_CEILING_MIN, lo + 1.0)


def int8_manifest_fields(weights: MlpWeights) -> dict:
    """What an int8 manifest adds for :func:`to_tflite`'s int8 model: the encoding (with
    :data:`AFFINE_SUFFIX`) and the per-feature ``input_affine`` the runtime applies."""
    offset, scale = int8_input_affine(weights)
    return {"encoding": weights.encoding + AFFINE_SUFFIX,
            "input_affine": {"offset": [float(v) for v in offset], "scale": [float(v) for v in scale]}}


def weights_from_onnx(path) -> MlpWeights:
    """The float weights of a package's ONNX export (:func:`to_onnx`), to re-export its int8
    model without retraining (calibration rows are not in the package: set them)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    n = sum(1 for name in init if name.startswith("W"))
    return MlpWeights(layers=[(np.asarray(init[f"W{i}"], np.float32), np.asarray(init[f"B{i}"], np.float32))
                              for i in range(n)])


def _keras_model(weights: MlpWeights, logit_range: tuple[float, float] | None = None):
    import keras

    layers = []
    for i, (w, _b) in enumerate(weights.layers):
        last = i == len(weights.layers) - 1
        layers.append(keras.layers.Dense(w.shape[1], activation=None if last else "relu"))
    if logit_range is not None:
        # Min / max ops share the logit's quantization: the last layer's int8 output spans it.
        lo, hi = logit_range
        layers.append(keras.layers.Lambda(lambda z: keras.ops.clip(z, lo, hi)))
    model = keras.Sequential([keras.Input(shape=(len(FEATURES),), name=INPUT_NAME)] + layers)
    for layer, (w, b) in zip(model.layers, weights.layers):
        layer.set_weights([w, b])
    return model


def _fold_input_affine(weights: MlpWeights, offset: np.ndarray, scale: np.ndarray) -> list:
    """Layers taking ``u = (x - offset) * scale`` that compute what ``weights`` compute on x."""
    (w0, b0), *rest = weights.layers
    w0 = np.asarray(w0, np.float64)
    w0u = w0 / np.asarray(scale, np.float64)[:, None]
    b0u = np.asarray(b0, np.float64) + np.asarray(offset, np.float64) @ w0
    return [(w0u.astype(np.float32), b0u.astype(np.float32))] + list(rest)


def to_tflite(weights: MlpWeights, *, int8: bool) -> bytes:
    """The model as a TFLite flatbuffer: float32, or full-integer int8 (input and output int8).

    The int8 model takes features scaled per feature (:func:`int8_manifest_fields` says how;
    its manifest must carry them) and emits the logit clipped to ``weights.logit_range`` when
    set.

    Raises:
        ValueError: int8 requested without calibration rows.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if int8:
        calib = np.asarray(weights.calibration, dtype=np.float32)
        if len(calib) == 0:
            raise ValueError("int8 export needs calibration rows covering the feature range")
        offset, scale = int8_input_affine(weights)
        calib = ((calib - offset) * scale).astype(np.float32)
        scaled = MlpWeights(layers=_fold_input_affine(weights, offset, scale), encoding=weights.encoding)
        model = _keras_model(scaled, weights.logit_range)
    else:
        model = _keras_model(weights)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:

        def representative():
            for i in range(0, len(calib), 1):
                yield [calib[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Keras' export prints the saved signature to stdout: keep the CLI's stdout for results.
    # The converter warns that int8 *inputs* lack statistics although the representative
    # dataset provides them (the input scale it sets covers the calibration range: tested).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def to_onnx(weights: MlpWeights) -> bytes:
    """The model as ONNX (opset 17): input ``features`` (n, F) float32 -> ``logit`` (n, 1).

    Raises:
        onnx.checker.ValidationError: never for a well-formed MlpWeights (checked before return).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = INPUT_NAME
    for i, (w, b) in enumerate(weights.layers):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"W{i}"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"B{i}")]
        last = i == len(weights.layers) - 1
        out = OUTPUT_NAME if last else f"h{i}"
        gemm_out = out if last else f"g{i}"
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [gemm_out], name=f"dense{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [out], name=f"relu{i}"))
        current = out
    graph = helper.make_graph(
        nodes,
        "gondola_stockout",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", len(FEATURES)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="gondola.models")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
