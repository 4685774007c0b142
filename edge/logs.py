"""The gateway's log lines: level from the environment (and live from the module twin), in IoT
Edge's syslog-prefixed form, as JSON lines, or as plain text.

::

    from edge.logs import configure_logging, set_level
    configure_logging(level="INFO", fmt="iotedge")   # GONDOLA_LOG_LEVEL / GONDOLA_LOG_FORMAT
    set_level("DEBUG")                                 # the twin's desired settings.log_level

Formats (``GONDOLA_LOG_FORMAT``):

* ``iotedge`` - what IoT Edge's own modules write, so ``iotedge logs`` and the log upload
  (``UploadModuleLogs`` with ``filter.loglevel``) parse the severity::

      <6> 2026-12-07 04:30:00.123 +00:00 [INF] - gateway s001 started ...

  ``<N>`` is the syslog severity (7 debug, 6 info, 4 warning, 3 error, 2 critical).
* ``json`` - one JSON object per line (``ts``, ``level``, ``severity``, ``logger``, ``msg``,
  ``exc`` when there is a traceback), for a log shipper that parses JSON.
* ``text`` - ``2026-12-07 04:30:00,123 INFO edge.gateway: ...`` for a developer's terminal.

Lines go to stderr (the container runtime collects it). Secrets are never passed to the
logger (URLs are logged without their query, keys never), so no filter is needed here.

Errors: ``ConfigError`` for an unknown level or format.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from gondola.errors import ConfigError

__all__ = ["configure_logging", "set_level", "parse_level", "FORMATS", "IotEdgeFormatter", "JsonFormatter"]

FORMATS = ("text", "iotedge", "json")

#: Python level -> (syslog severity, IoT Edge's three-letter level).
_SYSLOG = ((logging.CRITICAL, 2, "FTL"), (logging.ERROR, 3, "ERR"), (logging.WARNING, 4, "WRN"),
           (logging.INFO, 6, "INF"), (logging.DEBUG, 7, "DBG"))


def _severity(levelno: int) -> tuple[int, str]:
    for floor, sev, abbrev in _SYSLOG:
        if levelno >= floor:
            return sev, abbrev
    return 7, "VRB"


def parse_level(value: str | int) -> int:
    """``"info"``, ``"WARNING"``, ``"warn"``, ``"20"`` or ``20`` -> a logging level number.

    Raises:
        ConfigError: not a level.
    """
    if isinstance(value, int) or str(value).strip().isdigit():
        return int(value)
    name = str(value).strip().upper()
    name = {"WARN": "WARNING", "ERR": "ERROR", "FATAL": "CRITICAL", "TRACE": "DEBUG", "VERBOSE": "DEBUG"}.get(name, name)
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ConfigError(f"log level must be debug, info, warning, error or critical, got {value!r}")
    return level


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}"


class IotEdgeFormatter(logging.Formatter):
    """``<6> 2026-12-07 04:30:00.123 +00:00 [INF] - message`` (UTC), traceback lines after it."""

    def format(self, record: logging.LogRecord) -> str:
        sev, abbrev = _severity(record.levelno)
        line = f"<{sev}> {_utc(record)} +00:00 [{abbrev}] - {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in ``exc`` (one line stays one record)."""

    def format(self, record: logging.LogRecord) -> str:
        sev, _ = _severity(record.levelno)
        out = {"ts": _utc(record).replace(" ", "T") + "Z", "level": record.levelname.lower(),
               "severity": sev, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "iotedge":
        return IotEdgeFormatter()
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")


_HANDLER_NAME = "gondola-edge"


def configure_logging(level: str | int = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt`` at ``level``.

    Idempotent: a second call replaces the handler it installed, not anyone else's.

    Raises:
        ConfigError: unknown level or format (nothing is changed then).
    """
    levelno, formatter = parse_level(level), _formatter(fmt)
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    set_level(levelno)
    return handler


def set_level(level: str | int) -> int:
    """Change the gateway's log level while it runs (the twin's ``settings.log_level``).

    Raises:
        ConfigError: not a level.
    """
    levelno = parse_level(level)
    logging.getLogger().setLevel(levelno)
    # Chatty libraries stay at WARNING unless the gateway itself is at DEBUG.
    for noisy in ("azure", "paho", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if levelno <= logging.DEBUG else logging.WARNING)
    return levelno
