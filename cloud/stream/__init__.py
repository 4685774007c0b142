"""The cloud's stream job: event-time windows, cloud-side scoring and anomaly detectors.

Reads gateway messages through the lake's ``EventSource`` (embedded hub or Event Hubs) and
writes ``stream.*`` Delta tables exactly once in effect. See docs/stream.md.
"""

from cloud.stream.job import StreamJob
from cloud.stream.pipeline import StreamConfig
from cloud.stream.wiring import StreamSettings, build_stream_job

__all__ = ["StreamJob", "StreamConfig", "StreamSettings", "build_stream_job"]
