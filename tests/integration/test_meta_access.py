"""The lake's zones on a local lake, checked as other users would meet them: an analyst (the
analysts' group) reads gold with deltalake and cannot enter silver or bronze; anybody else
enters nothing. Needs root (to act as another user with setpriv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cloud.cli import main as cloud_main
from cloud.meta.access import local_modes
from cloud.synth import day_events, fill_hub
from gondola.hub import LocalHub

NOBODY = 65534
ANALYSTS_GID = 100  # Debian's "users" group stands in for the analysts' group


def _as(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"], "HOME": "/tmp"})


@pytest.fixture
def lake():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as other users")
    home = Path(tempfile.mkdtemp(prefix="gondola-zones-"))
    home.chmod(0o755)  # pytest's own tmp folders are private to root
    with LocalHub(home / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=1, facings=2, hours=6))
    assert cloud_main(["--lake", str(home / "lake"), "--hub", str(home / "hub.sqlite"),
                       "--warehouse", str(home / "wh.duckdb"), "all"]) == 0
    yield home / "lake"
    shutil.rmtree(home, ignore_errors=True)


def test_analysts_read_gold_and_nothing_else_and_others_read_nothing(lake, capsys):
    assert cloud_main(["--lake", str(lake), "provision", "--analysts-group", str(ANALYSTS_GID)]) == 0
    assert "gold: 0o2750" in capsys.readouterr().out
    for name, mode in local_modes().items():
        st = (lake if name == "/" else lake / name).stat()
        assert st.st_mode & 0o7777 == mode and st.st_gid == ANALYSTS_GID

    # os._exit: skip interpreter teardown, where deltalake's runtime can abort after the answer
    read = ("import os, sys; from deltalake import DeltaTable; print(DeltaTable({!r}).to_pyarrow_table().num_rows); "
            "sys.stdout.flush(); os._exit(0)")
    gold = _as(NOBODY, ANALYSTS_GID, read.format(str(lake / "gold" / "hourly_sales")))
    assert gold.returncode == 0 and int(gold.stdout) > 0, gold.stderr
    for table in ("silver/pos_line", "bronze/events"):
        denied = _as(NOBODY, ANALYSTS_GID, read.format(str(lake / table)))
        assert denied.returncode != 0 and "PermissionDenied" in denied.stderr
    listing = _as(NOBODY, ANALYSTS_GID, f"import os; os.listdir({str(lake)!r})")
    assert listing.returncode != 0 and "PermissionError" in listing.stderr  # traverse, not list
    stranger = _as(NOBODY, NOBODY, read.format(str(lake / "gold" / "hourly_sales")))
    assert stranger.returncode != 0 and "PermissionDenied" in stranger.stderr

    # The pipeline (the owner) keeps working, and new tables inherit the group.
    assert cloud_main(["--lake", str(lake), "--hub", str(lake.parent / "hub.sqlite"),
                       "--warehouse", str(lake.parent / "wh.duckdb"), "transform"]) == 0
    assert all(p.stat().st_gid == ANALYSTS_GID for p in (lake / "gold").iterdir())


def test_provision_refuses_a_missing_lake_or_group(tmp_path, capsys):
    from gondola.cli import main

    assert main(["cloud", "--lake", str(tmp_path / "none"), "provision"]) == 1
    assert "no lake" in capsys.readouterr().err
    (tmp_path / "lake").mkdir()
    assert main(["cloud", "--lake", str(tmp_path / "lake"), "provision", "--analysts-group", "no-such-group-x"]) == 1
    assert "no group" in capsys.readouterr().err
