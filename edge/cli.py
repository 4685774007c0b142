"""``gondola edge run``: run one store gateway until interrupted (SIGTERM or Ctrl-C);
``gondola edge health``: ask a running gateway's ``/health`` (the container's HEALTHCHECK);
``gondola edge manifest``: render a fleet's or a ring's IoT Edge deployment (``edge.manifest``).

Options override ``GONDOLA_*`` environment variables (the IoT Edge deployment sets those), which
override the defaults of ``edge.wiring.EdgeSettings``.

At boot the gateway waits for the store broker with backoff (never exits because Mosquitto is
not up yet); it logs start, broker reconnects, uplink recovery and backlog drained, model
changes, live setting changes and shutdown (``edge.logs`` for the formats).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
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
    sub.add_parser("provision", add_help=False,
                   help="write a store broker's password file, topic ACLs, CA and TLS config (edge.access)")
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
    run.add_argument("--http-host", help="address the page binds to (default 127.0.0.1; another needs a token, "
                                         "GONDOLA_HTTP_TOKEN_FILE or the secret http-token)")
    run.add_argument("--mqtt-username", help="gateway's user on the store broker (env GONDOLA_MQTT_USERNAME)")
    run.add_argument("--mqtt-password-file", type=Path, help="file holding that user's password")
    run.add_argument("--mqtt-ca-file", type=Path, help="store CA certificate: connect with TLS (env GONDOLA_MQTT_CA_FILE)")
    run.add_argument("--cycle-s", type=float, help="seconds between scoring cycles")
    run.add_argument("--buffer-max-bytes", type=int, help="hard cap of the buffer")
    run.add_argument("--durability", choices=("NORMAL", "FULL"), help="FULL also survives power loss")
    run.add_argument("--log-level", help="debug, info, warning, error (env GONDOLA_LOG_LEVEL; live from the twin)")
    run.add_argument("--log-format", choices=("text", "iotedge", "json"),
                     help="iotedge: '<6> 2026-12-07 04:30:00.123 +00:00 [INF] - ...' (env GONDOLA_LOG_FORMAT)")
    run.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level debug")
    health = sub.add_parser("health", help="exit 0 when the running gateway's /health says healthy, else 1")
    health.add_argument("--port", type=int, help="the gateway's page port (env GONDOLA_HTTP_PORT, default 8080)")
    health.add_argument("--timeout", type=float, default=5.0)
    man = sub.add_parser("manifest", help="render the IoT Edge deployment of a fleet, or the layered one of a ring")
    man.add_argument("--fleet", required=True, help="a fleet of deployment/iot-edge/fleet.toml")
    man.add_argument("--ring", choices=("canary", "early", "all"), help="render the ring's layered deployment")
    man.add_argument("--version", required=True, dest="image_version", help="image tag of the release")
    man.add_argument("--out", type=Path, required=True, help="deployment JSON to write (FILE.meta.json beside it)")
    man.add_argument("--layout", type=Path, help="the iotedgedev-style folder (default: deployment/iot-edge)")
    man.add_argument("--no-validate", action="store_true", help="skip the schema check (it needs jsonschema)")
    return p


def manifest_main(args) -> int:
    """Render, validate, then write: a bad fleet, ring, variable or schema error writes nothing."""
    import json
    import os

    from edge.manifest import Layout, render, validate

    layout = Layout.load(args.layout)
    out = render(layout, fleet=args.fleet, ring=args.ring, version=args.image_version, env=os.environ)
    if not args.no_validate:
        validate(out, layout.root / "schemas")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Registry credentials are in it: owner-only, and keep it out of git (out/ is ignored).
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(out.content, f, indent=2)
        f.write("\n")
    meta_path = args.out.with_name(args.out.stem + ".meta.json")
    meta_path.write_text(json.dumps(out.meta, indent=2) + "\n")
    print(json.dumps(out.meta))
    return 0


def health_main(port: int | None, timeout: float) -> int:
    """One GET of ``/health`` on loopback; print the problems; 0 healthy, 1 not or unreachable."""
    import json
    import os
    import urllib.error
    import urllib.request

    from gondola.errors import GondolaError

    port = port or int(os.environ.get("GONDOLA_HTTP_PORT") or 8080)
    headers = {}
    token_file = os.environ.get("GONDOLA_HTTP_TOKEN_FILE")
    try:  # a page bound beyond loopback asks for its token, this check too
        from gondola.secrets import secret_text

        token = open(token_file).read().strip() if token_file else secret_text("http-token")
    except (OSError, GondolaError):
        token = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            json.load(resp)
            print("healthy")
            return 0
    except urllib.error.HTTPError as exc:
        try:
            problems = json.load(exc).get("problems") or [f"HTTP {exc.code}"]
        except ValueError:
            problems = [f"HTTP {exc.code}"]
        print("unhealthy: " + "; ".join(problems))
    except OSError as exc:
        print(f"unhealthy: /health not reachable on port {port}: {getattr(exc, 'reason', exc)}")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Raises: ConfigError (bad settings), StorageError (the buffer cannot be opened)."""
    import os

    from edge.logs import configure_logging
    from edge.wiring import EdgeSettings, build_gateway

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["provision"]:
        from edge.access import main as provision

        return provision(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "health":
        return health_main(args.port, args.timeout)
    if args.command == "manifest":
        return manifest_main(args)
    # Logging first, from the environment and options, so even a settings error is one line
    # in the configured format.
    level = "debug" if args.verbose else (args.log_level or os.environ.get("GONDOLA_LOG_LEVEL") or "info")
    fmt = args.log_format or os.environ.get("GONDOLA_LOG_FORMAT") or "text"
    configure_logging(level, fmt)
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "verbose", "broker", "port", "timeout") and v is not None}
    overrides["log_level"] = level
    if args.broker:
        host, port = parse_broker(args.broker)
        overrides.update(broker_host=host, broker_port=port)
    settings = EdgeSettings.from_env(**overrides)
    return run(settings, build_gateway)


def run(settings, build, stop: threading.Event | None = None) -> int:
    """Build, wait for the broker, start, serve the page, loop until ``stop`` or SIGTERM, stop."""
    from gondola import __version__
    from gondola.errors import ConfigError, TransportError

    from edge.ops import Watcher, broker_delays, wait_for_broker

    log = logging.getLogger("edge.gateway")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    token = None
    if settings.http_port:
        from edge.page import LOOPBACK
        from edge.wiring import http_token

        token = http_token(settings)
        if settings.http_host not in LOOPBACK and not token:  # refuse before anything is created
            raise ConfigError(f"the gateway page on {settings.http_host} needs a token "
                              "(GONDOLA_HTTP_TOKEN_FILE or the secret http-token)")
    gw = build(settings)
    log.info("gateway %s starting: version %s, mode %s, broker %s:%d, hub %s, buffer in %s, scorer %s",
             settings.store_id, __version__, settings.mode, settings.broker_host, settings.broker_port,
             settings.hub, settings.data_dir, gw.inference.scorer.name)
    delays = broker_delays()
    while True:
        if not wait_for_broker(settings.broker_host, settings.broker_port, stop, delays=delays):
            log.info("gateway %s: stopped before the store broker came up", settings.store_id)
            gw.stop()
            return 0
        try:
            gw.start()
            break
        except TransportError as exc:  # reachable but refused or timed out: keep trying
            delay = next(delays)
            log.warning("store broker session not established (%s); retrying in %.1f s", exc, delay)
            if stop.wait(delay):
                gw.stop()
                return 0
    backups = None
    if settings.backup_every_s > 0:
        from edge.backup import BufferBackups

        folder = settings.backup_dir or Path(str(settings.data_dir).rstrip("/") + "-backups")
        backups = BufferBackups(gw.buffer.path, folder, every_s=settings.backup_every_s,
                                keep=settings.backup_keep).start()
    server = None
    if settings.http_port:
        from edge.page import serve_page

        server = serve_page(gw, settings.http_host, settings.http_port, token=token)
    watcher = Watcher(gw).start()
    log.info("gateway %s started: subscribed on %s:%d, page %s", settings.store_id, settings.broker_host,
             settings.broker_port, f"{settings.http_host}:{settings.http_port}" if settings.http_port else "off")
    try:
        gw.run_forever(stop)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("gateway %s shutting down: committing received messages, saving state", settings.store_id)
        watcher.stop()
        if server is not None:
            server.shutdown()
        if backups is not None:
            backups.stop()
        gw.stop()
        log.info("gateway %s stopped", settings.store_id)
    return 0
