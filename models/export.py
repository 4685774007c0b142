"""Export a trained MLP: float and full-integer int8 TFLite (edge), ONNX (cloud).

* **TFLite int8**: every op int8 (``TFLITE_BUILTINS_INT8``), int8 input and output tensors;
  calibrated on :attr:`MlpWeights.calibration`, which spans the observed range of every input,
  so no real input clips. The output is the logit (not a sigmoid): an int8 sigmoid output has a
  fixed 1/256 step that would tie every low-risk facing at 0 and flatten the ranking.
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

__all__ = ["to_tflite", "to_onnx", "INPUT_NAME", "OUTPUT_NAME", "ONNX_OPSET"]

INPUT_NAME = "features"
OUTPUT_NAME = "logit"
ONNX_OPSET = 17


def _keras_model(weights: MlpWeights):
    import keras

    layers = []
    for i, (w, _b) in enumerate(weights.layers):
        last = i == len(weights.layers) - 1
        layers.append(keras.layers.Dense(w.shape[1], activation=None if last else "relu"))
    model = keras.Sequential([keras.Input(shape=(len(FEATURES),), name=INPUT_NAME)] + layers)
    for layer, (w, b) in zip(model.layers, weights.layers):
        layer.set_weights([w, b])
    return model


def to_tflite(weights: MlpWeights, *, int8: bool) -> bytes:
    """The model as a TFLite flatbuffer: float32, or full-integer int8 (input and output int8).

    Raises:
        ValueError: int8 requested without calibration rows.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    model = _keras_model(weights)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        calib = np.asarray(weights.calibration, dtype=np.float32)
        if len(calib) == 0:
            raise ValueError("int8 export needs calibration rows covering the feature range")

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
