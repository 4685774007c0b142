"""The lake's zones applied: ADLS Gen2 ACLs in production, file permissions on a local lake.

One statement of who may do what, ``cloud.azure.adls.ZONES``, drives both. On ADLS every role
is an Entra ID principal with its own ACL entry (``AdlsAdmin.ensure_lake``). A local lake is a
folder owned by the account that runs the pipeline (ingest, transform and training run as that
one account here, so their separation exists only on ADLS); POSIX mode bits then give:

* the owner: everything;
* the analysts' group (``--analysts-group``): traverse the lake root without listing it, read the
  layers ``ZONES`` opens to analysts (gold, stream, meta), nothing else;
* everybody else: nothing.

Layer folders get the set-group-id bit, so tables written later keep the analysts' group;
Delta writers create files with the process umask, which only matters below a folder the reader
can enter.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloud.azure.adls import ZONES
from gondola.errors import ConfigError

__all__ = ["apply_local_zones", "local_modes"]


def local_modes() -> dict[str, int]:
    """Mode of the lake root (``"/"``) and of each layer folder."""
    modes = {"/": 0o2710}
    for layer, roles in ZONES.items():
        modes[layer] = 0o2750 if "analysts" in roles else 0o2700
    return modes


def _group_id(group: str | int | None) -> int | None:
    if group is None:
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise ConfigError(f"no group {group!r} on this host") from None


def apply_local_zones(root: str | Path, *, analysts_group: str | int | None = None) -> dict[str, str]:
    """Create the layer folders if missing and set their modes (and group); return
    ``{path: mode}`` as applied (octal strings).

    Raises:
        ConfigError: ``root`` is not a folder, or the group does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"no lake at {root}")
    gid = _group_id(analysts_group)
    modes = local_modes()
    applied = {}
    for name, mode in modes.items():
        path = root if name == "/" else root / name
        path.mkdir(exist_ok=True)
        if gid is not None:
            os.chown(path, -1, gid)
            if "analysts" in ZONES.get(name, {}):
                for sub, dirs, files in os.walk(path):  # tables already there join the group
                    for entry in [sub, *(os.path.join(sub, f) for f in files)]:
                        os.chown(entry, -1, gid)
                    for d in dirs:
                        os.chmod(os.path.join(sub, d), stat.S_IMODE(os.stat(os.path.join(sub, d)).st_mode) | 0o2050)
        os.chmod(path, mode)
        applied[name] = oct(mode)
    return applied
