"""``gondola cloud``: ingest, transform the lake, build the warehouse and the dashboard.

Subcommands (each prints progress and a one-line summary; exit 0 on success):

  ingest-stream            read new hub messages into bronze.events
  stream [--once] [--source local|eventhubs] [--model PATH|none] [--planogram CSV]
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
  publish-model MODEL --devices ID [ID ...] [--store DIR] [--key-file F]
                           upload a model package and point those gateways' twins at it
  model-status --devices ID [ID ...]
                           what each gateway reports about the model it was asked to run

Common options: --lake URI (folder, abfss:// or az://), --hub PATH, --warehouse PATH,
--storage-option KEY=VALUE (repeatable), --engine duckdb|spark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola cloud", description=__doc__.split("\n")[0])
    p.add_argument("--lake", default="out/lake", help="lake folder or abfss:// / az:// URI (default out/lake)")
    p.add_argument("--hub", default="out/hub.sqlite", help="embedded hub file (default out/hub.sqlite)")
    p.add_argument("--warehouse", default="out/warehouse.duckdb", help="DuckDB warehouse file")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="deltalake storage option (account_name, sas_token, use_emulator, ...)")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest-stream", help="read new hub messages into bronze")
    st = sub.add_parser("stream", help="long-running stream job: windows, cloud scoring, anomalies")
    st.add_argument("--once", action="store_true", help="stop once the source has caught up")
    st.add_argument("--source", choices=("local", "eventhubs"), default=None,
                    help="embedded hub (default) or Event Hubs (env GONDOLA_STREAM_SOURCE)")
    st.add_argument("--consumer-group", default=None, help="default cloud-stream (env GONDOLA_STREAM_CONSUMER_GROUP)")
    st.add_argument("--model", default=None,
                    help="production model (.onnx / .tflite with its manifest), 'none' for no scoring "
                         "(env GONDOLA_STREAM_MODEL; default the shipped model)")
    st.add_argument("--planogram", default=None, help="planogram CSV (default silver.planogram in the lake)")
    st.add_argument("--lateness-min", type=float, default=10.0, help="allowed lateness, minutes (default 10)")
    st.add_argument("--snapshot-s", type=float, default=30.0, help="state snapshot interval, seconds (default 30)")
    st.add_argument("--batch", type=int, default=2000, help="messages per receive (default 2000)")
    b = sub.add_parser("ingest-batch", help="load master data / sales export CSVs")
    b.add_argument("folder")
    sub.add_parser("transform", help="incremental bronze -> silver -> gold")
    sub.add_parser("warehouse", help="build the DuckDB warehouse")
    d = sub.add_parser("dashboard", help="write the HTML dashboard")
    d.add_argument("--html", default="out/dashboard.html")
    s = sub.add_parser("synapse-ddl", help="T-SQL views for Synapse serverless")
    s.add_argument("--out", default=None)
    s.add_argument("--location", default="lake", help="lake folder under the external data source")
    s.add_argument("--data-source", default="gondola_lake", help="external data source name (default gondola_lake)")
    s.add_argument("--lake-url", default=None,
                   help="create the data source at this URL (https://<account>.dfs.core.windows.net/<filesystem>)")
    s.add_argument("--credential", default=None,
                   help="with --lake-url: create a database scoped credential of this name (managed identity)")
    pb = sub.add_parser("powerbi", help="write the Power BI connection file for the Synapse endpoint")
    pb.add_argument("--server", required=True, help="<workspace>-ondemand.sql.azuresynapse.net")
    pb.add_argument("--database", default="gondola", help="database holding the views (default gondola)")
    pb.add_argument("--mode", choices=("DirectQuery", "Import"), default="DirectQuery")
    pb.add_argument("--out", default="out/gondola.pbids", help="file to write (default out/gondola.pbids)")
    sub.add_parser("counts", help="rows per lake table")
    a = sub.add_parser("all", help="batch (optional), stream, transform, warehouse, dashboard")
    a.add_argument("--batch", default=None, help="folder of CSV files to load first")
    a.add_argument("--html", default="out/dashboard.html")
    pm = sub.add_parser("publish-model", help="upload a model package and write the gateways' twins")
    pm.add_argument("model", help="model file (.tflite / .onnx) with NAME.manifest.json beside it")
    pm.add_argument("--devices", nargs="+", required=True, help="gateway device ids (gw-<store>)")
    pm.add_argument("--store", default="out/models", help="model store folder (default out/models)")
    pm.add_argument("--key-file", default=None,
                    help="verify the package first (HMAC secret or Ed25519 public key; default "
                         "GONDOLA_MODEL_KEY_FILE)")
    ms = sub.add_parser("model-status", help="the model each gateway reports")
    ms.add_argument("--devices", nargs="+", required=True)
    return p


def _models_command(args) -> int:
    """``publish-model`` / ``model-status`` on the embedded hub's twins."""
    import os

    from cloud.rollout import FolderModelStore, publish_model, rollout_status
    from gondola.errors import ConfigError
    from gondola.hub import LocalHub

    hub = LocalHub(args.hub)
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

            with lake_lineage(open_storage(args.lake)).run("gondola.publish_model") as run:
                done = publish_model(args.model, store=FolderModelStore(args.store), twins=hub,
                                     device_ids=args.devices, key=key)
                run.inputs.append(Dataset("models", done["version"]))
                run.outputs += [Dataset("twin", device) for device in done["devices"]]
            print(f"model {done['version']} ({'signed' if done['signed'] else 'UNSIGNED'}, sha256 "
                  f"{done['sha256'][:12]}...) asked of {len(done['devices'])} gateway(s)")
        else:
            status = rollout_status(hub, args.devices)
            for device, d in status["devices"].items():
                print(f"{device:20s} desired {d['desired'] or '-':28s} running {d['version'] or '-':28s} "
                      f"{d['status']}{': ' + d['error'] if d['error'] else ''}")
            print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(status["by_status"].items())))
    finally:
        hub.close()
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
                                       planogram=args.planogram, allowed_lateness_min=args.lateness_min,
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
    args = _parser().parse_args(argv)
    from cloud.wiring import CloudSettings, build_cloud
    from gondola.errors import ConfigError

    options = {}
    for item in args.storage_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--storage-option {item!r} is not KEY=VALUE")
        options[key] = value
    if args.command in ("publish-model", "model-status"):
        return _models_command(args)
    if args.command == "stream":
        return _stream_command(args, options)
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
    cloud = build_cloud(CloudSettings(lake_uri=args.lake, hub_path=args.hub, warehouse_path=args.warehouse,
                                      storage_options=options or None, engine=args.engine), progress=say)
    cmd = args.command
    folder = args.folder if cmd == "ingest-batch" else getattr(args, "batch", None)
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
