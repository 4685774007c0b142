"""Model rollout on a gateway, driven by its module twin: download, verify, smoke-test, swap,
report, and keep the previous model for rollback.

The cloud asks for a model by setting the module twin's desired property ``model``::

    "model": {"version": "2026-11-29T10-40-00Z-3f2a9c1b",
              "url": "https://<account>.blob.core.windows.net/models/stockout-int8.tflite?<sas>",
              "manifest_url": "https://.../stockout-int8.manifest.json?<sas>",
              "sha256": "<hex of the model file>"}

(``file://`` URLs work too, which is what the embedded hub and the tests use.) The manager:

1. downloads the manifest, then the model into ``<dir>/<version>/`` (a ``.part`` file, size
   capped, sha256 computed while streaming, renamed only when complete);
2. verifies: the file's sha256 equals the desired ``sha256`` and the manifest's, the manifest
   names the desired version, and with a key (``GONDOLA_MODEL_KEY_FILE``) the manifest's
   signature verifies (``models.package.verify_model``). Without a key only the hash is checked,
   unless ``require_signature`` is set (production), which refuses unsigned models;
3. smoke-tests: opens it (``models.runtime.open_scorer``) and scores the store's *current*
   feature matrix: one finite probability in [0, 1] per facing, or it is refused;
4. swaps atomically: ``Inference.set_scorer`` (the next cycle uses it) and ``current.json``
   (written to a temp file and renamed) names the active and the previous version, so a restart
   resumes with the same model (:meth:`ModelManager.restore`);
5. reports ``{"model": {"version", "status", "previous", "error", "updated_at", ...}}`` in the
   twin's reported properties. ``status`` is ``active``, ``failed`` (the desired model was
   refused; the running one stays), or ``rolled_back``.

Rollback: setting the desired version back to the previous one re-activates it from disk (no
download). A model that fails ``rollback_after_errors`` scoring cycles once active (the cycle
then falls back to the baseline, see ``Inference.cycle``) is rolled back automatically to the
previous model, or to the scorer the gateway was built with when there is none, and that version
is not tried again by this gateway process (publish a new version to retry). Versions other than the active
and the previous one are deleted.

Downloads run on the manager's own thread (:meth:`ModelManager.on_desired` only hands the desired
properties over), so scoring and alerts never wait on the network. URLs may carry SAS tokens:
only scheme, host and path are ever logged or reported.

Errors: :meth:`ModelManager.apply` never raises for a bad model or a failed download; it
reports ``failed`` with the reason. A failed *download* (the store's link) is retried by the
manager's thread after 30 s, doubling up to 30 min, until it succeeds or the desired property
changes; a *refused* model is not. ``ConfigError`` for a bad models directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

from gondola.clock import Clock
from gondola.errors import ConfigError, GondolaError, ModelError

__all__ = ["ModelManager", "fetch_url", "DownloadError", "DESIRED_KEY", "SHADOW_KEY"]

log = logging.getLogger(__name__)

#: The desired / reported property the manager owns.
DESIRED_KEY = "model"
#: The desired / reported property of shadow mode: a candidate scored beside the active model
#: (same spec as ``model``; absent or null: no shadow). Verified exactly as a model is.
SHADOW_KEY = "shadow"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_MAX_BYTES = 1 << 20


class DownloadError(ModelError):
    """The transfer failed (network, server): worth retrying, unlike a model that is refused."""


def _safe_url(url: str) -> str:
    """The URL without query or fragment (SAS tokens live there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def fetch_url(url: str, dest: Path, *, max_bytes: int, timeout_s: float = 60.0) -> str:
    """Stream ``url`` (``https``, ``http`` or ``file``) into ``dest``; return its sha256 (hex).

    Writes ``dest`` + ``.part`` and renames it when complete, so ``dest`` is never half a file.

    Raises:
        DownloadError: the transfer failed (retry later).
        ModelError: unsupported scheme, or larger than ``max_bytes``.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("https", "http", "file"):
        raise ModelError(f"unsupported model URL scheme {scheme!r} (https, http or file)")
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(part, "wb") as out:  # noqa: S310
            while chunk := resp.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise ModelError(f"{_safe_url(url)} is larger than {max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except ModelError:
        part.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {_safe_url(url)} failed: {getattr(exc, 'reason', exc)}") from None
    os.replace(part, dest)
    return h.hexdigest()


class ModelManager:
    """Twin-driven model rollout for one gateway (see the module docstring).

    ``inference`` is the gateway's ``edge.inference.Inference``; ``report`` patches reported
    properties (the transport's ``patch_reported``; failures there are logged, not raised).
    """

    def __init__(self, directory: str | Path, inference, *, clock: Clock, horizon_h: float,
                 key: bytes | None = None, require_signature: bool = False,
                 report: Callable[[dict], object] | None = None, follow_threshold: bool = True,
                 default_raise_at: float = 0.6,
                 max_model_bytes: int = 64 << 20, rollback_after_errors: int = 3,
                 retry_min_s: float = 30.0, retry_max_s: float = 1800.0,
                 fetch: Callable[..., str] = fetch_url):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.dir} for models: {exc.strerror}") from None
        self.inference = inference
        self.clock = clock
        self.horizon_h = horizon_h
        self.key = key
        self.require_signature = require_signature
        self.report = report
        self.follow_threshold = follow_threshold
        self.default_raise_at = default_raise_at
        self._base_scorer = inference.scorer  # what the gateway was built with: the last resort
        self.max_model_bytes = max_model_bytes
        self.rollback_after_errors = rollback_after_errors
        self.fetch = fetch
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._retry_delay_s = retry_min_s
        self._retry: tuple[float, dict] | None = None  # (monotonic due time, desired) after a failed download
        self.status: dict = {"version": None, "status": "none", "previous": None, "error": None}
        self._current: dict | None = None   # {"version", "path", "manifest"} of the active model
        self._previous: dict | None = None
        self._refused: set[tuple[str, str]] = set()  # (version, sha256) never to retry
        self._shadow: dict | None = None  # {"version", "path", "manifest"} of the shadow model
        self._refused_shadow: set[tuple[str, str]] = set()
        self.shadow_status: dict = {"version": None, "status": "none", "error": None}
        self._errors_at_activation = 0
        self._lock = threading.RLock()  # held for a whole rollout, download included
        self._pending_lock = threading.Lock()  # only ever held for an instant
        self._pending: dict | None = None
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- state on disk -------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self.dir / "current.json"

    def _save_state(self) -> None:
        state = {"active": self._current and {k: self._current[k] for k in ("version", "path")},
                 "previous": self._previous and {k: self._previous[k] for k in ("version", "path")}}
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self._state_path())

    def restore(self) -> bool:
        """Activate the model ``current.json`` names (after a restart); return whether one was.

        A model that no longer opens is logged and skipped (the gateway keeps its configured
        scorer)."""
        try:
            state = json.loads(self._state_path().read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("model manager: ignoring unreadable %s: %s", self._state_path(), exc)
            return False
        if not isinstance(state, dict):
            log.warning("model manager: ignoring %s: not a JSON object", self._state_path())
            return False
        with self._lock:
            try:
                prev = state.get("previous")
                self._previous = self._entry(prev["version"], Path(prev["path"])) if prev else None
            except (ModelError, KeyError, TypeError, OSError) as exc:
                log.warning("model manager: previous model in %s ignored: %s", self._state_path(), exc)
                self._previous = None
            active = state.get("active")
            if not active:
                return False
            try:
                entry = self._entry(active["version"], Path(active["path"]))
                self._activate(entry, self._open(entry), keep_previous=False)
            except (ModelError, KeyError, TypeError, OSError) as exc:
                log.warning("model manager: stored model %s not restored: %s", active.get("version"), exc)
                return False
            self._set_status("active")
            return True

    def _entry(self, version: str, path: Path) -> dict:
        from models.runtime import read_manifest_beside

        return {"version": version, "path": str(path), "manifest": read_manifest_beside(path)}

    # ---- the desired property ------------------------------------------------------------

    def start(self) -> None:
        """Start the download thread (``on_desired`` hands work to it)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def on_desired(self, desired: dict) -> None:
        """Transport callback: queue the latest desired properties for the manager's thread.
        Never waits for a rollout in progress (it is called from the scoring cycle)."""
        with self._pending_lock:
            self._pending = desired
            self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until queued desired properties were applied; return whether they were."""
        return self._idle.wait(timeout)

    def _schedule_retry(self, desired: dict) -> None:
        """Try ``desired`` again after the current delay (doubling up to ``retry_max_s``), unless
        newer desired properties arrive first."""
        self._retry_delay_s = min(self._retry_delay_s * 2, self.retry_max_s) if self._retry else self.retry_min_s
        self._retry = (time.monotonic() + self._retry_delay_s, desired)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._pending_lock:
                retry = self._retry
                if self._pending is None and retry is not None and time.monotonic() >= retry[0]:
                    self._pending = retry[1]
                elif self._pending is not None:
                    self._retry = None  # newer desired properties replace a pending retry
                desired, self._pending = self._pending, None
            if desired is not None:
                try:
                    self.apply(desired)
                except Exception:  # the thread must survive anything a twin can say
                    log.exception("model manager: applying desired properties failed")
            with self._pending_lock:
                if self._pending is None:
                    self._idle.set()

    def apply(self, desired: dict) -> dict:
        """Bring the gateway to the model ``desired["model"]`` names, and the shadow model to
        ``desired["shadow"]`` (none when absent); return the model status reported.

        Idempotent: the active version, or a version refused before with the same sha256, is
        not fetched again. Never raises for a bad model or a failed download.
        """
        status = self._apply_model(desired)
        self._apply_shadow(desired.get(SHADOW_KEY) if isinstance(desired, dict) else None)
        return status

    def _apply_shadow(self, spec) -> dict:
        """Start, replace or stop the shadow model; report ``shadow`` status. A shadow that
        fails to download or verify is reported ``failed`` and never affects the model."""
        with self._lock:
            if not spec:
                if self._shadow is not None or self.inference.shadow is not None:
                    self.inference.set_shadow(None)
                    self._shadow = None
                    return self._set_shadow_status("none")
                return self.shadow_status
            try:
                version, url, manifest_url, sha = self._check_spec(spec)
            except ModelError as exc:
                return self._set_shadow_status("failed", str(spec.get("version") if isinstance(spec, dict) else spec),
                                               str(exc))
            if (self._shadow and self._shadow["version"] == version) or (version, sha) in self._refused_shadow:
                return self.shadow_status
            try:
                entry = self._download(version, url, manifest_url, sha, report=False)
                scorer = self._open(entry)
            except ModelError as exc:
                if not isinstance(exc, DownloadError):
                    self._refused_shadow.add((version, sha))
                log.warning("model manager: shadow %s refused: %s", version, exc)
                return self._set_shadow_status("failed", version, str(exc))
            self.inference.set_shadow(scorer, raise_at=self._threshold(scorer) or self.default_raise_at)
            self._shadow = entry
            log.info("model manager: %s scoring in shadow beside %s", version,
                     self._current["version"] if self._current else self.inference.scorer.name)
            return self._set_shadow_status("active", version)

    def _set_shadow_status(self, status: str, version: str | None = None, error: str | None = None) -> dict:
        self.shadow_status = {"version": version, "status": status, "error": error,
                              "updated_at": self.clock.now_ms()}
        if self.report is not None:
            try:
                self.report({SHADOW_KEY: self.shadow_status})
            except GondolaError as exc:
                log.info("shadow status report deferred: %s", exc)
        return self.shadow_status

    def _apply_model(self, desired: dict) -> dict:
        """``apply``'s work for the ``model`` property."""
        spec = desired.get(DESIRED_KEY) if isinstance(desired, dict) else None
        if not spec:
            return self.status
        with self._lock:
            try:
                version, url, manifest_url, sha = self._check_spec(spec)
            except ModelError as exc:
                return self._fail(str(spec.get("version") if isinstance(spec, dict) else spec), str(exc))
            if self._current and self._current["version"] == version:
                return self.status
            if (version, sha) in self._refused:
                return self.status
            if self._previous and self._previous["version"] == version:
                try:
                    entry = self._previous
                    self._activate(entry, self._open(entry, sha=sha))
                    log.info("model manager: %s re-activated from disk (rollback asked by the twin)", version)
                    return self._set_status("active")
                except ModelError as exc:
                    log.warning("model manager: previous model %s unusable (%s); downloading it", version, exc)
            try:
                entry = self._download(version, url, manifest_url, sha)
                scorer = self._open(entry)  # _download checked the sha256 while streaming
                self._activate(entry, scorer)
            except DownloadError as exc:
                # The store's link, not the model: the manager's thread tries again later.
                self._schedule_retry(desired)
                return self._fail(version, f"{exc}; retrying in {self._retry_delay_s:.0f} s")
            except ModelError as exc:
                self._refused.add((version, sha))
                return self._fail(version, str(exc))
            self._retry = None
            self._retry_delay_s = self.retry_min_s
            self._prune()
            log.info("model manager: %s active (previous: %s)", version,
                     self._previous and self._previous["version"])
            return self._set_status("active")

    def _check_spec(self, spec) -> tuple[str, str, str, str]:
        if not isinstance(spec, dict):
            raise ModelError("desired 'model' must be an object")
        version, url, sha = spec.get("version"), spec.get("url"), spec.get("sha256")
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ModelError(f"desired model version {version!r} is not a plain version name")
        if not isinstance(url, str) or not url:
            raise ModelError("desired model has no url")
        if not isinstance(sha, str) or not _SHA_RE.match(sha.lower()):
            raise ModelError("desired model has no sha256 (64 hex characters)")
        manifest_url = spec.get("manifest_url")
        if manifest_url is None:
            # Default: the manifest beside the file, as models.package writes it.
            parts = urllib.parse.urlsplit(url)
            stem = parts.path.rsplit("/", 1)
            base = stem[-1].rsplit(".", 1)[0]
            path = (stem[0] + "/" if len(stem) == 2 else "") + base + ".manifest.json"
            manifest_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        if not isinstance(manifest_url, str):
            raise ModelError("desired model manifest_url must be a string")
        return version, url, manifest_url, sha.lower()

    # ---- steps ---------------------------------------------------------------------------

    def _download(self, version: str, url: str, manifest_url: str, sha: str, *, report: bool = True) -> dict:
        if report:
            self._set_status("downloading", desired=version)
        vdir = self.dir / version
        vdir.mkdir(parents=True, exist_ok=True)
        mpath = vdir / "download.manifest.json"
        self.fetch(manifest_url, mpath, max_bytes=_MANIFEST_MAX_BYTES)
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as exc:
            raise ModelError(f"manifest of {version} is not JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise ModelError(f"manifest of {version} is not an object")
        if manifest.get("version") != version:
            raise ModelError(f"manifest names version {manifest.get('version')!r}, desired is {version!r}")
        if str(manifest.get("sha256", "")).lower() != sha:
            raise ModelError("manifest sha256 differs from the desired sha256")
        suffix = Path(str(manifest.get("file", ""))).suffix
        if suffix not in (".tflite", ".onnx"):
            raise ModelError(f"manifest names a {suffix or 'suffix-less'} file; .tflite or .onnx expected")
        path = vdir / f"model{suffix}"
        declared = manifest.get("bytes")
        if declared is not None and (type(declared) is not int or declared <= 0):
            raise ModelError(f"manifest of {version} declares {declared!r} bytes")
        got = self.fetch(url, path, max_bytes=min(self.max_model_bytes, declared or self.max_model_bytes))
        if got != sha:
            path.unlink(missing_ok=True)
            raise ModelError(f"downloaded file has sha256 {got[:12]}..., desired {sha[:12]}...")
        # The runtime reads the manifest beside the file: NAME.manifest.json.
        os.replace(mpath, vdir / "model.manifest.json")
        return {"version": version, "path": str(path), "manifest": manifest}

    def _open(self, entry: dict, sha: str | None = None):
        """Verify, open and smoke-test on the store's current features; return the scorer.

        Raises:
            ModelError: why it is refused.
        """
        from models.package import file_sha256
        from models.runtime import open_scorer

        path, manifest = Path(entry["path"]), entry["manifest"]
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        if sha is not None and file_sha256(path) != sha:
            raise ModelError(f"{path.name} on disk does not match sha256 {sha[:12]}...")
        signed = isinstance(manifest, dict) and isinstance(manifest.get("signature"), dict)
        if self.key is None and self.require_signature:
            raise ModelError("signed models are required but no model key is configured")
        if self.key is not None and not signed:
            raise ModelError(f"{entry['version']} is not signed")
        scorer = open_scorer(path, self.horizon_h, key=self.key, manifest=manifest)
        threshold = getattr(scorer, "threshold", None)
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
            raise ModelError(f"{entry['version']} has operating threshold {threshold!r}, outside (0, 1]")
        feats = self.inference.features(self.clock.now_ms())
        if len(feats):
            try:
                probs = np.asarray(scorer.score(feats), dtype=np.float64).reshape(-1)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{entry['version']} failed on the store's features: {exc}") from None
            if probs.shape[0] != len(feats) or not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
                raise ModelError(f"{entry['version']} gave {probs.shape[0]} scores for {len(feats)} facings, "
                                 "or scores outside [0, 1]")
        return scorer

    def _activate(self, entry: dict, scorer, keep_previous: bool = True) -> None:
        if keep_previous and self._current and self._current["version"] != entry["version"]:
            self._previous = self._current
        self.inference.set_scorer(scorer, raise_at=self._threshold(scorer))
        self._current = entry
        self._errors_at_activation = self.inference.scorer_errors
        self._save_state()

    def _threshold(self, scorer) -> float | None:
        """The alert threshold to use with ``scorer``: its manifest's operating threshold (else
        ``default_raise_at``) when the gateway follows the model's, None to keep the setting."""
        if not self.follow_threshold:
            return None
        return getattr(scorer, "threshold", None) or self.default_raise_at

    def _prune(self) -> None:
        keep = {e["version"] for e in (self._current, self._previous, self._shadow) if e}
        for child in self.dir.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    # ---- watching the active model -------------------------------------------------------

    def after_cycle(self) -> dict | None:
        """Call after each scoring cycle: roll back a model that keeps failing. Return the new
        status when it rolled back, else None. Skipped while a rollout holds the manager (the
        cycle never waits on a download); the failures are still counted for the next cycle."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._check_failures()
        finally:
            self._lock.release()

    def _check_failures(self) -> dict | None:
        """``after_cycle``'s work; the caller holds the lock."""
        if not self._current:
            return None
        failures = self.inference.scorer_errors - self._errors_at_activation
        if failures < self.rollback_after_errors:
            return None
        bad = self._current
        sha = str((bad.get("manifest") or {}).get("sha256", "")).lower()
        self._refused.add((bad["version"], sha))
        reason = f"{bad['version']} failed {failures} scoring cycles"
        self._current = None
        if self._previous:
            try:
                prev = self._previous
                self._previous = None
                self._activate(prev, self._open(prev), keep_previous=False)
                self._previous = bad
                return self._set_status("rolled_back", error=reason)
            except ModelError as exc:
                reason += f"; previous {prev['version']} unusable too ({exc})"
        # No previous model: back to what the gateway was configured with.
        self.inference.set_scorer(self._base_scorer, raise_at=self._threshold(self._base_scorer))
        self._errors_at_activation = self.inference.scorer_errors
        self._save_state()
        return self._set_status("rolled_back", error=f"{reason}; using {self._base_scorer.name}")

    # ---- reporting -----------------------------------------------------------------------

    def _fail(self, version: str, error: str) -> dict:
        log.warning("model manager: %s refused: %s", version, error)
        return self._set_status("failed", error=error, desired=version)

    def _set_status(self, status: str, *, error: str | None = None, desired: str | None = None) -> dict:
        """Record and report ``status``; ``desired`` defaults to the active version."""
        self.status = {
            "version": self._current["version"] if self._current else None,
            "status": status,
            "previous": self._previous["version"] if self._previous else None,
            "scorer": self.inference.scorer.name,
            "desired": desired or (self._current["version"] if self._current else None),
            "error": error,
            "updated_at": self.clock.now_ms(),
        }
        if status == "rolled_back":
            log.warning("model manager: rolled back, now scoring with %s: %s", self.status["scorer"], error)
        if self.report is not None:
            try:
                self.report({DESIRED_KEY: self.status})
            except GondolaError as exc:
                log.info("model status report deferred: %s", exc)
        return self.status
