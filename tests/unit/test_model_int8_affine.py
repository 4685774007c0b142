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


def test_validation_rows_whose_positives_are_all_already_empty_leave_the_output_range_unset():
    """set_logit_range leaves the range unset when the validation rows cannot pick it (no
    positive, or every positive an already-empty shelf: no forecast positive), instead of
    failing the whole training run (small lakes, a retrain on few days)."""
    from types import SimpleNamespace

    from models.pipeline import set_logit_range

    rng = np.random.default_rng(1)
    hidden = 4
    weights = MlpWeights(layers=[(rng.normal(size=(_F, hidden)).astype(np.float32), np.zeros(hidden, np.float32)),
                                 (rng.normal(size=(hidden, 1)).astype(np.float32), np.zeros(1, np.float32))])
    X = np.abs(rng.normal(size=(50, _F))).astype(np.float32)
    y = np.zeros(50, bool)
    y[:5] = True
    for empty_now in (y.copy(), np.ones(50, bool)):  # positives all empty; every row empty
        val = SimpleNamespace(rows=SimpleNamespace(X=X), y=y, empty_now=empty_now, empty_now_known=True)
        set_logit_range(weights, val)
        assert weights.logit_range is None
    # With forecast positives the range is picked.
    val = SimpleNamespace(rows=SimpleNamespace(X=X), y=y, empty_now=np.zeros(50, bool), empty_now_known=True)
    set_logit_range(weights, val)
    lo, hi = weights.logit_range
    assert lo < hi
