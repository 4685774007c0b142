"""Build one store gateway from one settings object: the only place that wires real adapters.

::

    from edge.wiring import EdgeSettings, build_gateway
    settings = EdgeSettings(store_id="s001", broker_host="127.0.0.1", broker_port=1883,
                            data_dir=Path("out/gw/s001"), hub="local", hub_path=Path("out/hub.sqlite"),
                            planogram_path=Path("out/master/planogram.csv"))
    # or EdgeSettings.from_env() - the same settings as an IoT Edge module gets them
    gw = build_gateway(settings, clock=clock, scorer=None)   # scorer None -> PoissonScorer
    gw.start()             # collector connected and subscribed (returns once SUBACK arrived)
    gw.committed_count()   # messages committed to buffer or quarantine so far
    gw.run_cycle(now_ms)   # score all facings, raise/clear alerts; returns the edge.alert events
    gw.uplink_once(); gw.drain()   # send pending batches; return events the hub accepted
    gw.health()            # edge.health data fields and more
    gw.stop()

``hub="local"`` sends to the embedded hub file (``LocalHubTransport``); ``hub="iothub"`` uses
``edge.azure.iothub.IotHubTransport`` (from the IoT Edge environment, or a connection string
in ``GONDOLA_IOTHUB_CONNECTION_STRING``); tests may pass ``transport=`` directly.

Errors: ``ConfigError`` for bad settings (missing pseudonymization key in production, missing
planogram, unknown hub), ``TransportError`` from ``start`` when the broker is unreachable,
``StorageError`` when the buffer cannot be opened.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from gondola.clock import Clock, SystemClock
from gondola.errors import ConfigError, TransportError
from gondola.privacy import KeyRing, check_key

__all__ = ["EdgeSettings", "build_gateway", "wire_live_settings", "store_id_of_device", "ENV_PREFIX"]

log = logging.getLogger(__name__)

ENV_PREFIX = "GONDOLA_"


@dataclass
class EdgeSettings:
    """Everything a gateway needs. Each field can come from ``GONDOLA_<FIELD>`` (upper case)."""

    store_id: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    data_dir: Path = Path("data/edge")
    hub: str = "local"  # local | iothub
    hub_path: Path = Path("out/hub.sqlite")
    planogram_path: Path | None = None
    #: HMAC key for loyalty ids; None: required in production, a per-data-dir key file otherwise.
    pseudonym_key: bytes | None = field(default=None, repr=False)
    #: A file holding the key (a mounted secret: keeps it out of the deployment manifest).
    pseudonym_key_file: Path | None = None
    mode: str = "dev"  # dev | demo | production
    horizon_min: int = 120
    #: the stock-out model (int8 .tflite or .onnx, manifest beside it); None: the Poisson baseline
    model_path: Path | None = None
    #: key that verifies the model's signed manifest; production requires one with a model
    model_key_file: Path | None = None
    #: raise an alert at this probability; None: the model's operating threshold, else 0.6
    raise_at: float | None = None
    clear_at: float = 0.3
    min_dwell_min: int = 15
    #: the alert budget: at most about this many forecasts a store-day, the surest first (the
    #: store's threshold rises above raise_at to keep it; models.alert_budget); None: the model
    #: manifest's (else 12), 0: no budget
    forecasts_per_store_day: float | None = None
    buffer_max_bytes: int = 2 * 1024**3
    durability: str = "NORMAL"  # NORMAL survives kill -9; FULL also power loss
    encoding: str = "gzip"
    level: int = 6
    bandwidth_bytes_s: int = 0  # 0: no cap
    live_share: float = 0.2
    round_rows: int = 4000
    group_max: int = 1000
    group_wait_ms: int = 5
    client_id: str = ""  # MQTT client id; default gondola-gw-<store_id>
    http_port: int = 0  # local page; 0: off
    http_host: str = "127.0.0.1"
    #: the page's token when bound beyond loopback (else the secret ``http-token``)
    http_token_file: Path | None = None
    cycle_s: float = 60.0  # run loop: seconds between scoring cycles
    health_every_s: float = 300.0
    #: twin reported properties: patched with a health report only when they changed, and at
    #: most this often (a changed scorer_errors or model goes out with the next report at once)
    twin_every_s: float = 900.0
    #: freshness budget of POS lines, restocks and readings: sent at the latest this long after
    #: they arrived, in messages that fill IoT Hub's 4 KB billing units (alerts and health go
    #: at once; 0: everything at once). See edge.uplink.
    uplink_delay_s: float = 900.0
    #: facing-state snapshots (the facings changed since the last one; a clean stop saves all).
    #: After a crash the restored state is at most this old: units come back with each facing's
    #: next reading, sales rates (hours-long decay) lose that much history.
    snapshot_every_s: float = 1800.0
    gap_grace_s: float = 60.0  # a gap still open after this is reported as an edge.gap event
    #: store broker access (edge.access): user name, a file holding the password (else the secret
    #: ``mqtt-password`` from GONDOLA_SECRETS), and the store CA, which turns TLS on
    mqtt_username: str | None = None
    mqtt_password_file: Path | None = None
    mqtt_ca_file: Path | None = None
    #: online buffer backups (edge.backup): every this many seconds, 0: off; newest backup_keep kept
    backup_every_s: float = 6 * 3600.0
    backup_keep: int = 4
    #: None: ``<data_dir>-backups`` beside the data folder; mount another disk here in production
    backup_dir: Path | None = None
    log_level: str = "info"  # debug | info | warning | error; live from the twin (edge.live)
    log_format: str = "text"  # text | iotedge (``<6> ...`` syslog-prefixed) | json (edge.logs)

    def validate(self) -> "EdgeSettings":
        """Raises: ConfigError naming the bad setting."""
        if not self.store_id or "/" in self.store_id or "+" in self.store_id or "#" in self.store_id:
            raise ConfigError(f"store_id {self.store_id!r} must be non-empty without MQTT wildcards")
        if self.hub not in ("local", "iothub"):
            raise ConfigError(f"hub must be local or iothub, got {self.hub!r}")
        if self.mode not in ("dev", "demo", "production"):
            raise ConfigError(f"mode must be dev, demo or production, got {self.mode!r}")
        if self.durability not in ("NORMAL", "FULL"):
            raise ConfigError(f"durability must be NORMAL or FULL, got {self.durability!r}")
        if self.encoding not in ("gzip", "deflate", "identity"):
            raise ConfigError(f"encoding must be gzip, deflate or identity, got {self.encoding!r}")
        if not 0 <= self.live_share < 1:
            raise ConfigError("live_share must be in [0, 1)")
        for name in ("cycle_s", "health_every_s", "twin_every_s", "snapshot_every_s", "buffer_max_bytes"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("uplink_delay_s", "gap_grace_s", "bandwidth_bytes_s", "backup_every_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.broker_port < 65536 or not 0 <= self.http_port < 65536:
            bad = "broker_port" if not 0 < self.broker_port < 65536 else "http_port"
            raise ConfigError(f"{bad} must be a TCP port, got {getattr(self, bad)}")
        if self.raise_at is not None and not 0 <= self.clear_at < self.raise_at <= 1:
            raise ConfigError("need 0 <= clear_at < raise_at <= 1")
        if self.forecasts_per_store_day is not None and not 0 <= self.forecasts_per_store_day < float("inf"):
            raise ConfigError(f"forecasts_per_store_day must be >= 0 (0: no budget), got {self.forecasts_per_store_day}")
        if self.mode == "production" and self.model_path is not None and self.model_key_file is None:
            raise ConfigError("production mode needs GONDOLA_MODEL_KEY_FILE to verify the model's signature")
        if self.pseudonym_key is not None:
            check_key(self.pseudonym_key)
        from edge.logs import FORMATS, parse_level

        parse_level(self.log_level)
        if self.log_format not in FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(FORMATS)}, got {self.log_format!r}")
        return self

    @property
    def gateway_device_id(self) -> str:
        """device_id of the gateway's own events (alerts, health, gap reports)."""
        return f"gw-{self.store_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "EdgeSettings":
        """Settings from ``GONDOLA_*`` variables (as the IoT Edge deployment sets them), then
        ``overrides`` (the CLI's options). ``GONDOLA_PSEUDONYM_KEY`` is read as UTF-8 bytes.

        Raises:
            ConfigError: a value does not parse or ``store_id`` is missing.
        """
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "store_id" not in values and env.get("IOTEDGE_DEVICEID"):
            # Under IoT Edge one manifest serves every store: the runtime names the device.
            values["store_id"] = store_id_of_device(env["IOTEDGE_DEVICEID"])
        if "store_id" not in values:
            raise ConfigError("store id missing: set GONDOLA_STORE_ID or --store-id (or run under IoT Edge)")
        return cls(**values).validate()


def store_id_of_device(device_id: str) -> str:
    """IoT Hub device id of a store gateway -> store id: ``gw-s001`` -> ``s001`` (the gateway's
    own events use ``gw-<store_id>``, so the device is named the same way); another name is
    taken as the store id itself."""
    return device_id[3:] if device_id.startswith("gw-") and len(device_id) > 3 else device_id


_INT = {"broker_port", "horizon_min", "min_dwell_min", "buffer_max_bytes", "level", "bandwidth_bytes_s",
        "round_rows", "group_max", "group_wait_ms", "http_port", "backup_keep"}
_FLOAT = {"raise_at", "clear_at", "forecasts_per_store_day", "live_share", "cycle_s", "health_every_s", "gap_grace_s", "backup_every_s",
          "twin_every_s", "snapshot_every_s", "uplink_delay_s"}
_PATH = {"data_dir", "hub_path", "planogram_path", "pseudonym_key_file", "model_path", "model_key_file", "backup_dir",
         "mqtt_password_file", "mqtt_ca_file", "http_token_file"}


def _parse(name: str, raw: str):
    try:
        if name in _INT:
            return int(raw)
        if name in _FLOAT:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    if name in _PATH:
        return Path(raw)
    if name == "pseudonym_key":
        return raw.encode()
    return raw


def _key_or_ring(material: bytes):
    """One key -> the key (version 1); several lines -> a ``KeyRing`` (rotation, gondola.privacy)."""
    ring = KeyRing.parse(material)
    return ring.keys[0] if ring.version == 1 else ring


def resolve_pseudonym_key(settings: EdgeSettings, env: Mapping[str, str] | None = None):
    """The key (or key ring) to use: the configured one, the secret store's ``pseudonym-key``
    (``GONDOLA_SECRETS``: a secrets folder or Key Vault), else (dev/demo only) a random
    per-data-dir key file.

    Raises:
        ConfigError: production mode without a key, or a key shorter than 16 bytes.
    """
    if settings.pseudonym_key is not None:
        return _key_or_ring(settings.pseudonym_key)
    if settings.pseudonym_key_file is not None:
        try:
            return _key_or_ring(Path(settings.pseudonym_key_file).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the pseudonymization key file: {exc.strerror}") from None
    from gondola.secrets import secret_store_from_env

    stored = secret_store_from_env(env).get("pseudonym-key")
    if stored is not None:
        return _key_or_ring(stored)
    if settings.mode == "production":
        raise ConfigError("GONDOLA_PSEUDONYM_KEY is required in production mode (refusing to start)")
    path = Path(settings.data_dir) / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        log.info("generated a per-gateway pseudonymization key file (dev/demo mode)")
    return check_key(path.read_bytes())


def _file_or_secret(path: Path | None, secret: str, what: str, env: Mapping[str, str] | None) -> str | None:
    """A text secret from its mounted file when one is configured, else from the secret store.

    Raises:
        ConfigError: the file cannot be read.
    """
    if path is not None:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file: {exc.strerror}") from None
    from gondola.secrets import secret_text

    return secret_text(secret, env)


def mqtt_auth(settings: EdgeSettings, env: Mapping[str, str] | None = None):
    """The gateway's ``MqttAuth`` for the store broker, or None when the broker is open (dev).

    Raises:
        ConfigError: a user name without a password, an unreadable password or CA file, or
            production mode on an open broker.
    """
    from edge.mqtt import MqttAuth

    if not settings.mqtt_username and settings.mqtt_password_file is not None:
        # `gondola edge provision` names the gateway's broker user after its device, so one
        # deployment manifest serves every store (only the mounted password differs).
        settings.mqtt_username = settings.gateway_device_id
    if not settings.mqtt_username and settings.mqtt_ca_file is None:
        if settings.mode == "production":
            raise ConfigError("production mode needs GONDOLA_MQTT_USERNAME and GONDOLA_MQTT_CA_FILE "
                              "(the store broker's credentials and CA: gondola edge provision)")
        return None
    password = None
    if settings.mqtt_username:
        password = _file_or_secret(settings.mqtt_password_file, "mqtt-password", "MQTT password", env)
        if not password:
            raise ConfigError("GONDOLA_MQTT_USERNAME is set but no password: set GONDOLA_MQTT_PASSWORD_FILE "
                              "or the secret mqtt-password")
    if settings.mqtt_ca_file is not None and not Path(settings.mqtt_ca_file).is_file():
        raise ConfigError(f"no CA file at {settings.mqtt_ca_file}")
    return MqttAuth(settings.mqtt_username, password,
                    str(settings.mqtt_ca_file) if settings.mqtt_ca_file is not None else None)


def http_token(settings: EdgeSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The local page's token: ``http_token_file``, else the secret ``http-token``, else None.

    Raises:
        ConfigError: the token file cannot be read, or a token shorter than 16 characters.
    """
    token = _file_or_secret(settings.http_token_file, "http-token", "page token", env)
    if token is not None and len(token) < 16:
        raise ConfigError("the page token must be at least 16 characters")
    return token or None


def build_transport(settings: EdgeSettings, clock: Clock):
    """The hub transport the settings name.

    Raises:
        ConfigError: unknown hub, or the IoT Hub adapter's configuration is missing.
    """
    if settings.hub == "local":
        from gondola.hub import LocalHub

        from edge.transport import LocalHubTransport

        return LocalHubTransport(LocalHub(settings.hub_path, clock=clock), settings.gateway_device_id)
    if settings.hub == "iothub":
        from edge.azure.iothub import IotHubTransport

        return IotHubTransport.from_env()
    raise ConfigError(f"unknown hub {settings.hub!r}")


DEFAULT_RAISE_AT = 0.6


def build_scorer(settings: EdgeSettings):
    """The model the settings name, verified and smoke-tested, or the Poisson baseline.

    Never raises for a bad model: the gateway must keep alerting, so ``load_scorer`` logs why
    and falls back to the baseline.
    """
    from models.runtime import load_scorer
    from models.scoring import PoissonScorer

    horizon_h = settings.horizon_min / 60
    if settings.model_path is None:
        return PoissonScorer(horizon_h=horizon_h)
    return load_scorer(settings.model_path, horizon_h, key=model_key(settings))


def model_key(settings: EdgeSettings) -> bytes | None:
    """The key that verifies model manifests (HMAC secret or Ed25519 public key), if configured.

    Raises:
        ConfigError: the key file cannot be read.
    """
    if settings.model_key_file is None:
        return None
    try:
        return Path(settings.model_key_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the model key file: {exc.strerror}") from None


def build_gateway(settings: EdgeSettings, *, clock: Clock | None = None, scorer=None, transport=None):
    """Wire a :class:`edge.gateway.Gateway` (buffer, collector, uplink, inference, transport).

    Raises:
        ConfigError, StorageError: see the module docstring.
    """
    from edge.buffer import BufferPolicy, SqliteBuffer
    from edge.gateway import Gateway
    from edge.inference import Inference, load_planogram
    from models.alert_budget import AlertBudget
    from edge.model_manager import ModelManager
    from edge.uplink import Uplink

    settings.validate()
    # Inputs first: a missing planogram refuses to start before anything is created on disk.
    planogram = load_planogram(settings.planogram_path, settings.store_id) if settings.planogram_path else []
    clock = clock or SystemClock()
    auth = mqtt_auth(settings)  # checked before anything is created
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = resolve_pseudonym_key(settings)
    buffer = SqliteBuffer(data_dir / "buffer.sqlite",
                          BufferPolicy(max_bytes=settings.buffer_max_bytes, durability=settings.durability))
    scorer = scorer or build_scorer(settings)
    raise_at, clear_at = settings.raise_at, settings.clear_at
    if raise_at is None:
        # The model's operating threshold; the clear level stays below it.
        raise_at = getattr(scorer, "threshold", None) or DEFAULT_RAISE_AT
        clear_at = min(clear_at, raise_at / 2)
    per_day = settings.forecasts_per_store_day
    inference = Inference(planogram, scorer, raise_at=raise_at, clear_at=clear_at,
                          min_dwell_ms=settings.min_dwell_min * 60_000,
                          budget=None if per_day is None else AlertBudget(per_day or None))
    transport = transport or build_transport(settings, clock)
    models = ModelManager(data_dir / "models", inference, clock=clock, horizon_h=settings.horizon_min / 60,
                          key=model_key(settings), require_signature=settings.mode == "production",
                          report=transport.patch_reported, follow_threshold=settings.raise_at is None,
                          default_raise_at=DEFAULT_RAISE_AT)
    models.restore()  # a model rolled out before a restart wins over the configured one
    uplink = Uplink(buffer, transport, clock, store_id=settings.store_id, encoding=settings.encoding,
                    level=settings.level, round_rows=settings.round_rows, live_share=settings.live_share,
                    bandwidth_bytes_s=settings.bandwidth_bytes_s or None,
                    delay_ms=int(settings.uplink_delay_s * 1000))
    gw = Gateway(settings, clock=clock, buffer=buffer, inference=inference, uplink=uplink,
                 transport=transport, pseudonym_key=key, models=models)
    gw.mqtt_auth = auth
    wire_live_settings(gw)
    return gw


def wire_live_settings(gw):
    """Follow the twin's desired ``settings`` (``edge.live``); the first desired read at
    ``Gateway.start`` applies what the cloud set while the gateway was down."""
    from edge.live import LiveSettings

    gw.live = LiveSettings(gw, report=gw.transport.patch_reported)
    try:
        gw.transport.on_desired(gw.live.on_desired)
    except TransportError as exc:  # offline: the health-time poll fires it later
        log.warning("live settings: desired-property pushes not enabled (%s)", exc)
    return gw.live
