"""``gondola cloud``: ingest, transform the lake, build the warehouse and the dashboard.

Subcommands (each prints progress and a one-line summary; exit 0 on success):

  ingest-stream            read new hub messages into bronze.events
  stream [--once] [--source local|eventhubs] [--model PATH|none] [--planogram CSV] [--stock-records DIR|none]
         [--products CSV|none] [--band-rule shelf_switch|share|exposure|shelf]
                           the long-running stream job: windows, cloud scoring, anomalies -> stream.*
  ingest-batch FOLDER      load master data / sales export CSVs (each file content once)
  transform                incremental bronze -> silver -> gold
  warehouse                build the DuckDB warehouse (bi_* views for Power BI)
  dashboard [--html PATH]  write the self-contained HTML dashboard
  synapse-ddl [--out PATH] print / write the T-SQL views for Synapse serverless
  powerbi --server HOST --database DB [--out FILE]
                           write the Power BI connection file (.pbids) for the Synapse endpoint
  counts                   rows per lake table
  all [--batch FOLDER]     ingest-batch (if given), ingest-stream, transform, warehouse, dashboard
  publish-model MODEL --devices ID [ID ...] [--store DIR | --blob-container NAME] [--key-file F] [--iothub]
                           upload a model package and point those gateways' twins at it
  model-status --devices ID [ID ...] [--iothub]
                           what each gateway reports about the model it was asked to run

Local parts by default, Azure ones by setting (docs/azure.md): ``--source eventhubs`` /
``GONDOLA_INGEST_SOURCE=eventhubs`` ingests from IoT Hub's Event Hubs-compatible endpoint;
``--iothub`` / ``GONDOLA_TWINS=iothub`` writes and reads module twins in IoT Hub;
``--blob-container`` / ``GONDOLA_MODEL_BLOB_CONTAINER`` serves models from Blob storage;
``--lake abfss://...`` keeps the lake on ADLS Gen2.

Common options, before or after the subcommand: --lake URI (folder, abfss:// or az://),
--hub PATH, --warehouse PATH, --storage-option KEY=VALUE (repeatable), --engine duckdb|spark.
A missing hub, lake (for the commands that read one), folder or model file is a one-line error
(exit 1) and creates nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


#: The options every subcommand accepts, before or after its name, and their defaults.
_COMMON = {"lake": "out/lake", "hub": "out/hub.sqlite", "warehouse": "out/warehouse.duckdb",
           "engine": "duckdb"}


def _common_options(p: argparse.ArgumentParser, *, after: bool) -> None:
    """The common options; ``after``: on a subcommand, where they only override what was given
    before it (argparse.SUPPRESS keeps a subparser's default from clobbering the top level's)."""
    d = (lambda v: argparse.SUPPRESS) if after else (lambda v: v)
    p.add_argument("--lake", default=d(_COMMON["lake"]),
                   help="lake folder or abfss:// / az:// URI (default out/lake)")
    p.add_argument("--hub", default=d(_COMMON["hub"]), help="embedded hub file (default out/hub.sqlite)")
    p.add_argument("--warehouse", default=d(_COMMON["warehouse"]), help="DuckDB warehouse file")
    p.add_argument("--storage-option", action="append", default=d([]), metavar="KEY=VALUE",
                   dest="storage_option_after" if after else "storage_option",
                   help="deltalake storage option (account_name, sas_token, use_emulator, ...)")
    p.add_argument("--engine", choices=("duckdb", "spark"), default=d(_COMMON["engine"]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola cloud", description=__doc__.split("\n")[0])
    _common_options(p, after=False)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, after=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[common])

    def source_options(c: argparse.ArgumentParser) -> None:
        c.add_argument("--source", choices=("local", "eventhubs"), default=None,
                       help="embedded hub (default) or Event Hubs: IoT Hub's Event Hubs-compatible endpoint "
                            "(env GONDOLA_INGEST_SOURCE; connection settings in docs/azure.md)")
        c.add_argument("--consumer-group", default=None,
                       help="Event Hubs consumer group (default lake-bronze; env GONDOLA_EVENTHUB_CONSUMER_GROUP)")

    source_options(command("ingest-stream", "read new hub messages into bronze"))
    st = command("stream", "long-running stream job: windows, cloud scoring, anomalies")
    st.add_argument("--once", action="store_true", help="stop once the source has caught up")
    st.add_argument("--source", choices=("local", "eventhubs"), default=None,
                    help="embedded hub (default) or Event Hubs (env GONDOLA_STREAM_SOURCE)")
    st.add_argument("--consumer-group", default=None, help="default cloud-stream (env GONDOLA_STREAM_CONSUMER_GROUP)")
    st.add_argument("--model", default=None,
                    help="production model (.onnx / .tflite with its manifest), 'none' for no scoring "
                         "(env GONDOLA_STREAM_MODEL; default the shipped model)")
    st.add_argument("--planogram", default=None, help="planogram CSV (default silver.planogram in the lake)")
    st.add_argument("--stock-records", default=None,
                    help="folder of the ERP's nightly stock_record CSVs (the batch landing folder), 'none' to "
                         "judge phantom stock without them (env GONDOLA_STREAM_STOCK_RECORDS; default "
                         "silver.stock_record in the lake)")
    st.add_argument("--products", default=None,
                    help="products CSV (sku, category), 'none' to judge demand without categories "
                         "(env GONDOLA_STREAM_PRODUCTS; default silver.products in the lake; read only by "
                         "--band-rule exposure and shelf_switch)")
    # cloud.stream.detectors.BAND_RULES, written out: importing cloud.stream here costs every command
    # ~0.3 s (tests/unit/test_stream_wiring.py keeps the two equal)
    st.add_argument("--band-rule", choices=("shelf_switch", "share", "exposure", "shelf"), default=None,
                    help="demand_band's rule: shelf_switch (default, in force: the rate while on the shelf, times "
                         "refills and load cells show it empty left out, net of shoppers from a same-category "
                         "product that emptied today), share (in force before), exposure (rate while on sale, net "
                         "of same-category switching) or shelf (shelf_switch without the categories), "
                         "docs/stream.md; env GONDOLA_STREAM_BAND_RULE)")
    st.add_argument("--lateness-min", type=float, default=10.0, help="allowed lateness, minutes (default 10)")
    st.add_argument("--snapshot-s", type=float, default=30.0, help="state snapshot interval, seconds (default 30)")
    st.add_argument("--batch", type=int, default=2000, help="messages per receive (default 2000)")
    b = command("ingest-batch", "load master data / sales export CSVs")
    b.add_argument("folder")
    command("transform", "incremental bronze -> silver -> gold")
    command("warehouse", "build the DuckDB warehouse")
    d = command("dashboard", "write the HTML dashboard")
    d.add_argument("--html", default="out/dashboard.html")
    s = command("synapse-ddl", "T-SQL views for Synapse serverless")
    s.add_argument("--out", default=None)
    s.add_argument("--location", default="lake", help="lake folder under the external data source")
    s.add_argument("--data-source", default="gondola_lake", help="external data source name (default gondola_lake)")
    s.add_argument("--lake-url", default=None,
                   help="create the data source at this URL (https://<account>.dfs.core.windows.net/<filesystem>)")
    s.add_argument("--credential", default=None,
                   help="with --lake-url: create a database scoped credential of this name (managed identity)")
    pb = command("powerbi", "write the Power BI connection file for the Synapse endpoint")
    pb.add_argument("--server", required=True, help="<workspace>-ondemand.sql.azuresynapse.net")
    pb.add_argument("--database", default="gondola", help="database holding the views (default gondola)")
    pb.add_argument("--mode", choices=("DirectQuery", "Import"), default="DirectQuery")
    pb.add_argument("--out", default="out/gondola.pbids", help="file to write (default out/gondola.pbids)")
    command("counts", "rows per lake table")
    rt = command("retention", "vacuum every table past the time-travel window, clean the logs, prune old lineage")
    rt.add_argument("--vacuum-hours", type=int, default=168, help="time-travel window kept (default 168)")
    rt.add_argument("--lineage-days", type=int, default=400, help="run lineage kept (default 400 days)")
    rt.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    pv = command("provision", "apply the lake's zones: ADLS ACLs (--adls-account) or local file permissions")
    pv.add_argument("--adls-account", default=None,
                    help="ADLS Gen2 account: set the zones' ACLs there (principals from GONDOLA_ADLS_*; "
                         "credential: DefaultAzureCredential)")
    pv.add_argument("--filesystem", default="lake", help="ADLS file system (default lake)")
    pv.add_argument("--apply-to-existing", action="store_true",
                    help="ADLS: also update the ACLs of everything already in each layer")
    pv.add_argument("--analysts-group", default=None,
                    help="local lake: the group that may read gold, stream and meta (name or gid)")
    a = command("all", "batch (optional), stream, transform, warehouse, dashboard")
    source_options(a)
    a.add_argument("--batch", default=None, help="folder of CSV files to load first")
    a.add_argument("--html", default="out/dashboard.html")
    pm = command("publish-model", "upload a model package and write the gateways' twins")
    pm.add_argument("model", help="model file (.tflite / .onnx) with NAME.manifest.json beside it")
    pm.add_argument("--devices", nargs="+", required=True, help="gateway device ids (gw-<store>)")
    pm.add_argument("--store", default="out/models", help="model store folder (default out/models)")
    pm.add_argument("--key-file", default=None,
                    help="verify the package first (HMAC secret or Ed25519 public key; default "
                         "GONDOLA_MODEL_KEY_FILE)")
    pm.add_argument("--blob-container", default=None,
                    help="upload to this Blob container and hand gateways read-only SAS URLs "
                         "(GONDOLA_STORAGE_CONNECTION_STRING; env GONDOLA_MODEL_BLOB_CONTAINER)")
    ms = command("model-status", "the model each gateway reports")
    ms.add_argument("--devices", nargs="+", required=True)
    for c in (pm, ms):
        c.add_argument("--iothub", action="store_true", default=None,
                       help="module twins in IoT Hub (GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING) instead of "
                            "the embedded hub (env GONDOLA_TWINS=iothub)")
    return p


def resolve_backends(args, env=None) -> None:
    """Pick local or Azure parts from the options, else the environment (``GONDOLA_INGEST_SOURCE``,
    ``GONDOLA_TWINS``, ``GONDOLA_MODEL_BLOB_CONTAINER``, ``GONDOLA_EVENTHUB_CONSUMER_GROUP``);
    ``args.local_hub`` says whether the command needs the embedded hub file.

    Raises:
        ConfigError: an unknown value in one of those variables.
    """
    import os

    from gondola.errors import ConfigError

    env = os.environ if env is None else env
    if hasattr(args, "source") and args.command in ("ingest-stream", "all"):
        args.source = args.source or env.get("GONDOLA_INGEST_SOURCE") or "local"
        if args.source not in ("local", "eventhubs"):
            raise ConfigError(f"GONDOLA_INGEST_SOURCE must be local or eventhubs, got {args.source!r}")
        args.consumer_group = args.consumer_group or env.get("GONDOLA_EVENTHUB_CONSUMER_GROUP") or "lake-bronze"
        args.local_hub = args.source == "local"
    if args.command in ("publish-model", "model-status"):
        twins = "iothub" if args.iothub else env.get("GONDOLA_TWINS", "local")
        if twins not in ("local", "iothub"):
            raise ConfigError(f"GONDOLA_TWINS must be local or iothub, got {twins!r}")
        args.iothub = twins == "iothub"
        args.local_hub = not args.iothub
        if args.command == "publish-model":
            args.blob_container = args.blob_container or env.get("GONDOLA_MODEL_BLOB_CONTAINER") or None


def _is_local(uri: str) -> bool:
    return "://" not in uri


#: Commands that read an existing lake (they must not create an empty one at a mistyped path).
_READS_LAKE = {"transform", "warehouse", "dashboard", "counts", "provision", "retention"}
#: Commands that read (or write twins into) the embedded hub, when it is the local one.
_USES_HUB = {"ingest-stream", "all", "publish-model", "model-status"}


def check_inputs(args) -> None:
    """Refuse a missing input before anything is created.

    Raises:
        ConfigError: one line naming the missing file or folder.
    """
    from gondola.errors import ConfigError

    cmd = args.command
    if cmd in _USES_HUB and getattr(args, "local_hub", True) and not Path(args.hub).is_file():
        raise ConfigError(f"no hub at {args.hub} (the gateways' --hub-path; pass --hub PATH)")
    # The dashboard reads only the warehouse; it needs the lake only to build a missing one.
    dashboard_from_warehouse = cmd == "dashboard" and Path(args.warehouse).is_file()
    if cmd in _READS_LAKE and _is_local(args.lake) and not Path(args.lake).is_dir() \
            and not getattr(args, "adls_account", None) and not dashboard_from_warehouse:
        raise ConfigError(f"no lake at {args.lake} (run ingest first, or pass --lake PATH)")
    folder = args.folder if cmd == "ingest-batch" else (args.batch if cmd == "all" else None)
    if folder and not Path(folder).is_dir():
        raise ConfigError(f"no folder {folder} to load")
    if cmd == "publish-model" and not Path(args.model).is_file():
        raise ConfigError(f"no model file {args.model}")


def _provision_command(args) -> int:
    """``gondola cloud provision``: the zones of ``cloud.azure.adls.ZONES`` on ADLS or locally."""
    import os

    if args.adls_account:
        from cloud.azure.adls import AdlsAdmin, LakeAccess, default_credential

        access = LakeAccess.from_env(os.environ)
        with AdlsAdmin.from_account(args.adls_account, default_credential()) as admin:
            acls = admin.ensure_lake(access, filesystem=args.filesystem, apply_to_existing=args.apply_to_existing)
        for path, acl in acls.items():
            print(f"{args.filesystem}/{path.lstrip('/')}: {acl}")
        return 0
    from cloud.meta.access import apply_local_zones
    from gondola.errors import ConfigError

    if not _is_local(args.lake):
        raise ConfigError("a remote lake is provisioned with --adls-account ACCOUNT")
    for path, mode in apply_local_zones(args.lake, analysts_group=args.analysts_group).items():
        print(f"{Path(args.lake) / path.lstrip('/')}: {mode}")
    return 0


def _models_command(args) -> int:
    """``publish-model`` / ``model-status`` on the gateways' module twins: the embedded hub's, or
    IoT Hub's (``--iothub``); model files in a folder, or a Blob container (``--blob-container``)."""
    import os

    from cloud.models_cli import _model_store, _twins
    from cloud.rollout import publish_model, rollout_status
    from gondola.errors import ConfigError

    twins = _twins(args)
    try:
        if args.command == "publish-model":
            key_file = args.key_file or os.environ.get("GONDOLA_MODEL_KEY_FILE")
            key = None
            if key_file:
                try:
                    key = Path(key_file).read_bytes().strip()
                except OSError as exc:
                    raise ConfigError(f"cannot read the model key file: {exc.strerror}") from None
            from cloud.lake.storage import open_storage
            from cloud.meta.lineage import lake_lineage
            from gondola.lineage import Dataset

            args.model_store = args.store
            store = _model_store(args)
            with lake_lineage(open_storage(args.lake)).run("gondola.publish_model") as run:
                done = publish_model(args.model, store=store, twins=twins, device_ids=args.devices, key=key)
                run.inputs.append(Dataset("models", done["version"]))
                run.outputs += [Dataset("twin", device) for device in done["devices"]]
            where = f"blob container {args.blob_container}" if args.blob_container else str(args.store)
            print(f"model {done['version']} ({'signed' if done['signed'] else 'UNSIGNED'}, sha256 "
                  f"{done['sha256'][:12]}...) in {where}, asked of {len(done['devices'])} gateway(s) "
                  f"through {'IoT Hub' if args.iothub else 'the embedded hub'}")
        else:
            status = rollout_status(twins, args.devices)
            for device, d in status["devices"].items():
                print(f"{device:20s} desired {d['desired'] or '-':28s} running {d['version'] or '-':28s} "
                      f"{d['status']}{': ' + d['error'] if d['error'] else ''}")
            print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(status["by_status"].items())))
    finally:
        close = getattr(twins, "close", None)
        if close is not None:
            close()
    return 0


def _stream_command(args, options: dict) -> int:
    """``stream``: run the stream job until SIGTERM / Ctrl-C (or caught up, with --once)."""
    import signal
    import threading

    from cloud.stream.wiring import StreamSettings, build_stream_job
    from gondola.errors import ConfigError

    if args.lateness_min < 0 or args.snapshot_s <= 0 or args.batch < 1:
        raise ConfigError("--lateness-min must be >= 0, --snapshot-s > 0 and --batch >= 1")
    started = time.monotonic()
    say = lambda text: print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)  # noqa: E731
    settings = StreamSettings.from_env(lake_uri=args.lake, hub_path=args.hub, storage_options=options or None,
                                       source=args.source, consumer_group=args.consumer_group, model=args.model,
                                       planogram=args.planogram, stock_records=args.stock_records,
                                       products=args.products, band_rule=args.band_rule,
                                       allowed_lateness_min=args.lateness_min,
                                       snapshot_every_s=args.snapshot_s, max_messages=args.batch)
    job = build_stream_job(settings, progress=say)
    stop = threading.Event()

    def _stop(signum, _frame):
        say(f"stream: {signal.Signals(signum).name}: finishing the batch in hand, then stopping")
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say(f"stream: reading {job.source.name} ({settings.source}); scoring with "
            f"{getattr(job.scorer, 'name', 'nothing')}; {len(job.planograms)} store planograms")
        job.run(once=args.once, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        job.source.close()
    say(f"stream: stopped; {job.summary()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gondola cloud``; returns the exit code.

    Raises:
        ConfigError: a missing input (hub, lake, folder, model, key file) or a bad option;
            nothing is created then.
    """
    args = _parser().parse_args(argv)
    from cloud.wiring import CloudSettings, build_cloud
    from gondola.errors import ConfigError

    resolve_backends(args)
    check_inputs(args)
    options = {}
    for item in args.storage_option + getattr(args, "storage_option_after", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--storage-option {item!r} is not KEY=VALUE")
        options[key] = value
    if args.command in ("publish-model", "model-status"):
        return _models_command(args)
    if args.command == "stream":
        return _stream_command(args, options)
    if args.command == "provision":
        return _provision_command(args)
    if args.command == "retention":
        from cloud.lake.storage import open_storage
        from cloud.meta.retention import apply_retention

        report = apply_retention(open_storage(args.lake, options or None), vacuum_hours=args.vacuum_hours,
                                 lineage_days=args.lineage_days, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"retention: {verb} {sum(report['files'].values())} files in {len(report['files'])} tables, "
              f"{report['lineage_rows']} lineage rows"
              + (f"; left alone while their readers catch up: {', '.join(report['skipped'])}" if report["skipped"] else ""))
        return 0
    if args.command == "synapse-ddl":
        from cloud.warehouse import synapse_ddl

        ddl = synapse_ddl(args.location, data_source=args.data_source, lake_url=args.lake_url,
                          credential=args.credential)
        if args.out:
            Path(args.out).write_text(ddl)
            print(f"wrote {args.out}")
        else:
            print(ddl)
        return 0
    if args.command == "powerbi":
        from cloud.powerbi import write_pbids

        print(f"wrote {write_pbids(args.out, args.server, args.database, mode=args.mode)}")
        return 0
    started = time.monotonic()
    say = lambda text: print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)  # noqa: E731
    source = getattr(args, "source", None) or "local"
    cloud = build_cloud(CloudSettings(lake_uri=args.lake, hub_path=args.hub if source == "local" else None,
                                      warehouse_path=args.warehouse, storage_options=options or None,
                                      engine=args.engine, source=source,
                                      consumer_group=getattr(args, "consumer_group", None) or "lake-bronze"),
                        progress=say)
    cmd = args.command
    folder = args.folder if cmd == "ingest-batch" else (args.batch if cmd == "all" else None)
    if folder:
        report = cloud.ingest_batch(folder)
        say(f"batch: loaded {len(report['loaded'])} file(s), {report['rows']} rows; "
            f"{len(report['skipped_same_content'])} already loaded; errors: {report['errors'] or 'none'}")
        if report["errors"] and cmd == "ingest-batch":
            return 1
    if cmd in ("ingest-stream", "all"):
        say(f"stream: {cloud.ingest_stream()} new bronze rows")
    if cmd in ("transform", "all"):
        result = cloud.transform()
        say(f"transform: {json.dumps(result['rows'], sort_keys=True)}; duplicates {result['duplicates']}, "
            f"quarantined {result['quarantined']}, late {result['late']}")
    if cmd in ("warehouse", "all"):
        say(f"warehouse: {cloud.build_warehouse()}")
    if cmd in ("dashboard", "all"):
        say(f"dashboard: {cloud.build_dashboard(args.html)}")
    if cmd == "counts":
        for name, n in cloud.table_counts().items():
            print(f"{name:32s} {n:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
