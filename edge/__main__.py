"""``python -m edge run ...``: the same as ``gondola edge run ...`` (the IoT Edge module's
entrypoint), with the same conventions: a bad setting is one line and exit 1, a traceback only
with ``--debug`` or ``GONDOLA_DEBUG=1``."""

import sys

from gondola.cli import main

raise SystemExit(main(["edge", *sys.argv[1:]]))
