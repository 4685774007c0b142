"""``gondola edge run``: run one store gateway until interrupted.

Options override ``GONDOLA_*`` environment variables (the IoT Edge deployment sets those), which
override the defaults of ``edge.wiring.EdgeSettings``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

__all__ = ["main"]


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``:PORT`` (loopback) -> (host, port).

    Raises:
        ConfigError: the port is not a number in 1..65535.
    """
    from gondola.errors import ConfigError

    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ConfigError(f"--broker must be HOST or HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola edge", description="Run a store gateway.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one gateway (collector, buffer, inference, uplink, page)")
    run.add_argument("--store-id", help="store id (env GONDOLA_STORE_ID)")
    run.add_argument("--broker", help="store broker host:port (env GONDOLA_BROKER_HOST / _PORT)")
    run.add_argument("--data-dir", type=Path, help="buffer and state folder (env GONDOLA_DATA_DIR)")
    run.add_argument("--hub", choices=("local", "iothub"), help="where batches go (env GONDOLA_HUB)")
    run.add_argument("--hub-path", type=Path, help="embedded hub file for --hub local (env GONDOLA_HUB_PATH)")
    run.add_argument("--planogram", type=Path, dest="planogram_path", help="planogram.csv (env GONDOLA_PLANOGRAM_PATH)")
    run.add_argument("--model", type=Path, dest="model_path",
                     help="int8 .tflite (or .onnx) stock-out model; default: Poisson baseline (env GONDOLA_MODEL_PATH)")
    run.add_argument("--model-key-file", type=Path, help="key verifying the model's signed manifest")
    run.add_argument("--mode", choices=("dev", "demo", "production"), help="production needs GONDOLA_PSEUDONYM_KEY")
    run.add_argument("--http-port", type=int, help="local page and /metrics port; 0 off (env GONDOLA_HTTP_PORT)")
    run.add_argument("--cycle-s", type=float, help="seconds between scoring cycles")
    run.add_argument("--buffer-max-bytes", type=int, help="hard cap of the buffer")
    run.add_argument("--durability", choices=("NORMAL", "FULL"), help="FULL also survives power loss")
    run.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Raises: ConfigError (bad settings), TransportError (broker unreachable at start)."""
    from edge.wiring import EdgeSettings, build_gateway

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "broker") and v is not None}
    if args.broker:
        host, port = parse_broker(args.broker)
        overrides.update(broker_host=host, broker_port=port)
    settings = EdgeSettings.from_env(**overrides)
    gw = build_gateway(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    gw.start()
    backups = None
    if settings.backup_every_s > 0:
        from edge.backup import BufferBackups

        folder = settings.backup_dir or Path(str(settings.data_dir).rstrip("/") + "-backups")
        backups = BufferBackups(gw.buffer.path, folder, every_s=settings.backup_every_s,
                                keep=settings.backup_keep).start()
    server = None
    if settings.http_port:
        from edge.page import serve_page

        server = serve_page(gw, settings.http_host, settings.http_port)
    print(f"gateway {settings.store_id}: subscribed on {settings.broker_host}:{settings.broker_port}, "
          f"buffer in {settings.data_dir}, hub {settings.hub}", flush=True)
    try:
        gw.run_forever(stop)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
        if backups is not None:
            backups.stop()
        gw.stop()
    return 0
