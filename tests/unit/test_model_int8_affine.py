"""The int8 per-feature input scaling (``input_affine``): what the export writes and what the
runtime accepts. A manifest scaling must be finite with non-zero scales, or the runtime would
feed the int8 model NaN (quantized to an arbitrary int8) and still pass the smoke test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gondola.errors import ModelError
from models.export import AFFINE_SUFFIX, int8_input_affine
from models.features import FEATURES, MODEL_ENCODING
from models.runtime import _check_manifest
from models.train import MlpWeights

_F = len(FEATURES)


def _manifest(offset, scale) -> dict:
    return {"features": list(FEATURES), "encoding": MODEL_ENCODING + AFFINE_SUFFIX, "horizon_h": 2.0,
            "input_affine": {"offset": offset, "scale": scale}}


def test_a_constant_feature_keeps_scale_one_and_the_others_map_onto_minus_one_one():
    lo = np.zeros(_F)
    hi = np.linspace(1.0, 5.0, _F)
    hi[3] = lo[3] = 0.7  # constant column
    offset, scale = int8_input_affine(MlpWeights(layers=[], input_range=np.stack([lo, hi])))
    assert scale[3] == 1.0 and offset[3] == pytest.approx(0.7)
    varying = np.arange(_F) != 3
    np.testing.assert_allclose(((lo - offset) * scale)[varying], -1.0, atol=1e-6)
    np.testing.assert_allclose(((hi - offset) * scale)[varying], 1.0, atol=1e-6)


def test_an_input_range_with_nan_is_refused_instead_of_written_as_a_nan_offset():
    lo, hi = np.zeros(_F), np.ones(_F)
    hi[5] = np.nan
    with pytest.raises(ValueError, match="input range"):
        int8_input_affine(MlpWeights(layers=[], input_range=np.stack([lo, hi])))


def test_the_runtime_accepts_a_finite_scaling_and_refuses_nan_or_zero_scales():
    ok = _manifest([0.0] * _F, [1.0] * _F)
    assert _check_manifest(ok, 2.0, Path("m.tflite"))[0] == 2.0
    for offset, scale in (([None] * _F, [1.0] * _F), ([0.0] * _F, [float("nan")] * _F),
                          ([0.0] * _F, [1.0] * (_F - 1) + [0.0]), ([0.0] * _F, ["x"] * _F)):
        with pytest.raises(ModelError, match="input_affine"):
            _check_manifest(_manifest(offset, scale), 2.0, Path("m.tflite"))
