"""Push a retrained model to store gateways: upload the package, then write each gateway's twin.

The gateway side is ``edge.model_manager`` (decision 0205): it follows the module twin's
desired property ``model`` = ``{"version", "url", "manifest_url", "sha256"}``. This module is
the cloud side of that contract::

    from cloud.rollout import FolderModelStore, publish_model, rollout_status
    store = FolderModelStore("out/models")            # or cloud.azure.models.BlobModelStore
    publish_model("out/model/stockout-int8.tflite", store=store, twins=LocalHub("out/hub.sqlite"),
                  device_ids=["gw-s001", "gw-s002"], key=signing_key_or_None)
    rollout_status(twins, ["gw-s001", "gw-s002"])     # what each gateway reports back

``twins`` is anything with ``get_twin(device_id, module_id)`` and
``set_desired(device_id, module_id, desired)``: the embedded hub (``gondola.hub.LocalHub``) or
``cloud.azure.twins.IotHubTwinRegistry``. Other desired properties of a twin are kept; only
``model`` is replaced. Which gateways get a model (a canary ring first) is the caller's choice:
``IotHubTwinRegistry.modules(module_id, condition="tags.ring = 'canary'")`` lists them.

Errors: ``ModelError`` when the package is inconsistent (sha256, size) or, with a key, its
signature does not verify: nothing is uploaded and no twin is written. Twin errors as the twin
store raises them (``TransportError``, ``ConfigError``), after the twins before were written.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

from gondola.errors import ModelError

__all__ = ["ModelStore", "FolderModelStore", "publish_model", "rollout_status", "DEFAULT_MODULE_ID",
           "RINGS", "ring_devices", "tag_ring", "stores_running", "LiveFigures", "LakeLiveFigures",
           "RolloutPolicy", "Rollout", "SHADOW_SCORER"]

#: The scorer name of a shadow model's would-be alerts (``gondola.contracts.SHADOW_PREFIX``).
SHADOW_SCORER = "shadow:model:{version}"

log = logging.getLogger(__name__)

#: The gateway's IoT Edge module (as ``edge.transport.DEFAULT_MODULE_ID``; cloud does not import edge).
DEFAULT_MODULE_ID = "gondola-gateway"


class ModelStore(Protocol):
    def put(self, version: str, model_path: Path, manifest_path: Path) -> tuple[str, str]:
        """Store both files under ``version``; return ``(model_url, manifest_url)`` a gateway
        can download (with whatever credentials the URLs must carry)."""
        ...


class FolderModelStore:
    """Models in a folder, fetched as ``file://`` URLs: the embedded hub's store (one machine,
    or a share every gateway mounts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, version: str, model_path: Path, manifest_path: Path) -> tuple[str, str]:
        dest = self.root / version
        dest.mkdir(parents=True, exist_ok=True)
        urls = []
        for src in (model_path, manifest_path):
            target = dest / src.name
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(target)
            urls.append(target.resolve().as_uri())
        return urls[0], urls[1]


def _check_package(model_path: Path, key: bytes | None) -> tuple[dict[str, Any], Path]:
    from models.package import file_sha256, manifest_path_for, read_manifest, verify_model

    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    manifest_path = manifest_path_for(model_path)
    manifest = read_manifest(manifest_path)
    if key is not None:
        verify_model(model_path, manifest, key)  # size, sha256 and signature
    elif file_sha256(model_path) != manifest.get("sha256"):
        raise ModelError(f"{model_path.name}: sha256 differs from its manifest")
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        raise ModelError(f"{manifest_path.name} has no version")
    if manifest.get("file") not in (None, model_path.name):
        raise ModelError(f"{manifest_path.name} describes {manifest.get('file')!r}, not {model_path.name!r}")
    return manifest, manifest_path


def publish_model(model_path: str | Path, *, store: ModelStore, twins, device_ids: Iterable[str],
                  module_id: str = DEFAULT_MODULE_ID, key: bytes | None = None, prop: str = "model") -> dict[str, Any]:
    """Upload a model package and point each gateway's twin at it; return what was done.

    With ``key`` the package must verify before anything leaves (the gateways verify again).
    ``prop="shadow"`` asks the gateways to score it in shadow mode instead (beside their model,
    no alerts raised, would-be alerts uplinked under the scorer ``shadow:model:<version>``).

    Raises:
        ModelError: the package is inconsistent or does not verify (nothing was written).
        TransportError, ConfigError: from the twin store, for the first twin that failed.
    """
    model_path = Path(model_path)
    manifest, manifest_path = _check_package(model_path, key)
    version = manifest["version"]
    url, manifest_url = store.put(version, model_path, manifest_path)
    spec = {"version": version, "url": url, "manifest_url": manifest_url, "sha256": manifest["sha256"]}
    written = []
    for device_id in device_ids:
        desired = {k: v for k, v in twins.get_twin(device_id, module_id)["desired"].items() if not k.startswith("$")}
        desired[prop] = spec
        twins.set_desired(device_id, module_id, desired)
        written.append(device_id)
        log.info("rollout: %s asked to run model %s%s", device_id, version, " in shadow" if prop == "shadow" else "")
    return {"version": version, "sha256": manifest["sha256"], "signed": "signature" in manifest,
            "devices": written}


def rollout_status(twins, device_ids: Iterable[str], module_id: str = DEFAULT_MODULE_ID) -> dict[str, Any]:
    """What each gateway reports about the model it was asked to run.

    Returns ``{"devices": {device_id: {"desired", "version", "status", "error"}}, "by_status":
    {status: count}}``; ``status`` is the gateway's (``active``, ``failed``, ``rolled_back``,
    ``downloading``) or ``pending`` while its report does not name the desired version yet.
    """
    devices: dict[str, dict] = {}
    for device_id in device_ids:
        twin = twins.get_twin(device_id, module_id)
        desired = (twin["desired"].get("model") or {}).get("version")
        reported = twin["reported"].get("model") or {}
        status = reported.get("status", "pending")
        if desired and desired not in (reported.get("version"), reported.get("desired")):
            status = "pending"
        devices[device_id] = {"desired": desired, "version": reported.get("version"), "status": status,
                              "error": reported.get("error")}
    by_status: dict[str, int] = {}
    for d in devices.values():
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return {"devices": devices, "by_status": by_status}


# ---- rings -------------------------------------------------------------------------------------

#: Rollout rings, in order. A gateway's ring is its module twin's tag ``ring``; untagged gateways
#: are in ``all``. Each stage targets its ring and every ring before it.
RINGS = ("canary", "early", "all")


def ring_devices(twins, ring: str, module_id: str = DEFAULT_MODULE_ID) -> list[str]:
    """Gateways a rollout stage targets: ``canary`` = tagged canary; ``early`` = canary + early;
    ``all`` = every gateway with a twin. ``twins.modules(module_id, tags=...)`` answers (the
    embedded hub, or IoT Hub's twin query ``tags.ring = '...'``).

    Raises:
        ConfigError: an unknown ring.
    """
    from gondola.errors import ConfigError

    if ring not in RINGS:
        raise ConfigError(f"unknown ring {ring!r} (one of {', '.join(RINGS)})")
    if ring == "all":
        return sorted(twins.modules(module_id))
    out: set[str] = set()
    for r in RINGS[: RINGS.index(ring) + 1]:
        out |= set(twins.modules(module_id, tags={"ring": r}))
    return sorted(out)


def tag_ring(twins, device_ids: Iterable[str], ring: str, module_id: str = DEFAULT_MODULE_ID) -> list[str]:
    """Put gateways in a ring: tag ``ring`` on the module twin (what :func:`ring_devices` and a
    model rollout read) and on the device twin (what the layered IoT Edge deployments of
    ``edge.manifest`` target with ``tags.ring='canary'``), so a store's model ring and its
    deployment ring are one. Raises: ConfigError for an unknown ring."""
    from gondola.errors import ConfigError

    if ring not in RINGS:
        raise ConfigError(f"unknown ring {ring!r} (one of {', '.join(RINGS)})")
    done = []
    for device_id in device_ids:
        twins.set_device_tags(device_id, {"ring": ring})
        twins.set_tags(device_id, module_id, {"ring": ring})
        done.append(device_id)
    return done


def stores_running(twins, module_id: str = DEFAULT_MODULE_ID) -> dict[str, list[str]]:
    """``{model version: [device ids]}`` from what each gateway reports it runs (gateways that
    report no model are under ``"-"``)."""
    out: dict[str, list[str]] = {}
    for device_id in twins.modules(module_id):
        reported = twins.get_twin(device_id, module_id)["reported"].get("model") or {}
        out.setdefault(reported.get("version") or "-", []).append(device_id)
    return out


# ---- live figures ------------------------------------------------------------------------------


class LiveFigures(Protocol):
    """Live alert quality of one scorer on some gateways over a time window."""

    def figures(self, scorer: str, device_ids: list[str], since_ms: int, until_ms: int) -> dict:
        """``{"alerts", "true_alerts", "precision", "store_days", "false_per_store_day"}``."""
        ...


def _store_of(device_id: str) -> str:
    return device_id[3:] if device_id.startswith("gw-") else device_id


class LakeLiveFigures:
    """Figures from the lake's ``gold.model_performance`` (alerts confirmed by a later empty
    shelf reading within the alert's horizon, or on facings without a sensor by a gap scan or a
    refill; per store, day and scorer). Its ``alerts`` are the judged ones: an alert nobody could
    judge (no sensor, no evidence: ``unobserved``) counts neither for nor against a model."""

    def __init__(self, lake_root: str | Path, storage_options: dict | None = None):
        self.uri = f"{str(lake_root).rstrip('/')}/gold/model_performance"
        self.options = storage_options

    def figures(self, scorer: str, device_ids: list[str], since_ms: int, until_ms: int) -> dict:
        from deltalake import DeltaTable

        from gondola.clock import DAY_MS
        from gondola.errors import StorageError

        stores = {_store_of(d) for d in device_ids}
        try:
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
                rows = []
            else:
                rows = DeltaTable(self.uri, storage_options=self.options).to_pyarrow_table(
                    columns=["store_id", "day_ms", "scorer", "alerts", "true_alerts"]).to_pylist()
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise StorageError(f"cannot read gold.model_performance at {self.uri}: {exc}") from exc
        first_day = since_ms - since_ms % DAY_MS
        mine = [r for r in rows if r["scorer"] == scorer and r["store_id"] in stores
                and first_day <= r["day_ms"] < until_ms]
        alerts = sum(r["alerts"] or 0 for r in mine)
        true = sum(r["true_alerts"] or 0 for r in mine)
        store_days = len(stores) * max(until_ms - since_ms, 0) / DAY_MS
        return {"alerts": alerts, "true_alerts": true, "precision": true / alerts if alerts else None,
                "store_days": round(store_days, 3),
                "false_per_store_day": (alerts - true) / store_days if store_days else None}


# ---- the rollout controller --------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutPolicy:
    """When a ring's live figures hold. Windows are in hours of the controller's clock."""

    window_h: float = 24.0           # each judged ring (canary, early) runs this long
    min_alerts: int = 10             # fewer candidate alerts than this: not enough evidence yet
    max_wait_windows: int = 3        # still no evidence after this many windows: roll back
    max_precision_drop: float = 0.05  # candidate precision >= production's - this
    max_false_ratio: float = 1.25    # candidate false alerts / store-day <= production's x this
    false_slack: float = 0.5         # ... + this (few alerts make ratios jumpy)
    max_scorer_errors: int = 0       # scoring cycles that failed on the candidate's gateways
    max_latency_ratio: float = 2.0   # candidate scoring ms per 1,000 facings <= production's x this
    latency_slack_ms: float = 2.0    # ... + this (sub-millisecond calls make ratios jumpy)


class Rollout:
    """Moves one registered model version through the rings, by itself.

    ``start(version)`` claims the rollout (one at a time fleet-wide: the claim committed first
    to the registry wins), verifies the artifact against the registry (sha256) and the key, and
    points the canary ring at it. ``step()``, called on a schedule, judges the current ring:

    * a gateway of the ring refused or rolled back the model, or reports scoring errors:
      roll back at once;
    * the ring has run ``window_h``: compare its live figures with production's on the
      gateways outside the ring over the same window (comparable stores, same hours); hold ->
      next ring (after ``early``: every gateway, and the version becomes ``production``);
      worse -> roll back; not enough alerts -> wait (up to ``max_wait_windows``, then roll back).

    Rolling back points the ring's gateways at the production version again (each keeps it on
    disk as its previous model) and retires the candidate with the reason. Every decision is
    a ``rollout`` record in the registry with its figures.
    """

    def __init__(self, registry, twins, store: ModelStore, *, figures: LiveFigures, clock,
                 module_id: str = DEFAULT_MODULE_ID, key: bytes | None = None,
                 policy: RolloutPolicy = RolloutPolicy()):
        self.registry, self.twins, self.store, self.figures = registry, twins, store, figures
        self.clock, self.module_id, self.key, self.policy = clock, module_id, key, policy

    def _record(self, version: str, decision: str, reason: str, **details) -> dict:
        out = {"version": version, "decision": decision, "reason": reason, **details}
        self.registry.record("rollout", out, version=version, reason=reason)
        log.info("rollout %s: %s (%s)", version, decision, reason)
        return out

    def _artifact(self, mv) -> Path:
        """The version's int8 file, checked against the registry's sha256.

        Raises:
            ModelError: missing, or not the bytes that were registered (tampered).
        """
        from models.package import file_sha256
        from models.registry import artifact_file

        art = (mv.artifacts or {}).get("int8") or {}
        path = artifact_file(mv, "int8")
        if file_sha256(path) != art.get("sha256"):
            raise ModelError(f"model {mv.version}: artifact {path.name} is not the file that was registered "
                             "(sha256 differs): refused")
        return path

    def _publish(self, mv, device_ids: list[str]) -> dict:
        return publish_model(self._artifact(mv), store=self.store, twins=self.twins, device_ids=device_ids,
                             module_id=self.module_id, key=self.key)

    def start(self, version: str, *, shadow_first: bool = False) -> dict:
        """Begin rolling ``version`` out to the canary ring; return the decision record.

        ``shadow_first``: the canary gateways first score it in shadow (no alerts raised) for a
        window; only when its would-be alerts hold against production's on the same gateways
        does it go live there (``step``), else it is retired without ever raising an alert.

        Raises:
            ConfigError: unknown version, one that is not a candidate (or retired), or no
                gateway tagged ``ring=canary``.
            ModelError: the artifact was tampered with or does not verify with the key.
        """
        from gondola.errors import ConfigError

        mv = self.registry.get(version)
        if mv.status not in ("candidate", "retired"):
            raise ConfigError(f"model {version} is {mv.status}; only a candidate can be rolled out")
        try:
            self._artifact(mv)
        except ModelError as exc:
            self._record(version, "refused", str(exc))
            raise
        canary = ring_devices(self.twins, "canary", self.module_id)
        if not canary:
            raise ConfigError("no gateway is tagged ring=canary: tag some with 'gondola models ring'")
        won, winner = self.registry.claim("rollout", {"version": version, "at_ms": self.clock.now_ms()})
        if not won:
            mine = self.registry.records("rollout-claim")[-1]
            self.registry.release("rollout", mine["details"]["claim_id"], "another rollout was claimed first")
            return self._record(version, "not-started",
                                f"rollout of {winner['details']['version']} is in progress (claimed first)")
        try:
            if shadow_first:
                out = self.shadow(version, "canary")
                self.registry.set_status(version, "canary", f"rollout started in shadow on {len(canary)} canary "
                                                            "gateway(s)", ring="shadow")
                return out
            done = self._publish(mv, canary)
        except Exception as exc:
            self.registry.release("rollout", winner["details"]["claim_id"], f"publish failed: {exc}")
            self._record(version, "refused", str(exc))
            raise
        self.registry.set_status(version, "canary", f"rollout started: {len(canary)} canary gateway(s)",
                                 ring="canary")
        return self._record(version, "canary", f"published to {len(done['devices'])} canary gateway(s)",
                            devices=done["devices"])

    def active(self) -> dict | None:
        """The open rollout claim (``details.version``), or None."""
        return self.registry.open_claim("rollout")

    def step(self) -> dict:
        """Judge the current ring once; return the decision (``idle``, ``waiting``, ``early``,
        ``production``, ``rolled_back``)."""
        claim = self.active()
        if claim is None:
            return {"decision": "idle", "reason": "no rollout in progress"}
        version = claim["details"]["version"]
        mv = self.registry.get(version)
        if mv.status != "canary":  # finished or retired by hand
            self.registry.release("rollout", claim["details"]["claim_id"], f"{version} is {mv.status}")
            return {"decision": "idle", "version": version, "reason": f"{version} is {mv.status}"}
        if mv.ring == "shadow":
            return self._step_shadow(mv, claim)
        ring = mv.ring or "canary"
        since = mv.history[-1]["at_ms"]
        now = self.clock.now_ms()
        targets = ring_devices(self.twins, ring, self.module_id)
        status = rollout_status(self.twins, targets, self.module_id)
        bad = {d: s for d, s in status["devices"].items()
               if s["desired"] == version and s["status"] in ("failed", "rolled_back")}
        if bad:
            first = next(iter(bad.values()))
            return self.rollback(version, f"{len(bad)} {ring} gateway(s) refused or rolled back the model "
                                          f"({first['error'] or first['status']})", claim=claim)
        running = [d for d, s in status["devices"].items() if s["version"] == version]
        errors = sum(int((self.twins.get_twin(d, self.module_id)["reported"].get("gondola") or {})
                         .get("scorer_errors") or 0) for d in running)
        if errors > self.policy.max_scorer_errors:
            return self.rollback(version, f"{errors} scoring error(s) on the {ring} ring", claim=claim)
        window_ms = int(self.policy.window_h * 3_600_000)
        pending = len(targets) - len(running)
        if now - since < window_ms or not running:
            return {"decision": "waiting", "version": version, "ring": ring, "running": len(running),
                    "pending": pending, "reason": f"{ring} window: {(now - since) / 3_600_000:.1f} of "
                                                  f"{self.policy.window_h:g} h, {len(running)} gateway(s) running it"}
        prod = self.registry.production()
        others = [d for d in ring_devices(self.twins, "all", self.module_id) if d not in targets]
        cand = self.figures.figures(f"model:{version}", running, since, now)
        base = self.figures.figures(f"model:{prod.version}", others, since, now) if prod and others else None
        if base is not None:
            cand["latency_ms_per_1k"] = self._latency(running, version)
            base["latency_ms_per_1k"] = self._latency(others, prod.version)
        verdict, why = self._judge(cand, base, now - since, window_ms)
        figures = {"candidate": cand, "production": base, "ring": ring, "running": running, "pending": pending}
        if verdict == "wait":
            return {"decision": "waiting", "version": version, "ring": ring, "reason": why, **figures}
        if verdict == "fail":
            return self.rollback(version, f"{ring}: {why}", claim=claim, figures=figures)
        nxt = RINGS[RINGS.index(ring) + 1]
        devices = ring_devices(self.twins, nxt, self.module_id)
        self._publish(mv, devices)
        if nxt == "all":
            self.registry.set_status(version, "production", f"{ring} held ({why}); every gateway asked")
            self.registry.release("rollout", claim["details"]["claim_id"], "promoted to production")
            return self._record(version, "production", f"{ring} held: {why}", devices=len(devices), **figures)
        self.registry.set_status(version, "canary", f"{ring} held ({why}); on to {nxt}", ring=nxt)
        return self._record(version, nxt, f"{ring} held: {why}", devices=len(devices), **figures)

    def _latency(self, device_ids: list[str], version: str) -> float | None:
        """Mean scoring milliseconds per 1,000 facings the gateways running ``version`` report
        (``gondola.score_ms`` / ``gondola.facings`` in their twins), or None when none reports."""
        values = []
        for d in device_ids:
            reported = self.twins.get_twin(d, self.module_id)["reported"]
            g = reported.get("gondola") or {}
            if (reported.get("model") or {}).get("version") != version:
                continue
            if isinstance(g.get("score_ms"), (int, float)) and g.get("facings"):
                values.append(1000.0 * g["score_ms"] / g["facings"])
        return round(sum(values) / len(values), 3) if values else None

    def _judge(self, cand: dict, base: dict | None, elapsed_ms: int, window_ms: int) -> tuple[str, str]:
        p = self.policy
        if cand["alerts"] < p.min_alerts:
            if elapsed_ms >= window_ms * p.max_wait_windows:
                return "fail", f"only {cand['alerts']} alert(s) after {p.max_wait_windows} windows: not enough evidence"
            return "wait", f"{cand['alerts']} alert(s) so far, {p.min_alerts} needed to judge"
        if base is None or base["alerts"] == 0:
            return "hold", f"precision {cand['precision']:.2f}, no production figures to compare"
        if base["precision"] is not None and cand["precision"] < base["precision"] - p.max_precision_drop:
            return "fail", (f"precision {cand['precision']:.2f} < production {base['precision']:.2f} "
                            f"- {p.max_precision_drop:g}")
        limit = base["false_per_store_day"] * p.max_false_ratio + p.false_slack
        if cand["false_per_store_day"] > limit:
            return "fail", (f"{cand['false_per_store_day']:.1f} false alerts/store-day > {limit:.1f} "
                            f"(production {base['false_per_store_day']:.1f})")
        c_ms, b_ms = cand.get("latency_ms_per_1k"), base.get("latency_ms_per_1k")
        if c_ms is not None and b_ms is not None and c_ms > b_ms * p.max_latency_ratio + p.latency_slack_ms:
            return "fail", (f"scoring {c_ms:.1f} ms per 1,000 facings > {b_ms * p.max_latency_ratio + p.latency_slack_ms:.1f}"
                            f" (production {b_ms:.1f})")
        return "hold", (f"precision {cand['precision']:.2f} vs {base['precision']:.2f}, false alerts/store-day "
                        f"{cand['false_per_store_day']:.1f} vs {base['false_per_store_day']:.1f}")

    def promote(self, version: str, reason: str) -> dict:
        """Make ``version`` production by hand: every gateway is asked to run it (the artifact
        verified first), the previous production is retired, a rollout of this version in
        progress is closed. Returns the decision record.

        Raises:
            ConfigError: unknown version, a forbidden move, or another version's rollout in progress.
            ModelError: the artifact is not the registered file.
        """
        from gondola.errors import ConfigError

        claim = self.active()
        if claim and claim["details"]["version"] != version:
            raise ConfigError(f"rollout of {claim['details']['version']} is in progress: finish or abort it first")
        mv = self.registry.get(version)
        devices = self._publish(mv, ring_devices(self.twins, "all", self.module_id))["devices"]
        self.registry.set_status(version, "production", f"promoted by hand: {reason}")
        if claim:
            self.registry.release("rollout", claim["details"]["claim_id"], "promoted by hand")
        return self._record(version, "production", f"promoted by hand: {reason}", by="hand", devices=devices)

    # ---- shadow mode -----------------------------------------------------------------------

    def shadow(self, version: str, ring: str = "canary") -> dict:
        """Score ``version`` in shadow on the ``ring``'s gateways (beside their model, no alerts
        raised; would-be alerts uplinked). Returns the decision record.

        Raises:
            ConfigError: unknown version or ring, the production version, or an empty ring.
            ModelError: the artifact is not the registered file.
        """
        from gondola.errors import ConfigError

        mv = self.registry.get(version)
        if mv.status == "production":
            raise ConfigError(f"model {version} is production already")
        devices = ring_devices(self.twins, ring, self.module_id)
        if not devices:
            raise ConfigError(f"no gateway in ring {ring!r}")
        done = publish_model(self._artifact(mv), store=self.store, twins=self.twins, device_ids=devices,
                             module_id=self.module_id, key=self.key, prop="shadow")
        return self._record(version, "shadow", f"scoring in shadow on {len(done['devices'])} {ring} gateway(s)",
                            devices=done["devices"], ring=ring, since_ms=self.clock.now_ms())

    def _step_shadow(self, mv, claim: dict) -> dict:
        """``step`` while the rollout's first stage is shadow mode on the canary ring."""
        version = mv.version
        since = mv.history[-1]["at_ms"]
        now = self.clock.now_ms()
        window_ms = int(self.policy.window_h * 3_600_000)
        if now - since < window_ms:
            return {"decision": "waiting", "version": version, "ring": "shadow",
                    "reason": f"shadow window: {(now - since) / 3_600_000:.1f} of {self.policy.window_h:g} h"}
        res = self.compare_shadow(version)
        figures = {"candidate": res["candidate"], "production": res["production"], "ring": "shadow",
                   "running": res["devices"]}
        if res["verdict"] == "wait":
            return {"decision": "waiting", "version": version, "ring": "shadow", "reason": res["reason"], **figures}
        if res["verdict"] == "fail":
            self.stop_shadow(version)
            return self.rollback(version, f"shadow: {res['reason']}", claim=claim, figures=figures)
        self.stop_shadow(version)
        canary = ring_devices(self.twins, "canary", self.module_id)
        done = self._publish(mv, canary)
        self.registry.set_status(version, "canary", f"shadow held ({res['reason']}); live on canary", ring="canary")
        return self._record(version, "canary", f"shadow held: {res['reason']}", devices=done["devices"], **figures)

    def stop_shadow(self, version: str | None = None) -> list[str]:
        """Stop the shadows (of ``version``, or all): desired ``shadow`` = null; return the
        gateways asked."""
        asked = []
        for d in ring_devices(self.twins, "all", self.module_id):
            desired = {k: v for k, v in self.twins.get_twin(d, self.module_id)["desired"].items()
                       if not k.startswith("$")}
            if desired.get("shadow") and (version is None or desired["shadow"].get("version") == version):
                desired["shadow"] = None
                self.twins.set_desired(d, self.module_id, desired)
                asked.append(d)
        return asked

    def compare_shadow(self, version: str) -> dict:
        """Judge a shadow on live figures: its would-be alerts against the alerts of the model
        the same gateways ran, over the same hours (``RolloutPolicy``, as a ring). Returns
        ``{"verdict": hold|fail|wait, "reason", "candidate", "production", "devices"}`` and
        records it (``shadow`` record). Raises: ConfigError when ``version`` never ran in shadow."""
        from gondola.errors import ConfigError

        starts = [r for r in self.registry.records("rollout")
                  if r["version"] == version and r["details"].get("decision") == "shadow"]
        if not starts:
            raise ConfigError(f"model {version} was never put in shadow ('gondola models shadow {version}')")
        since = int(starts[-1]["details"]["since_ms"])
        devices = [d for d in ring_devices(self.twins, "all", self.module_id)
                   if ((self.twins.get_twin(d, self.module_id)["reported"].get("shadow") or {}).get("version") == version)]
        prod = self.registry.production()
        now = self.clock.now_ms()
        cand = self.figures.figures(SHADOW_SCORER.format(version=version), devices, since, now)
        base = self.figures.figures(f"model:{prod.version}", devices, since, now) if prod else None
        lat_c, lat_b = [], []
        for d in devices:
            g = self.twins.get_twin(d, self.module_id)["reported"].get("gondola") or {}
            sh = g.get("shadow") or {}
            if g.get("facings") and isinstance(sh.get("score_ms"), (int, float)) and isinstance(g.get("score_ms"), (int, float)):
                lat_c.append(1000.0 * sh["score_ms"] / g["facings"])
                lat_b.append(1000.0 * g["score_ms"] / g["facings"])
        cand["latency_ms_per_1k"] = round(sum(lat_c) / len(lat_c), 3) if lat_c else None
        if base is not None:
            base["latency_ms_per_1k"] = round(sum(lat_b) / len(lat_b), 3) if lat_b else None
        window_ms = int(self.policy.window_h * 3_600_000)
        verdict, why = self._judge(cand, base, now - since, window_ms) if devices else ("wait", "no gateway "
                                                                                         "reports the shadow yet")
        out = {"version": version, "verdict": verdict, "reason": why, "candidate": cand, "production": base,
               "production_version": prod.version if prod else None, "devices": devices}
        self.registry.record("shadow", out, version=version, reason=why)
        return out

    def rollback(self, version: str, reason: str, *, claim: dict | None = None, figures: dict | None = None) -> dict:
        """Point every gateway asked for ``version`` back at production; retire ``version``."""
        claim = claim or self.active()
        asked = [d for d in ring_devices(self.twins, "all", self.module_id)
                 if ((self.twins.get_twin(d, self.module_id)["desired"].get("model") or {}).get("version") == version)]
        prod = self.registry.production()
        back = []
        if prod is not None and asked:
            back = self._publish(prod, asked)["devices"]
        self.registry.set_status(version, "retired", f"rolled back: {reason}")
        if claim is not None and claim["details"].get("version") == version:
            self.registry.release("rollout", claim["details"]["claim_id"], f"rolled back: {reason}")
        return self._record(version, "rolled_back", reason, devices=back,
                            to=prod.version if prod else None, **(figures or {}))
