"""Stock-out models: features (one definition for edge and cloud), baselines, training, export, evaluation.

What the other packages use (``docs/model.md`` explains each):

* ``models.features``: ``FEATURES``, ``FacingState``, ``feature_matrix``, ``FeatureCache``, ``encode_for_model``
* ``models.replay``: ``StoreFeatures`` (gateway routing), ``features_from_silver`` (cloud), ``label_rows``
* ``models.scoring``: the ``Scorer`` role, ``PoissonScorer`` (fallback), ``ZeroSalesScorer``, ``BaselineScorer``
* ``models.runtime``: ``LiteRtScorer``, ``OnnxScorer``, ``load_scorer``, ``DEFAULT_MODEL``
* ``models.package``: ``write_manifest``, ``verify_model`` (model rollout)
* ``models.evaluation``: ``match_alerts``, ``match_episodes``, ``hysteresis_alerts``
* ``models.cli``: ``gondola train`` / ``gondola eval``

Nothing here imports TensorFlow, onnx or deltalake at import time: training-only code imports
them inside the functions that need them, so a gateway needs only numpy and LiteRT.
"""
