"""The int8 per-feature input scaling (``input_affine``): what the export writes and what the
runtime accepts. A manifest scaling must be finite with non-zero scales, or the runtime would
feed the int8 model NaN (quantized to an arbitrary int8) and still pass the smoke test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gondola.errors import ModelError
from models.export import AFFINE_SUFFIX, int8_input_affine, int8_input_range
from models.features import FEATURE_DOMAIN, FEATURES, MODEL_ENCODING, encode_for_model, encoded_domain
from models.runtime import _check_manifest
from models.train import MlpWeights

_F = len(FEATURES)


def _manifest(offset, scale) -> dict:
    return {"features": list(FEATURES), "encoding": MODEL_ENCODING + AFFINE_SUFFIX, "horizon_h": 2.0,
            "input_affine": {"offset": offset, "scale": scale}}


def test_a_constant_feature_keeps_scale_one_and_the_others_map_their_int8_range_onto_minus_one_one():
    lo = np.zeros(_F)
    hi = np.linspace(1.0, 5.0, _F)
    hi[3] = lo[3] = 0.7  # constant column
    observed = np.stack([lo, hi])
    offset, scale = int8_input_affine(MlpWeights(layers=[], input_range=observed))
    assert scale[3] == 1.0 and offset[3] == pytest.approx(0.7)
    varying = np.arange(_F) != 3
    ends = int8_input_range(observed, MODEL_ENCODING)
    np.testing.assert_allclose(((ends[0] - offset) * scale)[varying], -1.0, atol=1e-6)
    np.testing.assert_allclose(((ends[1] - offset) * scale)[varying], 1.0, atol=1e-6)
    # The training range lies inside; an input unbounded above (a count) keeps room beyond it.
    top = (hi - offset) * scale
    assert (top[varying] <= 1.0 + 1e-6).all() and top[FEATURES.index("units_est")] == pytest.approx(0.6)


def test_the_int8_range_widens_the_training_range_by_the_margin_within_each_features_domain():
    """A store unlike the training stores (facings of 2-3 units where every training facing held
    4 or more, a deeper promotion) is scored by int8 as float scores it, as far as the margin
    reaches; no range runs past what the feature can take (a count's 0, a share's 1)."""
    i = {n: k for k, n in enumerate(FEATURES)}
    lo, hi = encode_for_model(np.zeros((1, _F)))[0].astype(np.float64), np.ones(_F)
    raw_lo, raw_hi = np.zeros((1, _F)), np.ones((1, _F))
    raw_lo[0, i["capacity"]], raw_hi[0, i["capacity"]] = 4, 32
    raw_lo[0, i["price_ratio"]], raw_hi[0, i["price_ratio"]] = 0.8, 1.25
    raw_hi[0, i["units_est"]] = 40
    raw_lo[0, i["hours_since_restock"]], raw_hi[0, i["hours_since_restock"]] = 0.0, 168.0
    raw_lo[0, i["hour_sin"]] = -1.2  # beyond its domain (never computed so): still covered
    lo, hi = (encode_for_model(r)[0].astype(np.float64) for r in (raw_lo, raw_hi))
    got_lo, got_hi = int8_input_range(np.stack([lo, hi]), MODEL_ENCODING, margin=0.25)
    cap_span = np.log1p(32) - np.log1p(4)
    assert got_lo[i["capacity"]] == pytest.approx(np.log1p(4) - 0.25 * cap_span)  # a facing of 2.1 units
    assert got_hi[i["capacity"]] == pytest.approx(np.log1p(32) + 0.25 * cap_span)
    assert (got_lo[i["price_ratio"]], got_hi[i["price_ratio"]]) == pytest.approx((0.6875, 1.3625))
    # Clamped by the domain: a count does not go below 0, hours not past the 168 h cap, a
    # flag not past 0 .. 1.
    assert got_lo[i["units_est"]] == 0.0 and got_hi[i["units_est"]] == pytest.approx(1.25 * np.log1p(40))
    assert (got_lo[i["hours_since_restock"]], got_hi[i["hours_since_restock"]]) == pytest.approx((0.0, np.log1p(168)))
    assert (got_lo[i["has_sensor"]], got_hi[i["has_sensor"]]) == (0.0, 1.0)
    assert got_lo[i["hour_sin"]] == pytest.approx(-1.2)
    # margin 0: the training range as it is (the export before this change).
    np.testing.assert_allclose(int8_input_range(np.stack([lo, hi]), MODEL_ENCODING, margin=0.0), np.stack([lo, hi]))


def test_every_feature_has_a_domain_and_its_encoded_bounds_are_ordered():
    assert list(FEATURE_DOMAIN) == list(FEATURES)
    dom_lo, dom_hi = encoded_domain()
    assert (dom_lo < dom_hi).all() and np.isfinite(dom_lo).all()
    assert dom_lo[FEATURES.index("capacity")] == 0.0  # a planogram may give a facing no capacity
    assert dom_hi[FEATURES.index("price_ratio")] == 4.0


def test_every_feature_of_odd_histories_lies_within_its_domain_as_the_model_sees_it():
    """A facing of capacity 0 (fill_ratio divides by 1), customer returns (rates below 0, which
    the encoding takes as 0), a price 10 x the usual one (price_ratio capped at 4): the computed
    features stay within FEATURE_DOMAIN once encoded, so the int8 range, clamped to it, does
    not clip what the features can be (review: capacity's domain started at 1 unit, price_ratio's
    had no cap)."""
    from models.replay import Facing, StoreFeatures

    t0, h = 1_760_000_000_000 - 1_760_000_000_000 % 86_400_000, 3_600_000
    store = StoreFeatures("s", [Facing("f0", "A", 0, True), Facing("f1", "B", 12, False)])
    for k in range(30):
        store.sale(t0 + k * h, "A", 1.0, "sale", 100)
        store.sale(t0 + k * h, "B", 1.0, "sale", 100)
    store.sale(t0 + 30 * h, "A", -3.0, "return", 100)
    store.sale(t0 + 30 * h, "B", 1.0, "sale", 1000)
    store.reading(t0 + 31 * h, "f0", 3.0, 80.0, 750.0)
    X = np.concatenate([store.matrix(t0 + 31 * h), store.matrix(t0 + 40 * h)])
    i = {n: k for k, n in enumerate(FEATURES)}
    assert X[0, i["capacity"]] == 0.0 and X[1, i["price_ratio"]] == 4.0
    enc = encode_for_model(X).astype(np.float64)
    dom_lo, dom_hi = encoded_domain()
    assert (enc >= dom_lo - 1e-6).all() and (enc <= dom_hi + 1e-6).all(), \
        [FEATURES[k] for k in np.flatnonzero(((enc < dom_lo - 1e-6) | (enc > dom_hi + 1e-6)).any(axis=0))]


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
