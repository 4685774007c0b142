"""The ``gondola`` command: one entry point, each subcommand owned by its package.

The kernel only dispatches; each package's CLI module is imported when its command runs, so
``gondola sim ...`` works on a machine with only the simulator's dependencies.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

#: subcommand -> (module:function taking argv, one-line help). docs/cli.md documents each.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gondola.demo:main", "run simulated stores through gateways, lake, warehouse and dashboard"),
    "sim": ("firmware_sim.cli:main", "simulate stores: generate history files or publish live over MQTT"),
    "edge": ("edge.cli:main", "run a store gateway"),
    "cloud": ("cloud.cli:main", "ingest, transform the lake, build the warehouse and reports"),
    "train": ("cloud.meta.cli:train_main", "train the stock-out model from gold features"),
    "eval": ("models.cli:eval_main", "evaluate baselines and models on held-out simulated stores"),
    "catalog": ("cloud.meta.cli:catalog_main", "export the data catalog, dictionary, glossary and Atlas entities"),
    "lineage": ("cloud.meta.cli:lineage_main", "walk a model back to its tables, runs and devices, forward to gateways"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gondola COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'gondola COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gondola: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"gondola {name}: missing dependency ({exc}); run 'make install' or pip install 'gondola[all]'",
              file=sys.stderr)
        return 2
    from gondola.errors import GondolaError

    try:
        return int(getattr(module, func_name)(rest) or 0)
    except GondolaError as exc:
        print(f"gondola {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
