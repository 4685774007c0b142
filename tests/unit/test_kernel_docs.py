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
