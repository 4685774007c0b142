"""Model runtimes behind the ``Scorer`` role: LiteRT (edge, int8 or float) and onnxruntime (cloud).

Each scores every facing of a cycle in one batched call: raw features (n, F) are encoded
(:func:`models.features.encode_for_model`), scaled per feature when the manifest says so
(``input_affine``, int8 models), quantized with the model's own input scale and zero point
when the model is int8, run in one ``invoke``, dequantized and passed through a sigmoid (the
models emit logits; ``models.export`` says why).

``load_scorer`` is what the gateway calls: it returns a model scorer when a model file is
given and loads, and otherwise the Poisson baseline, saying which in one log line.

Vendor runtimes are imported inside the constructors: ``ai_edge_litert`` first, the
``tflite_runtime`` package (same ``Interpreter`` API) when LiteRT is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gondola.errors import ModelError
from models.export import AFFINE_SUFFIX
from models.features import FEATURES, MODEL_ENCODING, MODEL_ENCODINGS, encode_for_model
from models.alert_budget import AlertBudget
from models.scoring import DEFAULT_HORIZON_H, PoissonScorer, Scorer

__all__ = ["LiteRtScorer", "OnnxScorer", "open_scorer", "load_scorer", "read_manifest_beside", "DEFAULT_MODEL"]

log = logging.getLogger(__name__)
_F = len(FEATURES)

#: The int8 model shipped with the package (trained on simulated stores by ``gondola train``
#: with the defaults; unsigned, 8.5 KB). A gateway may start with it until the model manager
#: rolls out a signed one; docs/model.md gives its held-out figures.
DEFAULT_MODEL = Path(__file__).parent / "artifacts" / "stockout-int8.tflite"


#: An int8 model whose input range ends below this was exported with per-feature input scaling
#: (inputs in [-1, 1]); without scaling the encoded hours alone reach log1p(168) ~ 5.1.
_AFFINE_INPUT_MAX = 2.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z.astype(np.float64), -60.0, 60.0)))


def read_manifest_beside(path: str | Path) -> dict | None:
    """The manifest written next to a model file (``NAME.manifest.json``), or None."""
    from models.package import manifest_path_for, read_manifest

    mpath = manifest_path_for(path)
    return read_manifest(mpath) if mpath.exists() else None


def _valid_affine(affine) -> bool:
    """A manifest's ``input_affine``: ``_F`` finite offsets and ``_F`` finite non-zero scales."""
    if not isinstance(affine, dict):
        return False
    try:
        offset, scale = (np.asarray(affine.get(k), dtype=np.float64) for k in ("offset", "scale"))
    except (TypeError, ValueError):
        return False
    return (offset.shape == (_F,) and scale.shape == (_F,) and bool(np.isfinite(offset).all())
            and bool(np.isfinite(scale).all()) and bool((scale != 0).all()))


def _check_manifest(manifest: dict | None, horizon_h: float | None, path: Path) -> tuple[float, str, float | None]:
    """(horizon, name, operating threshold) from the manifest, checked against expectations."""
    if manifest is None:
        return (horizon_h or DEFAULT_HORIZON_H), f"model:{path.stem}", None
    if list(manifest.get("features", FEATURES)) != list(FEATURES):
        raise ModelError(f"{path.name}: model was trained on other features than this build computes")
    encoding = str(manifest.get("encoding", MODEL_ENCODING))
    if encoding.removesuffix(AFFINE_SUFFIX) not in MODEL_ENCODINGS:
        raise ModelError(f"{path.name}: model expects encoding {manifest.get('encoding')!r}, this build knows "
                         f"{', '.join(MODEL_ENCODINGS)} (each also with {AFFINE_SUFFIX})")
    if encoding.endswith(AFFINE_SUFFIX) and not _valid_affine(manifest.get("input_affine")):
        raise ModelError(f"{path.name}: encoding {encoding!r} needs input_affine offset and scale for {_F} features "
                         "(finite numbers, scales not 0)")
    model_h = float(manifest.get("horizon_h", horizon_h or DEFAULT_HORIZON_H))
    if horizon_h is not None and abs(model_h - horizon_h) > 1e-9:
        raise ModelError(f"{path.name}: model predicts a {model_h} h horizon, {horizon_h} h was asked for")
    return model_h, f"model:{manifest.get('version', path.stem)}", manifest.get("threshold")


def _model_inputs(scorer, features: np.ndarray) -> np.ndarray:
    """Raw features -> the model's float inputs: encoded, then scaled per feature if it says so."""
    x = encode_for_model(features, scorer.encoding)
    if scorer.input_affine is not None:
        offset, scale = scorer.input_affine
        x = (x - offset) * scale
    return x


def _manifest_extras(scorer, manifest: dict | None) -> None:
    """The feature encoding and per-kind thresholds a manifest names (older ones: v1, one kind)."""
    encoding = (manifest or {}).get("encoding", "log1p-v1" if manifest else MODEL_ENCODING)
    scorer.encoding = encoding.removesuffix(AFFINE_SUFFIX)
    #: Per-feature (offset, scale) applied after encoding, or None (models.export: int8 models).
    affine = (manifest or {}).get("input_affine") if encoding.endswith(AFFINE_SUFFIX) else None
    scorer.input_affine = None if affine is None else (np.asarray(affine["offset"], np.float32),
                                                        np.asarray(affine["scale"], np.float32))
    per_kind = (manifest or {}).get("thresholds")
    scorer.thresholds = {str(k): float(v) for k, v in per_kind.items()} if isinstance(per_kind, dict) else None
    #: The model's score is also the empty_now evidence of facings without a (believed) sensor.
    scorer.empty_now_from_model = bool((manifest or {}).get("empty_now_from_model", False))
    #: The alert budget per store-day (models.alert_budget; an older manifest: the defaults).
    try:
        scorer.alert_budget = AlertBudget.from_manifest(manifest)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"manifest alert_budget: {exc}") from exc


class LiteRtScorer:
    """A TFLite model (int8 or float32) run by the LiteRT interpreter, one invoke per batch.

    Raises (constructor):
        ModelError: no interpreter installed, the file is not a loadable model, its input is
            not (n, len(FEATURES)), or its manifest disagrees with this build.
    """

    def __init__(self, path: str | Path, horizon_h: float | None = None, *, manifest: dict | None = None,
                 num_threads: int = 1):
        self.path = Path(path)
        manifest = manifest if manifest is not None else read_manifest_beside(self.path)
        self.horizon_h, self.name, self.threshold = _check_manifest(manifest, horizon_h, self.path)
        _manifest_extras(self, manifest)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter  # same API, older package
            except ImportError:
                raise ModelError("no TFLite interpreter: install ai-edge-litert (or tflite-runtime)") from None
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load {self.path.name}: {exc}") from None
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        if len(inp["shape"]) != 2 or int(inp["shape"][1]) != _F:
            raise ModelError(f"{self.path.name}: input shape {list(inp['shape'])}, expected [n, {_F}]")
        self._in_idx, self._out_idx = inp["index"], out["index"]
        self._in_dtype, self._out_dtype = inp["dtype"], out["dtype"]
        self._in_q = inp.get("quantization", (0.0, 0))
        self._out_q = out.get("quantization", (0.0, 0))
        self.int8 = self._in_dtype == np.int8
        if self.int8 and self.input_affine is None:
            # An int8 export scaled per feature (models.export) takes inputs in [-1, 1]; one
            # that is not spans the encoded hours (log1p(168) ~ 5.1). Fed unscaled features
            # (its manifest missing or stripped of input_affine) it would score silently wrong.
            scale, zero = self._in_q
            if scale and (127 - zero) * scale < _AFFINE_INPUT_MAX:
                raise ModelError(f"{self.path.name}: int8 inputs span {(-128 - zero) * scale:.2f} .. "
                                 f"{(127 - zero) * scale:.2f}, a per-feature scaled model, but no manifest "
                                 f"input_affine (encoding ...{AFFINE_SUFFIX}) says how to scale them")
        self._n = -1

    def _resize(self, n: int) -> None:
        if n != self._n:
            self._interp.resize_tensor_input(self._in_idx, [n, _F], strict=False)
            self._interp.allocate_tensors()
            self._n = n

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Raw features (n, F) -> logits (n,), one invoke."""
        x = _model_inputs(self, features)
        n = len(x)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        self._resize(n)
        if self.int8:
            scale, zero = self._in_q
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        self._interp.set_tensor(self._in_idx, x.astype(self._in_dtype, copy=False))
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_idx)[:, 0]
        if self._out_dtype == np.int8:
            scale, zero = self._out_q
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float64)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, len(FEATURES)) raw features -> (n,) stock-out probabilities within the horizon."""
        return _sigmoid(self.logits(features))


class OnnxScorer:
    """An ONNX model run by onnxruntime (cloud-side scoring, float32).

    Raises (constructor):
        ModelError: onnxruntime missing, or the file is not a loadable model for these features.
    """

    def __init__(self, path: str | Path, horizon_h: float | None = None, *, manifest: dict | None = None,
                 num_threads: int = 1):
        self.path = Path(path)
        manifest = manifest if manifest is not None else read_manifest_beside(self.path)
        self.horizon_h, self.name, self.threshold = _check_manifest(manifest, horizon_h, self.path)
        _manifest_extras(self, manifest)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("onnxruntime is not installed") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot load {self.path.name}: {exc}") from None
        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 2 or inp.shape[1] != _F:
            raise ModelError(f"{self.path.name}: input shape {inp.shape}, expected [n, {_F}]")
        self._input = inp.name

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = _model_inputs(self, features)
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        return self._session.run(None, {self._input: x})[0][:, 0].astype(np.float64)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, len(FEATURES)) raw features -> (n,) stock-out probabilities within the horizon."""
        return _sigmoid(self.logits(features))


def open_scorer(path: str | Path, horizon_h: float | None = DEFAULT_HORIZON_H, *, key: bytes | None = None,
                manifest: dict | None = None) -> Scorer:
    """Open, verify and smoke-test one model file; raise when it cannot be used.

    ``manifest`` defaults to the one beside the file. With ``key``, the manifest must verify
    (size, sha256 and signature) first. ``.tflite`` runs on LiteRT, ``.onnx`` on onnxruntime.

    Raises:
        ModelError: unverifiable, unloadable, unknown format, or the smoke test (one row of
            zeros must give one finite probability) failed.
    """
    path = Path(path)
    try:
        if manifest is None:
            manifest = read_manifest_beside(path)
        if key is not None:
            from models.package import verify_model

            if manifest is None:
                raise ModelError(f"{path.name}: no manifest to verify against")
            verify_model(path, manifest, key)
        if path.suffix == ".tflite":
            scorer: Scorer = LiteRtScorer(path, horizon_h, manifest=manifest)
        elif path.suffix == ".onnx":
            scorer = OnnxScorer(path, horizon_h, manifest=manifest)
        else:
            raise ModelError(f"{path.name}: unknown model format (expected .tflite or .onnx)")
        probe = scorer.score(np.zeros((1, _F), dtype=np.float32))
        if probe.shape != (1,) or not np.isfinite(probe).all():
            raise ModelError(f"{path.name}: smoke test gave {probe!r}")
    except (ValueError, RuntimeError, OSError) as exc:
        # Interpreters raise ValueError / RuntimeError from invoke: a model that cannot score
        # a probe row is as unusable as one that does not load.
        raise ModelError(f"{path.name}: {exc}") from exc
    return scorer


def load_scorer(path: str | Path | None, horizon_h: float = DEFAULT_HORIZON_H, *,
                key: bytes | None = None) -> Scorer:
    """The scorer a gateway should use: the model at ``path`` if it loads, else the baseline.

    ``.tflite`` files run on LiteRT, ``.onnx`` files on onnxruntime. With ``key``, the model's
    manifest (``NAME.manifest.json``) must verify (sha256 and signature) first. Never raises
    for a bad model: it logs why (see :func:`open_scorer`) and returns :class:`PoissonScorer`.
    """
    if path is None:
        log.info("scorer: no model configured, using the Poisson baseline (horizon %.1f h)", horizon_h)
        return PoissonScorer(horizon_h)
    path = Path(path)
    try:
        scorer = open_scorer(path, horizon_h, key=key)
    except ModelError as exc:
        log.warning("scorer: model not used (%s); falling back to the Poisson baseline", exc)
        return PoissonScorer(horizon_h)
    log.info("scorer: %s from %s (horizon %.1f h)", scorer.name, path.name, scorer.horizon_h)
    return scorer
