"""Render IoT Edge deployments for a fleet or a ring from the iotedgedev-style layout in
``deployment/iot-edge/`` (``gondola edge manifest``).

::

    from edge.manifest import Layout, render
    layout = Layout.load()                        # deployment/iot-edge of this checkout
    out = render(layout, fleet="prod", version="1.4.0", env=os.environ)              # base
    out = render(layout, fleet="prod", ring="canary", version="1.5.0rc1", env=...)   # layered
    out.content        # what `az iot edge deployment create --content` takes
    out.meta           # {"id", "targetCondition", "priority", "layered"}
    validate(out, layout)   # against the IoT Edge schemas (needs `jsonschema`)

Layout (the folder iotedgedev uses):

* ``deployment.template.json`` - the base deployment: edgeAgent (its storage bound to the host),
  edgeHub (routes with priorities and time-to-live, storage bound to the host), the
  ``mosquitto`` and ``gondola-gateway`` modules. ``createOptions`` are objects here;
  ``${MODULES.<folder>}`` names a module's image, ``${NAME}`` a pipeline variable.
* ``modules/<folder>/module.json`` - each module's image repository, tag and platforms.
* ``fleet.toml`` - fleets (registry, gateway ``GONDOLA_*`` environment, base priority) and their
  rings (layer priority, live ``settings`` for the gateway module twin).

Rendering (what iotedgedev's ``genconfig`` does, plus fleets and rings): variables are
substituted, ``createOptions`` become JSON strings split into ``createOptions``,
``createOptions01``, ... at 512 characters (IoT Hub's limit per value), ``$schema-template`` is
dropped. One manifest serves every store of a fleet: a store's identity comes from the
``IOTEDGE_DEVICEID`` the runtime gives each module (``gw-s001`` -> store ``s001``,
``edge.wiring.EdgeSettings.from_env``), never from the manifest.

A ring is a *layered* deployment: the gateway module at the ring's release and the ring's live
settings at ``properties.desired.settings`` of the gateway module twin (a layer sets that path
only, so the model the cloud rolls out at ``properties.desired.model`` is left alone). Target
conditions use the device twin tags ``fleet`` and ``ring``; a ring's layer also targets the
rings before it (``cloud.rollout.RINGS``), as the model rollout does.

Errors: ``ConfigError`` for an unknown fleet or ring, a missing variable (each one named) or a
layout file that does not parse; ``ManifestInvalid`` (a ConfigError) for a schema violation.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gondola.errors import ConfigError

__all__ = ["Layout", "Rendered", "render", "validate", "apply_layer", "schema_errors", "ManifestInvalid",
           "RINGS", "GATEWAY_MODULE", "split_create_options", "default_layout_dir"]

#: Rollout rings in order (the same as ``cloud.rollout.RINGS``; the edge may not import cloud).
RINGS = ("canary", "early", "all")
GATEWAY_MODULE = "gondola-gateway"
CREATE_OPTIONS_CHUNK = 512
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class ManifestInvalid(ConfigError):
    """The rendered deployment does not validate against the IoT Edge schemas."""


def default_layout_dir() -> Path:
    """``deployment/iot-edge`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "deployment" / "iot-edge"


@dataclass
class Layout:
    root: Path
    template: dict
    modules: dict[str, dict]   # folder -> module.json
    fleets: dict

    @classmethod
    def load(cls, root: str | Path | None = None) -> "Layout":
        """Raises: ConfigError when a layout file is missing or does not parse."""
        root = Path(root) if root else default_layout_dir()
        try:
            template = json.loads((root / "deployment.template.json").read_text())
            modules = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("modules/*/module.json"))}
            fleets = tomllib.loads((root / "fleet.toml").read_text()).get("fleet", {})
        except FileNotFoundError as exc:
            raise ConfigError(f"deployment layout incomplete: {exc.filename} missing") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"deployment layout in {root} does not parse: {exc}") from None
        return cls(root, template, modules, fleets)

    def image(self, folder: str, variables: Mapping[str, str]) -> str:
        """``repository:version`` of a module (one multi-architecture tag for amd64 and arm64)."""
        if folder not in self.modules:
            raise ConfigError(f"no module.json for module {folder!r} in {self.root / 'modules'}")
        img = self.modules[folder]["image"]
        return _substitute(f"{img['repository']}:{img['tag']['version']}", variables)


@dataclass
class Rendered:
    content: dict
    meta: dict
    base: dict  # the fleet's base deployment (for a ring: what its layer applies on top of)

    @property
    def layered(self) -> bool:
        return bool(self.meta["layered"])


def _substitute(value, variables: Mapping[str, str], missing: set | None = None):
    if isinstance(value, dict):
        return {k: _substitute(v, variables, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, missing) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        name = m.group(1)
        if name in variables:
            return str(variables[name])
        if missing is None:
            raise ConfigError(f"deployment variable {name} is not set")
        missing.add(name)
        return m.group(0)

    return _VAR.sub(one, value)


def split_create_options(settings: dict) -> dict:
    """``createOptions`` object -> compact JSON string(s): ``createOptions`` and, past 512
    characters, ``createOptions01``, ``createOptions02``, ... (IoT Hub's per-value limit)."""
    out = {k: v for k, v in settings.items() if not k.lower().startswith("createoptions")}
    opts = settings.get("createOptions")
    if opts is None:
        return out
    text = opts if isinstance(opts, str) else json.dumps(opts, separators=(",", ":"), sort_keys=True)
    chunks = [text[i:i + CREATE_OPTIONS_CHUNK] for i in range(0, len(text), CREATE_OPTIONS_CHUNK)] or [""]
    if len(chunks) > 8:
        raise ConfigError(f"createOptions of {len(text)} characters exceed IoT Hub's 8 x 512")
    for i, chunk in enumerate(chunks):
        out["createOptions" if i == 0 else f"createOptions{i:02d}"] = chunk
    return out


def _modules_of(agent: dict):
    desired = agent["properties.desired"]
    yield from desired.get("systemModules", {}).values()
    yield from desired.get("modules", {}).values()


def _fleet(layout: Layout, fleet: str) -> dict:
    if fleet not in layout.fleets:
        raise ConfigError(f"unknown fleet {fleet!r} (fleet.toml has: {', '.join(sorted(layout.fleets)) or 'none'})")
    return layout.fleets[fleet]


def _variables(layout: Layout, fleet: str, version: str, env: Mapping[str, str]) -> dict:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", version or ""):
        raise ConfigError(f"version {version!r} is not a valid image tag")
    f = _fleet(layout, fleet)
    variables = {k: v for k, v in env.items() if k.startswith("CONTAINER_REGISTRY_")}
    variables.setdefault("CONTAINER_REGISTRY_ADDRESS", f.get("registry", ""))
    variables["GONDOLA_VERSION"] = version
    for folder in layout.modules:
        variables[f"MODULES.{folder}"] = layout.image(folder, variables)
    return variables


def _base(layout: Layout, fleet: str, version: str, env: Mapping[str, str]) -> dict:
    variables = _variables(layout, fleet, version, env)
    missing: set = set()
    content = _substitute(copy.deepcopy(layout.template), variables, missing)
    if missing:
        raise ConfigError("deployment variables not set: " + ", ".join(sorted(missing)))
    content.pop("$schema-template", None)
    agent = content["modulesContent"]["$edgeAgent"]
    gateway = agent["properties.desired"]["modules"][GATEWAY_MODULE]
    for name, value in _fleet(layout, fleet).get("env", {}).items():
        if not re.fullmatch(r"GONDOLA_[A-Z0-9_]+", name):
            raise ConfigError(f"fleet {fleet}: env {name!r} is not a GONDOLA_* setting")
        gateway.setdefault("env", {})[name] = {"value": str(value)}
    for module in _modules_of(agent):
        module["settings"] = split_create_options(module["settings"])
    return content


def _ring_condition(fleet: str, ring: str) -> str:
    if ring == "all":
        return f"tags.fleet='{fleet}'"
    rings = RINGS[: RINGS.index(ring) + 1]
    return f"tags.fleet='{fleet}' AND (" + " OR ".join(f"tags.ring='{r}'" for r in rings) + ")"


def _deployment_id(*parts: str) -> str:
    # IoT Hub configuration ids: lower case, [a-z0-9-_:%+.@'], at most 128 characters.
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:128]


def render(layout: Layout, *, fleet: str, version: str, env: Mapping[str, str], ring: str | None = None) -> Rendered:
    """The fleet's base deployment, or (``ring``) the layered deployment of one ring.

    Raises:
        ConfigError: unknown fleet or ring, a variable not set, a bad version or env name.
    """
    f = _fleet(layout, fleet)
    base = _base(layout, fleet, version, env)
    if ring is None:
        meta = {"id": _deployment_id("gondola", fleet, "base", version), "targetCondition": f"tags.fleet='{fleet}'",
                "priority": int(f.get("base_priority", 10)), "layered": False}
        return Rendered(base, meta, base)
    rings = f.get("ring", {})
    if ring not in RINGS or ring not in rings:
        raise ConfigError(f"unknown ring {ring!r} for fleet {fleet} (fleet.toml has: {', '.join(rings) or 'none'})")
    r = rings[ring]
    settings = dict(r.get("settings", {}))
    gateway = base["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][GATEWAY_MODULE]
    layer = {"modulesContent": {
        "$edgeAgent": {f"properties.desired.modules.{GATEWAY_MODULE}": gateway},
        GATEWAY_MODULE: {"properties.desired.settings": settings},
    }}
    meta = {"id": _deployment_id("gondola", fleet, ring, version), "targetCondition": _ring_condition(fleet, ring),
            "priority": int(r.get("priority", 100)), "layered": True}
    return Rendered(layer, meta, base)


def apply_layer(base: dict, layer: dict) -> dict:
    """What a device gets when ``layer`` is applied over ``base``: a path such as
    ``properties.desired.modules.X`` sets that one node (module names hold no dots)."""
    merged = copy.deepcopy(base)
    for module, sections in layer["modulesContent"].items():
        target = merged["modulesContent"].setdefault(module, {})
        for path, value in sections.items():
            keys = path.split(".")
            if keys[:2] != ["properties", "desired"]:
                raise ConfigError(f"layer path {path!r} is not under properties.desired")
            if len(keys) == 2:
                target["properties.desired"] = copy.deepcopy(value)
                continue
            node = target.setdefault("properties.desired", {})
            for key in keys[2:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = copy.deepcopy(value)
    return merged


# ---- validation against the IoT Edge schemas -----------------------------------------------

def _registry(schema_dir: Path):
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    resources = []
    for path in sorted(schema_dir.glob("*.json")):
        schema = json.loads(path.read_text())
        # Each file is registered under its own id (draft 4 ``id``, later ``$id``); their
        # ``$ref``s name each other relative to it.
        uri = schema.get("id") or schema.get("$id")
        resources.append((uri, Resource.from_contents(schema, default_specification=DRAFT4)))
    return Registry().with_resources(resources)


def schema_errors(document: dict, schema_name: str, schema_dir: Path) -> list[str]:
    """Every violation of ``schema_name`` (a file in ``schema_dir``) by ``document``, as
    ``path: message`` lines; [] when it validates.

    Raises:
        ConfigError: ``jsonschema`` is not installed.
    """
    try:
        from jsonschema import Draft4Validator
    except ImportError:
        raise ConfigError("validating manifests needs the 'jsonschema' package (gondola[deploy])") from None
    schema = json.loads((schema_dir / schema_name).read_text())
    validator = Draft4Validator(schema, registry=_registry(schema_dir))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]


def validate(rendered: Rendered, schema_dir: str | Path) -> None:
    """A base deployment against ``azure-iot-edge-deployment-2.0.json``; a layer by what the
    device ends up with (the base with the layer applied) against the same schema.

    Raises:
        ManifestInvalid: with every violation, one per line.
        ConfigError: ``jsonschema`` is not installed.
    """
    schema_dir = Path(schema_dir)
    document = apply_layer(rendered.base, rendered.content) if rendered.layered else rendered.content
    errors = schema_errors(document, "azure-iot-edge-deployment-2.0.json", schema_dir)
    if errors:
        raise ManifestInvalid(f"{len(errors)} schema error(s): " + "; ".join(errors))
