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
