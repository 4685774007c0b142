"""The model registry on MLflow (``mlflow-skinny``'s client), for a head office that runs an
MLflow tracking server: the same role as :class:`models.registry.DeltaModelRegistry`, mapped
onto MLflow's own concepts so the MLflow UI shows it natively:

* a Gondola version is a **model version** of one registered model (default
  ``gondola-stockout``): ``source`` = the artifact folder, tags ``gondola.version``,
  ``gondola.status``, ``gondola.ring``, and the registration's details (metrics, training
  tables, code version, artifacts with sha256, signature) as the JSON tag ``gondola.details``
  (split into several tags past MLflow's tag length); the status is also an **alias**
  (``production``, ``canary``), MLflow's replacement for stages;
* every event (registration, status change, retrain / drift / rollout / shadow decision,
  rollout claims) is a **run** of the experiment ``<model>-registry`` with tags ``kind``,
  ``version``, ``status``, ``ring``, ``reason`` and its details as the JSON artifact
  ``details.json``. A version's state and history are the fold of its runs in event order,
  as in the Delta table.

Order: each run is numbered after the runs that were there when it was written (tag ``n``);
runs are ordered by that number, then start time, then run id. MLflow has no commit order, so
two writers appending at once can take the same number and are then settled by start time and
run id: the same answer for every reader, but not "first written". The Delta registry keeps
true commit order; prefer it for concurrent rollouts.

Selected by ``GONDOLA_MLFLOW_TRACKING_URI`` (:func:`models.registry.open_registry`).

Errors: ``ConfigError`` as the Delta registry; ``StorageError`` for MLflow failures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from gondola.errors import StorageError
from models.registry import EventLogRegistry, ModelVersion

__all__ = ["MlflowModelRegistry"]

_TAG_CHUNK = 4000  # MLflow accepts at least 5,000 characters per tag value


class MlflowModelRegistry(EventLogRegistry):
    """The registry role on an MLflow tracking server (or a ``sqlite:`` / ``file:`` store)."""

    def __init__(self, tracking_uri: str, *, model_name: str = "gondola-stockout", clock=None):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.name = model_name
        if clock is not None:
            self._now = clock.now_ms
        self._experiment_id: str | None = None

    # ---- storage: runs ---------------------------------------------------------------------

    def _call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise StorageError(f"MLflow: cannot {what}: {exc}") from exc

    def _experiment(self) -> str:
        if self._experiment_id is None:
            name = f"{self.name}-registry"
            exp = self._call("read the experiment", self.client.get_experiment_by_name, name)
            self._experiment_id = exp.experiment_id if exp else self._call(
                "create the experiment", self.client.create_experiment, name)
        return self._experiment_id

    def _append(self, rows: list[dict]) -> int:
        """Each row as a finished run, numbered after the runs already there (tag ``n``)."""
        exp = self._experiment()
        base = len(self._runs())
        ids = []
        for i, row in enumerate(rows):
            tags = {"kind": row["kind"], "version": row["version"] or "", "status": row["status"] or "",
                    "ring": row["ring"] or "", "reason": (row["reason"] or "")[:4000], "n": str(base + i)}
            run = self._call("start a run", self.client.create_run, exp, start_time=row["at_ms"], tags=tags)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "details.json"
                path.write_text(row["details_json"])
                self._call("store details", self.client.log_artifact, run.info.run_id, str(path))
            self._call("end a run", self.client.set_terminated, run.info.run_id, "FINISHED", end_time=row["at_ms"])
            ids.append(run.info.run_id)
        return next(e["commit"] for e in self._events() if e["run_id"] == ids[-1])

    def _runs(self) -> list:
        exp = self._experiment()
        runs, token = [], None
        while True:
            page = self._call("search runs", self.client.search_runs, [exp], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        return runs

    def _events(self) -> list[dict]:
        runs = self._runs()
        runs.sort(key=lambda r: (int(r.data.tags.get("n", "0")), r.info.start_time, r.info.run_id))
        out = []
        for i, r in enumerate(runs):
            t = r.data.tags
            local = self._call("read details", self.client.download_artifacts, r.info.run_id, "details.json")
            out.append({"at_ms": r.info.start_time, "kind": t.get("kind"), "version": t.get("version", ""),
                        "status": t.get("status") or None, "ring": t.get("ring") or None,
                        "reason": t.get("reason", ""), "details": json.loads(Path(local).read_text()),
                        "commit": i, "run_id": r.info.run_id})
        return out

    # ---- MLflow's own view: model versions, tags, aliases ------------------------------------

    def register(self, version: ModelVersion, reason: str = "") -> None:
        """Raises: ConfigError when the version is already registered."""
        super().register(version, reason)
        if not self._call("read the registered model", self.client.search_registered_models, f"name = '{self.name}'"):
            self._call("create the registered model", self.client.create_registered_model, self.name)
        details = {k: getattr(version, k) for k in ("metrics", "training", "code_version", "artifacts", "signature")}
        text = json.dumps(details, sort_keys=True, default=str)
        tags = {"gondola.version": version.version, "gondola.status": version.status or "candidate",
                "gondola.ring": ""}
        for i in range(0, len(text), _TAG_CHUNK):
            tags[f"gondola.details.{i // _TAG_CHUNK}"] = text[i:i + _TAG_CHUNK]
        source = Path(((version.artifacts or {}).get("int8") or {}).get("path", ".")).resolve().parent.as_uri()
        self._call("create a model version", self.client.create_model_version, self.name, source, tags=tags,
                   description=reason or "registered")

    def set_status(self, version: str, status: str, reason: str, *, ring: str | None = None) -> None:
        """As the Delta registry; then the model versions' tags and aliases follow."""
        super().set_status(version, status, reason, ring=ring)
        self._sync()

    def _sync(self) -> None:
        """Tags and aliases (``production``, ``canary``) follow the folded state: stale aliases
        are dropped first, then set, so an alias moving between versions is never lost."""
        state = {v.version: v for v in self.versions()}
        hits = self._call("search model versions", self.client.search_model_versions, f"name = '{self.name}'")
        pairs = [(mv, state[mv.tags.get("gondola.version")]) for mv in hits if mv.tags.get("gondola.version") in state]
        for mv, v in pairs:
            if mv.tags.get("gondola.status") != v.status or mv.tags.get("gondola.ring", "") != (v.ring or ""):
                self._call("tag a model version", self.client.set_model_version_tag, self.name, mv.version,
                           "gondola.status", v.status)
                self._call("tag a model version", self.client.set_model_version_tag, self.name, mv.version,
                           "gondola.ring", v.ring or "")
            for alias in set(mv.aliases or []) & {"production", "canary"}:
                if alias != v.status:
                    self._call("drop an alias", self.client.delete_registered_model_alias, self.name, alias)
        for mv, v in pairs:
            if v.status in ("production", "canary"):
                self._call("set an alias", self.client.set_registered_model_alias, self.name, v.status, mv.version)
