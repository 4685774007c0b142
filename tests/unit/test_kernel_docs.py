"""Documentation is tested where it can be: contract examples validate, every CLI command is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gondola.cli import COMMANDS
from gondola.contracts import EVENT_TYPES, validate_event

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_event_type_has_a_valid_json_example_in_docs_contracts():
    text = (DOCS / "contracts.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    assert {e["type"] for e in examples} == set(EVENT_TYPES)
    for example in examples:
        validate_event(example)


def test_every_cli_command_is_documented():
    text = (DOCS / "cli.md").read_text()
    for name in COMMANDS:
        assert f"gondola {name}" in text, f"docs/cli.md does not document 'gondola {name}'"


def test_the_documented_gateway_command_uses_the_demos_planogram_and_keeps_its_key_out_of_git():
    """Outside check on a fresh clone: the command in docs/gateway.md named a planogram no step
    writes (`master/planogram.csv`), and its data folder (`data/s001`) left the gateway's
    generated pseudonymization key as an untracked file that `git add -A` would commit."""
    import shutil
    import subprocess

    import pytest

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "gateway.md").read_text()
    command = re.search(r"gondola edge run (.+?)\n(.+?)\n", text)
    options = dict(re.findall(r"--([a-z-]+) (\S+)", command.group(1) + " " + command.group(2)))
    assert options["planogram"] == "out/demo/master/planogram.csv"  # what `make demo` writes
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for key in (f"{options['data-dir']}/pseudonym.key", "data/s001/pseudonym.key"):
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", key], cwd=root)
        assert ignored.returncode == 0, f"{key} is not ignored by git"


def test_every_documented_mosquitto_pub_event_is_accepted_years_after_the_docs_were_written(tmp_path):
    """QA (session 7): docs/gateway.md's example event had a fixed ts (2026-03-10), which a gateway
    quarantines as implausible (over 400 days behind its clock) from 2027-04-14 on. Each doc block
    that publishes is run as written (``mosquitto_pub`` and friends replaced by recorders, ``date``
    by a clock set to today and to two years on); the gateway's own check must accept every event."""
    import os
    import shutil
    import subprocess
    import time

    from edge.collector import check_payload

    real_date = shutil.which("date")
    blocks = [(page.name, block) for page in [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]
              for block in _code_blocks(page.read_text()) if "mosquitto_pub" in block]
    assert blocks, "no documented mosquitto_pub example left to check"
    shims = tmp_path / "bin"
    shims.mkdir()
    recorder = ('#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -t) t="$2"; shift;; -m) m="$2"; shift;; esac; shift; done\n'
                'printf "%s\\t%s\\n" "$t" "$m" >> "$PUBLISHED"\n')
    for name, body in [("mosquitto_pub", recorder), ("mosquitto_sub", "#!/bin/sh\n"), ("mosquitto", "#!/bin/sh\n"),
                       ("curl", "#!/bin/sh\n"),
                       ("date", '#!/bin/sh\nfor a in "$@"; do [ "$a" = "+%s" ] && { echo "$FAKE_NOW_S"; exit 0; }; done\n'
                                f'exec {real_date} "$@"\n')]:
        (shims / name).write_text(body)
        (shims / name).chmod(0o755)
    today = int(time.time())
    for now_s in (today, today + 2 * 365 * 86400):
        for page, block in blocks:
            published = tmp_path / f"published-{now_s}-{page}"
            env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}", PUBLISHED=str(published), FAKE_NOW_S=str(now_s))
            subprocess.run(["sh", "-c", block], env=env, cwd=tmp_path, check=True, timeout=30)
            events = [line.split("\t", 1) for line in published.read_text().splitlines()
                      if line.split("\t", 1)[1].startswith("{")]  # the junk examples are meant to be refused
            assert events, page
            for topic, payload in events:
                event, _ = check_payload(topic, payload.encode(), store_id=topic.split("/")[1], now_ms=now_s * 1000,
                                         pseudonym_key=None)
                assert abs(event["ts"] - now_s * 1000) < 60_000, (page, event["ts"])


def _code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown page (their text)."""
    blocks, block = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if block is None:
                block = []
            else:
                blocks.append("".join(block))
                block = None
        elif block is not None:
            block.append(line)
    return blocks
