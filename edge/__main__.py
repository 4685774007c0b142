"""``python -m edge run ...``: the same as ``gondola edge run ...`` (the IoT Edge module's entrypoint)."""

from edge.cli import main

raise SystemExit(main())
