"""The embedded broker is an extra of its own (not in the gateway image)."""

from __future__ import annotations

import sys

import pytest

from edge.broker import start_broker, start_embedded
from gondola.errors import ConfigError


def test_without_amqtt_the_embedded_broker_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # import of it raises ImportError
    with pytest.raises(ConfigError, match=r"gondola\[broker\]"):
        start_embedded()
    with pytest.raises(ConfigError, match="Mosquitto"):
        start_broker("embedded")


def test_with_amqtt_installed_the_embedded_broker_still_starts():
    pytest.importorskip("amqtt.broker")
    broker = start_broker("embedded")
    try:
        assert broker.kind == "embedded" and broker.port > 0
    finally:
        broker.stop()
