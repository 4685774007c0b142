"""The dashboard's chart script carries master-data text safely (outside check, session 8)."""

from __future__ import annotations

import json

from cloud.dashboard import _script


def test_master_data_text_cannot_end_the_script_element_and_reads_back_unchanged():
    name = 'Evil </script><div id="pwned">x</div><script>&amp; <!-- '
    script = _script({"datasets": {"stockouts": [{"product": name}]}})
    assert "</" not in script and "<!--" not in script and "<script" not in script
    spec_text = script.split("const spec = ", 1)[1].split(";\n", 1)[0]
    assert json.loads(spec_text)["datasets"]["stockouts"][0]["product"] == name
