"""The module images as their Dockerfiles describe them (the Docker engine does not run on the
project's machines; tests/integration/test_deploy_gateway_image.py installs what the gateway
image installs): pinned bases, non-root users, real health checks, a tight build context."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "deployment" / "iot-edge" / "modules"
DOCKERFILES = sorted(MODULES.glob("*/Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _resolved_bases(path: Path) -> list[str]:
    ins = _instructions(path)
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for word, rest in ins if word == "ARG" and "=" in rest)
    bases = []
    for word, rest in ins:
        if word == "FROM":
            image = rest.split()[0]
            bases.append(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image))
    return bases


def test_there_is_one_dockerfile_per_module():
    assert {p.parent.name for p in DOCKERFILES} == {p.parent.name for p in MODULES.glob("*/module.json")} \
        == {"gateway", "mosquitto"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_to_an_exact_release(dockerfile):
    stages = {rest.split()[-1] for word, rest in _instructions(dockerfile) if word == "FROM" and " AS " in rest.upper()}
    for image in _resolved_bases(dockerfile):
        if image in stages:
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", image
        assert re.match(r"\d+\.\d+\.\d+", tag) or "@sha256:" in image, f"{image}: not an exact release"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_run_as_a_non_root_user_with_a_health_check(dockerfile):
    ins = _instructions(dockerfile)
    last_stage = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    users = [rest for w, rest in ins[last_stage:] if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    checks = [rest for w, rest in ins[last_stage:] if w == "HEALTHCHECK"]
    assert len(checks) == 1 and "CMD" in checks[0]


def test_the_gateway_health_check_is_the_gateways_own_verdict():
    from edge.cli import _parser

    ins = _instructions(MODULES / "gateway" / "Dockerfile")
    check = next(rest for w, rest in ins if w == "HEALTHCHECK")
    cmd = eval(check.split("CMD", 1)[1].strip())  # the JSON exec form
    assert cmd[:3] == ["python", "-m", "edge"] and cmd[3] == "health"
    assert _parser().parse_args(cmd[3:]).command == "health"
    entry = eval(next(rest for w, rest in ins if w == "ENTRYPOINT"))
    assert entry == ["python", "-m", "edge", "run"]
    env = " ".join(rest for w, rest in ins if w == "ENV")
    assert "GONDOLA_LOG_FORMAT=iotedge" in env and "GONDOLA_HTTP_PORT=8080" in env


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    parts = rel.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "*/")) for p in prefixes) \
                or (pat.startswith("**/") and any(fnmatch.fnmatch(x, pat[3:]) for x in parts)):
            ignored = not neg
    return ignored


def test_the_build_context_sends_what_the_dockerfiles_copy_and_nothing_else():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = []
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word == "COPY" and not rest.startswith("--from"):
                copied += shlex.split(rest)[:-1]
    assert copied
    for src in copied:
        assert not _ignored(src.rstrip("/"), patterns), f"{src} is copied but .dockerignore drops it"
    for private in (".git/config", ".venv/bin/python", "tests/conftest.py", "out/demo/hub.sqlite", "cloud/cli.py",
                    "edge/__pycache__/cli.cpython-311.pyc", "data/edge/buffer.sqlite", "bench/results/edge.json"):
        assert _ignored(private, patterns), f"{private} would be sent to the image build"
