"""The gateway image's dependency set, installed as the Dockerfile installs it.

The Docker engine does not run on the project's machines, so the image itself is not built in
the tests; what it would contain is: the ``edge`` extra alone, constrained by the image's lock
file, in a fresh virtual environment, from a copy of exactly the folders the Dockerfile copies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "deployment" / "iot-edge" / "modules" / "gateway"
LOCK = GATEWAY / "requirements.lock"

pytestmark = pytest.mark.slow


def _copied_sources(dest: Path) -> Path:
    """The build context the gateway Dockerfile copies (its COPY lines), nothing else."""
    copies = re.findall(r"^COPY (?!--)([^\n]+?) \./\S*$", (GATEWAY / "Dockerfile").read_text(), re.M)
    assert copies, "the Dockerfile copies no sources"
    for line in copies:
        for name in line.split():
            src = ROOT / name
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with ``pip install -c requirements.lock '.[edge]'`` in it."""
    work = tmp_path_factory.mktemp("gateway-image")
    src = _copied_sources(work / "src")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    done = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-c", str(LOCK), f"{src}[edge]"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the edge extra does not install with the lock file:\n{done.stderr[-3000:]}")
    return py


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_lock_file_is_the_whole_installed_set(gateway_venv):
    frozen = subprocess.run([str(gateway_venv), "-m", "pip", "freeze", "--exclude", "gondola"],
                            capture_output=True, text=True, check=True).stdout
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v
                 for n, _, v in (line.partition("==") for line in frozen.split()) if v}
    assert installed == _locked()
    check = subprocess.run([str(gateway_venv), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_the_image_carries_cryptography_and_prometheus_but_no_embedded_broker():
    pins = _locked()
    assert "cryptography" in pins and "prometheus-client" in pins
    # amqtt is the `broker` extra for local runs; the deployment runs Mosquitto as a module.
    assert not {"amqtt", "typer", "rich", "pydantic", "websockets", "tensorflow-cpu", "duckdb"} & set(pins)


def test_a_production_gateway_from_the_edge_extra_accepts_an_ed25519_signed_model(gateway_venv, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.model_packages import package

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public = tmp_path / "model-signing.pub"
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    desired = package(tmp_path / "models", "2026.12.01-ed", key=private_pem)
    probe = textwrap.dedent("""
        import json, sys
        import edge.wiring, models.runtime
        from edge.wiring import EdgeSettings, build_scorer, model_key
        s = EdgeSettings(store_id="s001", mode="production", model_path=sys.argv[1],
                         model_key_file=sys.argv[2], pseudonym_key=b"k" * 32).validate()
        strict = models.runtime.open_scorer(s.model_path, key=model_key(s))  # raises if refused
        scorer = build_scorer(s)
        try:
            import amqtt  # noqa: F401
            broker = True
        except ImportError:
            broker = False
        print(json.dumps({"strict": strict.name, "scorer": scorer.name, "amqtt": broker,
                          "from": edge.wiring.__file__}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(gateway_venv), "-c", probe, desired["path"], str(public)], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "2026.12.01-ed" in seen["strict"] and seen["scorer"] == seen["strict"]
    assert not seen["scorer"].startswith("poisson")
    assert seen["amqtt"] is False
    assert str(gateway_venv.parent.parent) in seen["from"]  # the fresh venv's copy, not the repo's


#: Locked packages published only as an sdist; each is pure Python (builds under QEMU with no
#: compiler), which is why the multi-architecture build still compiles nothing native.
PURE_PYTHON_SDISTS = {"paho-mqtt"}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_locked_package_has_a_wheel_for_both_image_architectures(arch, tmp_path):
    """pip resolves the lock for linux/amd64 and linux/arm64 (glibc up to bookworm's 2.36) with
    wheels only, without installing anything: the image build compiles nothing."""
    lock = tmp_path / "lock.txt"
    lock.write_text("".join(f"{n}=={v}\n" for n, v in _locked().items() if n not in PURE_PYTHON_SDISTS))
    platforms = [f"manylinux_2_{v}_{arch}" for v in (17, 24, 27, 28, 31, 34, 35, 36)] + [f"manylinux2014_{arch}"]
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                           "--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                           *[a for p in platforms for a in ("--platform", p)], "--target", str(tmp_path / "t"),
                           "-r", str(lock), "--report", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    wheels = [i["download_info"]["url"].rsplit("/", 1)[1] for i in json.loads(report.read_text())["install"]]
    assert len(wheels) == len(_locked()) - len(PURE_PYTHON_SDISTS)
    assert all(w.endswith((f"_{arch}.whl", "-any.whl")) for w in wheels), wheels
