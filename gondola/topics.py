"""MQTT topic scheme of the store LAN.

    gondola/{store_id}/{device_kind}/{device_id}    device -> gateway events (QoS 1)
    gondola/{store_id}/alerts/{facing_id}           gateway -> store staff alerts

``device_kind`` is one of ``pos``, ``shelf``, ``handheld``.
"""

from __future__ import annotations

__all__ = ["DEVICE_KINDS", "device_topic", "store_subscription", "alert_topic", "parse_device_topic"]

DEVICE_KINDS = ("pos", "shelf", "handheld")
ROOT = "gondola"


def device_topic(store_id: str, device_kind: str, device_id: str) -> str:
    if device_kind not in DEVICE_KINDS:
        raise ValueError(f"device kind {device_kind!r} not one of {DEVICE_KINDS}")
    return f"{ROOT}/{store_id}/{device_kind}/{device_id}"


def store_subscription(store_id: str) -> list[str]:
    """Topic filters a store gateway subscribes to."""
    return [f"{ROOT}/{store_id}/{kind}/+" for kind in DEVICE_KINDS]


def alert_topic(store_id: str, facing_id: str) -> str:
    return f"{ROOT}/{store_id}/alerts/{facing_id}"


def parse_device_topic(topic: str) -> tuple[str, str, str] | None:
    """``(store_id, device_kind, device_id)`` of a device topic, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] not in DEVICE_KINDS:
        return None
    return parts[1], parts[2], parts[3]
