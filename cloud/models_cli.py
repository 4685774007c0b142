"""``gondola models``: the model registry and the rollout in rings, from the command line.

    gondola models [--lake URI] [--hub PATH | --iothub] [--model-store DIR | --blob-container NAME] COMMAND
      list                          versions: status, ring, held-out figures, stores running each
      show VERSION                  one version: metrics, training tables, code version, artifacts
                                    (sha256, bytes), signature, history, stores running it
      promote VERSION --reason T    make it production by hand (every gateway is asked to run it)
      retire VERSION --reason T     retire it (a canary is rolled back to production first)
      ring RING DEVICE...           put gateways in a ring (twin tag ring=canary|early|all)
      rollout VERSION [--shadow-first] | --abort
                                    start rolling a candidate out to the canary ring (in
                                    shadow there first)
      step                          judge the current ring once: wait, next ring, production,
                                    or roll back (a scheduler runs this, e.g. hourly)
      status                        the rollout in progress and what each gateway runs
      shadow VERSION [--ring R] | --stop
                                    score a candidate in shadow beside production (no alerts
                                    raised; its would-be alerts uplinked), or stop every shadow
      compare VERSION               a shadow's live figures against production's on the same
                                    gateways and hours (precision, false alerts, latency)
      decisions [--kind K]          retrain, drift and rollout decisions, oldest first

Twins are the embedded hub (``--hub``, default ``out/hub.sqlite``) or IoT Hub (``--iothub``:
``GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING``, tags queried with ``tags.ring = '...'``). Model
files go to a folder (``--model-store``, default ``<lake>/../models``, ``file://`` URLs) or a
blob container (``--blob-container``: ``GONDOLA_STORAGE_CONNECTION_STRING``, read-only SAS
URLs). ``GONDOLA_MODEL_KEY`` (or the secret store's ``model-key``) is the key the artifacts
must verify with before a twin is written.

Errors: ``ConfigError`` (unknown version, forbidden move, missing hub), ``ModelError`` (an
artifact that is not the registered file), ``StorageError``, ``TransportError``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola models", description="Model registry and rollout in rings.")
    p.add_argument("--lake", default="out/lake", help="lake with models.registry (default out/lake)")
    p.add_argument("--hub", default="out/hub.sqlite", help="embedded hub with the gateways' twins")
    p.add_argument("--iothub", action="store_true",
                   help="use IoT Hub twins (GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING) instead of --hub")
    p.add_argument("--model-store", default=None, help="folder model files are served from "
                                                        "(default: 'models' beside the lake)")
    p.add_argument("--blob-container", default=None,
                   help="serve model files from this blob container (GONDOLA_STORAGE_CONNECTION_STRING)")
    p.add_argument("--json", action="store_true", help="print JSON")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every version with status, figures and the stores running it")
    s = sub.add_parser("show", help="one version in full")
    s.add_argument("version")
    for name, what in (("promote", "make a version production by hand"), ("retire", "retire a version")):
        s = sub.add_parser(name, help=what)
        s.add_argument("version")
        s.add_argument("--reason", required=True, help="why (recorded in the registry)")
    s = sub.add_parser("ring", help="put gateways in a rollout ring (twin tag)")
    s.add_argument("ring", choices=("canary", "early", "all"))
    s.add_argument("devices", nargs="+", help="gateway device ids (gw-<store>)")
    s = sub.add_parser("rollout", help="start rolling a candidate out to the canary ring")
    s.add_argument("version", nargs="?")
    s.add_argument("--abort", action="store_true", help="release the rollout in progress (its version is rolled back)")
    s.add_argument("--shadow-first", action="store_true",
                   help="score it in shadow on the canary ring first; it goes live there only if it holds")
    s = sub.add_parser("step", help="judge the current ring once")
    s.add_argument("--window-h", type=float, default=24.0, help="hours each ring runs before it is judged")
    s.add_argument("--min-alerts", type=int, default=10, help="candidate alerts needed to judge a ring")
    sub.add_parser("status", help="the rollout in progress and what each gateway runs")
    s = sub.add_parser("shadow", help="score a candidate in shadow on a ring, or --stop")
    s.add_argument("version", nargs="?")
    s.add_argument("--ring", choices=("canary", "early", "all"), default="canary")
    s.add_argument("--stop", action="store_true", help="stop every shadow")
    s = sub.add_parser("compare", help="a shadow's live figures against production's on the same gateways")
    s.add_argument("version")
    s.add_argument("--window-h", type=float, default=24.0, help="hours of evidence before a verdict")
    s.add_argument("--min-alerts", type=int, default=10, help="shadow alerts needed for a verdict")
    s = sub.add_parser("decisions", help="retrain, drift and rollout decision records")
    s.add_argument("--kind", choices=("retrain", "drift", "rollout"), default=None)
    return p


def _twins(args):
    from gondola.errors import ConfigError

    if args.iothub:
        from cloud.azure.twins import IotHubTwinRegistry

        return IotHubTwinRegistry.from_env()
    from gondola.hub import LocalHub

    if not Path(args.hub).is_file():
        raise ConfigError(f"no hub at {args.hub} (the gateways' --hub-path; pass --hub PATH or --iothub)")
    return LocalHub(args.hub)


def _model_store(args):
    if args.blob_container:
        from cloud.azure.models import BlobModelStore
        from gondola.errors import ConfigError
        from gondola.secrets import secret_text

        conn = secret_text("storage-connection-string")
        if not conn:
            raise ConfigError("--blob-container needs GONDOLA_STORAGE_CONNECTION_STRING")
        return BlobModelStore.from_connection_string(conn, args.blob_container)
    from cloud.rollout import FolderModelStore

    return FolderModelStore(args.model_store or Path(args.lake).parent / "models")


class _Clock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


def _rollout(args, registry, twins, **policy):
    from cloud.rollout import LakeLiveFigures, Rollout, RolloutPolicy
    from models.cli import _key

    return Rollout(registry, twins, _model_store(args), figures=LakeLiveFigures(args.lake), clock=_Clock(),
                   key=_key(), policy=RolloutPolicy(**policy))


def _running(args) -> dict[str, list[str]]:
    """``{version: [device ids]}`` from the twins' reported properties; {} without a hub."""
    from cloud.rollout import stores_running

    if not args.iothub and not Path(args.hub).is_file():
        return {}
    return stores_running(_twins(args))


def _when(ms: int | None) -> str:
    return "-" if not ms else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _print(args, obj, text: str) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str) if args.json else text)


def main(argv: list[str]) -> int:
    """``gondola models``. Raises: see the module docstring."""
    from gondola.errors import ConfigError
    from models.registry import open_registry

    args = _parser().parse_args(argv)
    registry = open_registry(args.lake)
    cmd = args.command
    if cmd == "list":
        running = _running(args)
        rows = []
        for v in registry.versions():
            rows.append({"version": v.version, "status": v.status, "ring": v.ring,
                         "registered": _when(v.registered_at_ms), "holdout_pr_auc": v.metrics.get("holdout_pr_auc"),
                         "gold.features": (v.training.get("tables") or {}).get("gold.features"),
                         "gateways": running.get(v.version, [])})
        width = max([len(r["version"]) for r in rows] + [7])
        text = [f"{'version':<{width}}  {'status':<10} {'ring':<6} {'registered':<16} {'PR-AUC':>7} "
                f"{'gold v':>6} gateways"]
        text += [f"{r['version']:<{width}}  {r['status']:<10} {r['ring'] or '-':<6} {r['registered']:<16} "
                 f"{_fmt(r['holdout_pr_auc']):>7} {_fmt(r['gold.features']):>6} {len(r['gateways'])}" for r in rows]
        others = {k: v for k, v in running.items() if k not in {r["version"] for r in rows}}
        text += [f"(not in the registry) {k}: {len(v)} gateway(s)" for k, v in sorted(others.items())]
        _print(args, {"versions": rows, "unregistered_running": others},
               "\n".join(text) if rows or others else "no model versions registered yet (gondola retrain)")
        return 0
    if cmd == "show":
        mv = registry.get(args.version)
        d = mv.to_dict() | {"gateways": _running(args).get(mv.version, [])}
        # The int8 bytes the registry carries are not for a screen: their size instead.
        d["artifacts"] = {k: {**{f: v for f, v in a.items() if f != "b64"},
                              **({"inline_bytes": len(a["b64"]) * 3 // 4} if a.get("b64") else {})}
                          for k, a in d["artifacts"].items()}
        lines = [f"model {mv.version}: {mv.status}" + (f" (ring {mv.ring})" if mv.ring else ""),
                 f"  code version: {mv.code_version}",
                 f"  training: {json.dumps(mv.training.get('tables'))}, rows {json.dumps(mv.training.get('rows'))}",
                 "  metrics: " + ", ".join(f"{k} {_fmt(v)}" for k, v in mv.metrics.items() if not isinstance(v, dict)),
                 "  signature: " + (f"{mv.signature['alg']} key {mv.signature['key_id']}" if mv.signature else "UNSIGNED")]
        lines += [f"  artifact {k}: {a.get('format')} {a.get('bytes')} B sha256 {a.get('sha256')}"
                  for k, a in mv.artifacts.items()]
        lines.append(f"  gateways running it: {', '.join(d['gateways']) or 'none'}")
        lines += [f"  {_when(h['at_ms'])}  {h['status']:<10} {h.get('ring') or '':<6} {h['reason']}" for h in mv.history]
        _print(args, d, "\n".join(lines))
        return 0
    if cmd == "decisions":
        kinds = [args.kind] if args.kind else ["retrain", "drift", "rollout"]
        recs = sorted(({"kind": k, **r} for k in kinds for r in registry.records(k)), key=lambda r: r["commit"])
        lines = [f"{_when(r['at_ms'])}  {r['kind']:<8} {r['version'] or '-':<28} "
                 f"{r['details'].get('decision', 'drifted' if r['details'].get('drifted') else '-'):<12} {r['reason']}"
                 for r in recs]
        _print(args, recs, "\n".join(lines) or "no decisions recorded yet")
        return 0
    twins = _twins(args)
    if cmd == "ring":
        from cloud.rollout import tag_ring

        done = tag_ring(twins, args.devices, args.ring)
        _print(args, {"ring": args.ring, "devices": done}, f"{len(done)} gateway(s) in ring {args.ring}")
        return 0
    if cmd == "status":
        from cloud.rollout import ring_devices, rollout_status

        claim = registry.open_claim("rollout")
        st = rollout_status(twins, ring_devices(twins, "all"))
        head = (f"rollout in progress: {claim['details']['version']} (ring "
                f"{registry.get(claim['details']['version']).ring})" if claim else "no rollout in progress")
        lines = [head] + [f"  {d}: runs {s['version'] or '-'}, asked {s['desired'] or '-'}, {s['status']}"
                          + (f" ({s['error']})" if s["error"] else "") for d, s in st["devices"].items()]
        _print(args, {"rollout": claim, **st}, "\n".join(lines))
        return 0
    if cmd == "rollout":
        if args.abort:
            rollout = _rollout(args, registry, twins)
            claim = rollout.active()
            if claim is None:
                raise ConfigError("no rollout in progress")
            out = rollout.rollback(claim["details"]["version"], "aborted by hand", claim=claim)
        else:
            if not args.version:
                raise ConfigError("name the version to roll out (gondola models list), or --abort")
            out = _rollout(args, registry, twins).start(args.version, shadow_first=args.shadow_first)
        _print(args, out, f"{out.get('version')}: {out['decision']} ({out['reason']})")
        return 0
    if cmd == "step":
        out = _rollout(args, registry, twins, window_h=args.window_h, min_alerts=args.min_alerts).step()
        _print(args, out, f"{out.get('version', '-')}: {out['decision']} ({out['reason']})")
        return 0
    if cmd == "shadow":
        rollout = _rollout(args, registry, twins)
        if args.stop:
            asked = rollout.stop_shadow()
            _print(args, {"stopped": asked}, f"shadow stopped on {len(asked)} gateway(s)")
            return 0
        if not args.version:
            raise ConfigError("name the version to score in shadow, or --stop")
        out = rollout.shadow(args.version, args.ring)
        _print(args, out, f"{args.version}: {out['reason']}")
        return 0
    if cmd == "compare":
        out = _rollout(args, registry, twins, window_h=args.window_h, min_alerts=args.min_alerts).compare_shadow(
            args.version)
        c, b = out["candidate"], out["production"] or {}
        lines = [f"{args.version} in shadow on {len(out['devices'])} gateway(s): {out['verdict']} ({out['reason']})",
                 f"  {'':<22}{'alerts':>8}{'precision':>11}{'false/store-day':>17}{'ms/1k facings':>15}",
                 *(f"  {name:<22}{_fmt(f.get('alerts')):>8}{_fmt(f.get('precision')):>11}"
                   f"{_fmt(f.get('false_per_store_day')):>17}{_fmt(f.get('latency_ms_per_1k')):>15}"
                   for name, f in ((f"shadow {args.version}", c), (f"production {out['production_version']}", b)))]
        _print(args, out, "\n".join(lines))
        return 0
    if cmd == "promote":
        out = _rollout(args, registry, twins).promote(args.version, args.reason)
        _print(args, out, f"{args.version}: production; {len(out['devices'])} gateway(s) asked to run it")
        return 0
    if cmd == "retire":
        mv = registry.get(args.version)
        if mv.status == "canary":
            out = _rollout(args, registry, twins).rollback(args.version, f"retired by hand: {args.reason}")
            _print(args, out, f"{args.version}: rolled back to {out['to']} on {len(out['devices'])} gateway(s), retired")
            return 0
        registry.set_status(args.version, "retired", f"retired by hand: {args.reason}")
        _print(args, {"version": args.version, "status": "retired"}, f"{args.version}: retired")
        return 0
    raise ConfigError(f"unknown command {cmd}")
