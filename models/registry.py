"""Model registry: every model version, what it was trained on, how good it was, where it stands.

One append-only Delta table in the lake, ``<lake>/models/registry`` (``models.registry``), with
change data feed on: each row is an event (``register``, ``status``, ``retrain``, ``rollout``)
and the state of a version is the fold of its events in commit order (``_commit_version``).
Append-only keeps concurrent writers safe (Delta appends never conflict) and keeps the
history: who promoted what, when and why, and every retraining decision whether it passed
or not. The commit order also settles races: of two rollouts claimed at once, the claim
committed first wins (:meth:`DeltaModelRegistry.claim`).

A version holds: metrics (held-out figures of the gate), training (table names and Delta
versions, rows, seeds), code version (``git describe``, else the package version), artifacts
(int8 TFLite, float TFLite, ONNX: path, sha256, bytes, format), the signature's algorithm and
key id, and its status::

    candidate --(rollout)--> canary --(every ring passed / promote)--> production --> retired
        \\______________________ retire / rolled back ______________________________/

Only one version is ``production`` at a time: promoting one retires the previous one.
``ModelRegistry`` is the role; ``DeltaModelRegistry`` the lake implementation (an MLflow model
registry adapter would implement the same five methods). ``models`` does not import ``cloud``:
the Delta table is read and written with ``deltalake`` directly.

Errors: ``ConfigError`` for an unknown version or status, or a transition the rules forbid;
``StorageError`` when the table cannot be read or written.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from gondola.errors import ConfigError, StorageError

__all__ = [
    "STATUSES",
    "REGISTRY_TABLE",
    "ModelVersion",
    "ModelRegistry",
    "DeltaModelRegistry",
    "EventLogRegistry",
    "open_registry",
    "code_version",
    "register_package",
    "artifact_file",
    "PACKAGE_FILES",
]

STATUSES = ("candidate", "canary", "production", "retired")
REGISTRY_TABLE = "models.registry"
#: kind -> file name in a package folder written by ``models.pipeline.export_model``.
PACKAGE_FILES = {"int8": "stockout-int8.tflite", "float": "stockout-float.tflite", "onnx": "stockout.onnx"}

#: status -> statuses it may move to. ``retired`` may come back (a human rolls back by hand).
_MOVES = {
    "candidate": {"canary", "production", "retired"},
    "canary": {"production", "retired", "candidate"},
    "production": {"retired"},
    "retired": {"candidate", "canary", "production"},
}


@dataclass
class ModelVersion:
    """One registered model version and its state (folded from the registry's events)."""

    version: str
    status: str
    registered_at_ms: int
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    code_version: str = ""
    artifacts: dict = field(default_factory=dict)
    signature: dict | None = None
    ring: str | None = None
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class ModelRegistry(Protocol):
    """The registry role: versions, their status, and decision records."""

    def register(self, version: ModelVersion, reason: str = "") -> None: ...
    def set_status(self, version: str, status: str, reason: str, *, ring: str | None = None) -> None: ...
    def versions(self) -> list[ModelVersion]: ...
    def record(self, kind: str, details: Mapping[str, Any], *, version: str = "") -> int: ...
    def records(self, kind: str) -> list[dict]: ...


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed package version."""
    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if res.returncode == 0 and res.stdout.strip():
            return "git:" + res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "pkg:" + version("gondola")
    except Exception:  # noqa: BLE001 - not installed: say so rather than fail
        return "unknown"


#: The registry table's columns: (name, type, description); the data catalog lists them.
COLUMNS = (
    ("at_ms", "int64", "when the entry was appended, epoch ms"),
    ("kind", "string", "what happened: register, status change, claim, decision"),
    ("version", "string", "model version the entry is about"),
    ("status", "string", "status after the entry: candidate, canary, production, retired"),
    ("ring", "string", "rollout ring the entry concerns (canary, early, all), if any"),
    ("reason", "string", "why (a gate decision, a rollback, an operator's note)"),
    ("details_json", "string", "metrics, training table versions, code version, artifacts with sha256 (JSON)"),
)


def _schema():
    import pyarrow as pa

    types = {"int64": pa.int64(), "string": pa.string()}
    return pa.schema([(name, types[kind]) for name, kind, _ in COLUMNS])


class EventLogRegistry:
    """The registry role over an append-only log of events; a subclass stores the log:
    ``_append(rows)`` (returns the position of the last row) and ``_events()`` (every event in
    order, each with ``details`` and ``commit``). Delta here; MLflow in ``models.registry_mlflow``."""

    def _now(self) -> int:
        return int(time.time() * 1000)

    def _append(self, rows: list[dict]) -> int:
        raise NotImplementedError

    def _events(self) -> list[dict]:
        raise NotImplementedError

    def _row(self, kind: str, version: str, *, status=None, ring=None, reason="", details=None) -> dict:
        return {"at_ms": self._now(), "kind": kind, "version": version, "status": status, "ring": ring,
                "reason": reason, "details_json": json.dumps(details or {}, sort_keys=True, default=str)}

    # ---- the role --------------------------------------------------------------------------

    def register(self, version: ModelVersion, reason: str = "") -> None:
        """Add a version (status ``candidate`` unless given).

        Raises:
            ConfigError: the version is already registered.
        """
        if any(v.version == version.version for v in self.versions()):
            raise ConfigError(f"model {version.version} is already registered")
        details = {k: getattr(version, k) for k in ("metrics", "training", "code_version", "artifacts", "signature")}
        self._append([self._row("register", version.version, status=version.status or "candidate",
                                reason=reason or "registered", details=details)])

    def versions(self) -> list[ModelVersion]:
        """Every version, newest registration first."""
        out: dict[str, ModelVersion] = {}
        for e in self._events():
            if e["kind"] == "register":
                d = e["details"]
                out[e["version"]] = ModelVersion(
                    version=e["version"], status=e["status"], registered_at_ms=e["at_ms"],
                    metrics=d.get("metrics") or {}, training=d.get("training") or {},
                    code_version=d.get("code_version") or "", artifacts=d.get("artifacts") or {},
                    signature=d.get("signature"),
                    history=[{"at_ms": e["at_ms"], "status": e["status"], "reason": e["reason"]}])
            elif e["kind"] == "status" and e["version"] in out:
                v = out[e["version"]]
                v.status, v.ring = e["status"], e["ring"]
                v.history.append({"at_ms": e["at_ms"], "status": e["status"], "ring": e["ring"],
                                  "reason": e["reason"]})
        return sorted(out.values(), key=lambda v: (v.registered_at_ms, v.version), reverse=True)

    def get(self, version: str) -> ModelVersion:
        """Raises: ConfigError for an unknown version."""
        for v in self.versions():
            if v.version == version:
                return v
        raise ConfigError(f"no model version {version!r} in the registry")

    def production(self) -> ModelVersion | None:
        return next((v for v in self.versions() if v.status == "production"), None)

    def set_status(self, version: str, status: str, reason: str, *, ring: str | None = None) -> None:
        """Move a version to ``status``, recording why. Promoting to ``production`` retires the
        previous production version in the same commit.

        Raises:
            ConfigError: unknown version or status, or a move the rules forbid.
        """
        if status not in STATUSES:
            raise ConfigError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        current = self.get(version)
        if status == current.status and ring == current.ring:
            return
        if status != current.status and status not in _MOVES[current.status]:
            raise ConfigError(f"model {version} is {current.status}; it cannot become {status}")
        rows = []
        if status == "production":
            for other in self.versions():
                if other.status == "production" and other.version != version:
                    rows.append(self._row("status", other.version, status="retired",
                                          reason=f"replaced by {version}"))
        rows.append(self._row("status", version, status=status, ring=ring, reason=reason))
        self._append(rows)

    def record(self, kind: str, details: Mapping[str, Any], *, version: str = "", reason: str = "") -> int:
        """Append a decision record (``retrain``, ``rollout``, ``drift``); return its commit."""
        if kind in ("register", "status"):
            raise ConfigError(f"{kind!r} records are written by register / set_status")
        return self._append([self._row(kind, version, reason=reason, details=dict(details))])

    def records(self, kind: str) -> list[dict]:
        """Decision records of one kind, oldest first: ``{at_ms, version, reason, details, commit}``."""
        return [{k: e[k] for k in ("at_ms", "version", "reason", "details", "commit")}
                for e in self._events() if e["kind"] == kind]

    def claim(self, what: str, details: Mapping[str, Any]) -> tuple[bool, dict]:
        """Claim ``what`` (e.g. ``"rollout"``) for one writer: append a claim, then read every open
        claim; the one committed first wins. Returns ``(won, winning_claim)``. The winner ends
        its claim with :meth:`release`; a claim never released blocks others (release by hand:
        ``gondola models rollout --abort``).
        """
        claim_id = uuid.uuid4().hex
        self.record(f"{what}-claim", {**details, "claim_id": claim_id})
        winner = self.open_claim(what)
        assert winner is not None  # ours is open at least
        return winner["details"]["claim_id"] == claim_id, winner

    def open_claim(self, what: str) -> dict | None:
        """The first-committed claim of ``what`` not released yet, or None."""
        released = {r["details"].get("claim_id") for r in self.records(f"{what}-release")}
        open_ = [r for r in self.records(f"{what}-claim") if r["details"]["claim_id"] not in released]
        return open_[0] if open_ else None

    def release(self, what: str, claim_id: str, reason: str) -> None:
        self.record(f"{what}-release", {"claim_id": claim_id}, reason=reason)



class DeltaModelRegistry(EventLogRegistry):
    """The registry as an append-only Delta table under a lake root (local folder or a URI
    ``deltalake`` opens with ``storage_options``)."""

    def __init__(self, lake_root: str | Path, *, storage_options: Mapping[str, str] | None = None, clock=None):
        self.uri = f"{str(lake_root).rstrip('/')}/models/registry"
        self.options = dict(storage_options) if storage_options else None
        if clock is not None:
            self._now = clock.now_ms

    # ---- storage ---------------------------------------------------------------------------

    def _append(self, rows: list[dict]) -> int:
        import pyarrow as pa
        from deltalake import DeltaTable, write_deltalake

        table = pa.Table.from_pylist(rows, schema=_schema())
        try:
            write_deltalake(self.uri, table, mode="append", storage_options=self.options,
                            configuration={"delta.enableChangeDataFeed": "true"})
            return int(DeltaTable(self.uri, storage_options=self.options).version())
        except Exception as exc:  # deltalake raises several types; translate at the boundary
            raise StorageError(f"cannot write {REGISTRY_TABLE} at {self.uri}: {exc}") from exc

    def _events(self) -> list[dict]:
        """Every event, in commit order, each with its ``commit`` (Delta version)."""
        import pyarrow as pa
        from deltalake import DeltaTable

        try:
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
                return []
            dt = DeltaTable(self.uri, storage_options=self.options)
            table = pa.table(dt.load_cdf(starting_version=0).read_all())
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"cannot read {REGISTRY_TABLE} at {self.uri}: {exc}") from exc
        rows = table.select(["at_ms", "kind", "version", "status", "ring", "reason", "details_json",
                             "_commit_version"]).to_pylist()
        for r in rows:
            r["commit"] = r.pop("_commit_version")
            r["details"] = json.loads(r.pop("details_json") or "{}")
        rows.sort(key=lambda r: r["commit"])
        return rows


def open_registry(lake_root: str | Path, *, storage_options: Mapping[str, str] | None = None, env=None):
    """The registry a command uses: MLflow's when ``GONDOLA_MLFLOW_TRACKING_URI`` is set (a
    tracking server, or a ``sqlite:`` / ``file:`` store), else the lake's Delta table."""
    import os

    env = os.environ if env is None else env
    uri = env.get("GONDOLA_MLFLOW_TRACKING_URI")
    if uri:
        from models.registry_mlflow import MlflowModelRegistry

        return MlflowModelRegistry(uri, model_name=env.get("GONDOLA_MLFLOW_MODEL", "gondola-stockout"))
    return DeltaModelRegistry(lake_root, storage_options=storage_options)


def register_package(registry, package_dir: str | Path, artifact_root: str | Path, *,
                     metrics: Mapping[str, Any], training: Mapping[str, Any] | None = None,
                     reason: str = "") -> ModelVersion:
    """Copy a package folder's artifacts (int8, and float and ONNX when there, with their manifests) to
    ``artifact_root/<version>/`` and register it as a candidate.

    Raises:
        ModelError: a file is missing, or its sha256 differs from its manifest.
        ConfigError: the version is already registered, or the manifests disagree on it.
    """
    from gondola.errors import ModelError
    from models.package import file_sha256, manifest_path_for, read_manifest

    package_dir = Path(package_dir)
    manifests = {}
    for kind, name in PACKAGE_FILES.items():
        path = package_dir / name
        if not path.is_file():
            if kind == "int8":  # the gateways' model; float and ONNX are optional
                raise ModelError(f"package {package_dir} lacks {name}")
            continue
        manifests[kind] = read_manifest(manifest_path_for(path))
        if file_sha256(path) != manifests[kind].get("sha256"):
            raise ModelError(f"{name}: sha256 differs from its manifest")
    versions = {m.get("version") for m in manifests.values()}
    if len(versions) != 1:
        raise ConfigError(f"package {package_dir} mixes versions {sorted(map(str, versions))}")
    version = versions.pop()
    # A remote artifact root (the lake on ADLS) gets no copy: the registry row carries the
    # gateways' int8 file itself (tens of KB) and every manifest, so any machine can publish it.
    local = "://" not in str(artifact_root)
    dest = Path(artifact_root) / version
    if local:
        dest.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for kind, m in manifests.items():
        name = PACKAGE_FILES[kind]
        if local:
            for src in (package_dir / name, manifest_path_for(package_dir / name)):
                shutil.copyfile(src, dest / src.name)
        artifacts[kind] = {"path": str(dest / name) if local else None, "sha256": m["sha256"], "bytes": m["bytes"],
                           "format": m.get("format"), "threshold": m.get("threshold"), "manifest": m}
        if kind == "int8":
            artifacts[kind]["b64"] = base64.b64encode((package_dir / name).read_bytes()).decode()
    sig = manifests["int8"].get("signature")
    mv = ModelVersion(version=version, status="candidate", registered_at_ms=0, metrics=dict(metrics),
                      training=dict(training or manifests["int8"].get("training") or {}),
                      code_version=code_version(), artifacts=artifacts,
                      signature={"alg": sig.get("alg"), "key_id": sig.get("key_id")} if sig else None)
    registry.register(mv, reason=reason)
    return registry.get(version)


def artifact_file(mv: ModelVersion, kind: str = "int8", cache_dir: str | Path | None = None) -> Path:
    """A local file of a version's artifact, with its manifest beside it: the registered copy
    when this machine has it, else written from the bytes the registry row carries (into
    ``cache_dir``, default a ``gondola-models`` folder in the temp directory). The caller
    checks the sha256 (a file on disk may have been changed since).

    Raises:
        ModelError: neither a file nor the bytes are there.
    """
    import tempfile

    from gondola.errors import ModelError
    from models.package import manifest_path_for

    art = (mv.artifacts or {}).get(kind) or {}
    if art.get("path") and Path(art["path"]).is_file():
        return Path(art["path"])
    if not art.get("b64") or not art.get("manifest"):
        raise ModelError(f"model {mv.version}: artifact {art.get('path') or kind} is missing")
    dest = Path(cache_dir or Path(tempfile.gettempdir()) / "gondola-models") / mv.version / PACKAGE_FILES[kind]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(base64.b64decode(art["b64"]))
    manifest_path_for(dest).write_text(json.dumps(art["manifest"], indent=2, sort_keys=True) + "\n")
    return dest
