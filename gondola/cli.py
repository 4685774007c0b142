"""The ``gondola`` command: one entry point, each subcommand owned by its package.

The kernel only dispatches; each package's CLI module is imported when its command runs, so
``gondola sim ...`` works on a machine with only the simulator's dependencies.

Conventions every command follows: ``gondola --version``; a bad input (missing file, unknown
hub or lake path, unreadable key) is one line on stderr and exit 1, never a traceback; the
traceback is shown only with ``--debug`` (anywhere on the line) or ``GONDOLA_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["COMMANDS", "main", "backup_main", "restore_main"]

#: subcommand -> (module:function taking argv, one-line help). docs/cli.md documents each.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gondola.demo:main", "run simulated stores through gateways, lake, warehouse and dashboard"),
    "sim": ("firmware_sim.cli:main", "simulate stores: generate history files or publish live over MQTT"),
    "edge": ("edge.cli:main", "run a store gateway"),
    "cloud": ("cloud.cli:main", "ingest, transform the lake, build the warehouse and reports"),
    "train": ("cloud.meta.cli:train_main", "train the stock-out model from gold features"),
    "retrain": ("models.retrain:main", "retrain from gold.features; register only what beats baseline and production"),
    "models": ("cloud.models_cli:main", "model registry and rollout in rings: list, show, promote, retire, rollout, step"),
    "eval": ("models.cli:eval_main", "evaluate baselines and models on held-out simulated stores"),
    "catalog": ("cloud.meta.cli:catalog_main", "export the data catalog, dictionary, glossary and Atlas entities"),
    "privacy": ("cloud.meta.cli:privacy_main", "personal data in the lake: re-key pseudonyms after a rotation, erase"),
    "lineage": ("cloud.meta.cli:lineage_main", "walk a model back to its tables, runs and devices, forward to gateways"),
    "backup": ("gondola.cli:backup_main", "back up a gateway's buffer or the lake (tables, checkpoints), verified"),
    "restore": ("gondola.cli:restore_main", "restore a gateway's buffer or the lake from a backup, verified"),
}

#: backup / restore targets -> module owning both sides of each
_TWO_SIDED = {"gateway": "edge.backup", "lake": "cloud.meta.backup"}


def _two_sided(verb: str, argv: list[str]) -> int:
    """``gondola backup|restore gateway|lake ...``: the edge or the cloud package does the work."""
    if not argv or argv[0] not in _TWO_SIDED:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: gondola {verb} {{{','.join(_TWO_SIDED)}}} [options]")
            return 0
        print(f"usage: gondola {verb} {{{','.join(_TWO_SIDED)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(_TWO_SIDED[argv[0]])
    return int(getattr(module, f"{verb}_main")(argv[1:]) or 0)


def backup_main(argv: list[str]) -> int:
    return _two_sided("backup", argv)


def restore_main(argv: list[str]) -> int:
    return _two_sided("restore", argv)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gondola [--version] [--debug] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'gondola COMMAND --help' for a command's options; --debug shows tracebacks."]
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    from gondola import __version__

    return __version__


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` (before any ``--``) from ``argv``; say whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    return [a for i, a in enumerate(argv) if i >= end or a != "--debug"], debug


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}:{where}".rstrip(":")
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def main(argv: list[str] | None = None) -> int:
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug or os.environ.get("GONDOLA_DEBUG", "") not in ("", "0")
    if argv and argv[0] in ("-V", "--version"):
        print(f"gondola {version()}")
        return 0
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
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`gondola ... | head`): stop quietly, as a command
        # killed by SIGPIPE would, and keep the interpreter's final flush from complaining.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except GondolaError as exc:
        if debug:
            raise
        print(f"gondola {name}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"gondola {name}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
