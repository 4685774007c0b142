"""``gondola sim``: generate history files, or run stores live against an MQTT broker.

    gondola sim generate --stores N --skus N --days N --seed S [--scenario FILE] --out DIR
    gondola sim live --broker HOST:PORT [--stores N --skus N --days N --seed S --scenario FILE --speed X]
    gondola sim scenario [FILE]        print a scenario with every default filled in (TOML-like JSON)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from gondola.clock import DAY_MS, iso_to_ms, ms_to_iso
from gondola.errors import ConfigError
from firmware_sim.scenario import Scenario
from firmware_sim.store import DEFAULT_START_MS

__all__ = ["main"]


def _start(text: str | None) -> int:
    if not text:
        return DEFAULT_START_MS
    try:
        ms = iso_to_ms(date.fromisoformat(text).isoformat() + "T00:00:00Z")
    except ValueError:
        raise ConfigError(f"--start must be a date like 2026-01-05, got {text!r}") from None
    return ms


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--broker must be HOST:PORT, got {text!r}")
    return host, int(port)


def _scenario(path: str | None) -> Scenario:
    return Scenario.load(path) if path else Scenario.default()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola sim", description="Simulated stores: history files or live MQTT.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, stores: int, skus: int, days: int) -> None:
        sp.add_argument("--stores", type=int, default=stores, help=f"number of stores (default {stores})")
        sp.add_argument("--skus", type=int, default=skus, help=f"products per store (default {skus})")
        sp.add_argument("--days", type=int, default=days, help=f"days to simulate (default {days})")
        sp.add_argument("--seed", type=int, default=None, help="seed (default: the scenario file's, else 0)")
        sp.add_argument("--scenario", help="scenario TOML file (default: built-in defaults, no faults)")
        sp.add_argument("--sensor-share", type=float, default=0.5, help="share of facings with a shelf sensor")
        sp.add_argument("--start", help="first day, YYYY-MM-DD (default 2026-01-05, a Monday)")

    g = sub.add_parser("generate", help="simulate stores x days straight to files")
    common(g, 10, 2000, 30)
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    lv = sub.add_parser("live", help="publish devices' messages to an MQTT broker on an accelerated clock")
    common(lv, 2, 200, 1)
    lv.add_argument("--broker", required=True, help="MQTT broker HOST:PORT")
    lv.add_argument("--speed", type=float, default=0.0,
                    help="simulated seconds per real second (default 0: as fast as the broker acknowledges)")
    lv.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight at most (default 1000)")

    sc = sub.add_parser("scenario", help="print a scenario with all defaults filled in")
    sc.add_argument("file", nargs="?", help="scenario TOML file")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``gondola sim``; returns the exit code.

    Raises:
        ConfigError: bad arguments or scenario (the kernel CLI prints it and exits 1).
        TransportError: the broker is unreachable in live mode.
        StorageError: the output folder cannot be written.
    """
    args = _parser().parse_args(argv)
    if args.command == "scenario":
        print(json.dumps(_scenario(args.file).to_dict(), indent=2))
        return 0
    scenario = _scenario(args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    start_ms = _start(args.start)
    if args.command == "generate":
        from firmware_sim.history import generate

        print(f"simulating {args.stores} stores x {args.skus} SKUs x {args.days} days "
              f"(scenario {scenario.name}, seed {seed}) -> {args.out}", file=sys.stderr)
        result = generate(args.out, stores=args.stores, skus=args.skus, days=args.days, seed=seed,
                          scenario=scenario, start_ms=start_ms, sensor_share=args.sensor_share,
                          workers=args.workers, progress=not args.quiet)
        rate = result.events / result.seconds if result.seconds else 0.0
        print(f"wrote {result.events:,} events ({', '.join(f'{k} {v:,}' for k, v in result.events_by_type.items())}) "
              f"in {result.seconds:.1f}s ({rate:,.0f} events/s); shelf out-of-stock {result.oos_rate:.1%}")
        if result.faults:
            print("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items())))
        return 0
    # live
    from firmware_sim.history import store_ids
    from firmware_sim.live import run_live
    from firmware_sim.mqtt import MqttPublisher
    from firmware_sim.store import StoreSim

    host, port = _broker(args.broker)
    stores = [StoreSim(sid, args.skus, seed, start_ms, scenario, args.sensor_share) for sid in store_ids(args.stores)]
    until = start_ms + args.days * DAY_MS

    from gondola.progress import on_terminal

    def tick(now: int, sent: int) -> None:
        print(f"\r  {ms_to_iso(now)}  +{sent} messages", end="", file=sys.stderr, flush=True)

    tty = on_terminal()  # no carriage-return progress in logs
    with MqttPublisher(host, port, window=args.window) as pub:
        stats = run_live(stores, pub, until_ms=until, speed=args.speed, on_tick=tick if tty else None)
    if tty:
        print(file=sys.stderr)
    print(f"published {stats.messages:,} messages in {stats.seconds:.1f}s ({stats.messages_per_s:,.0f}/s), "
          f"simulated {ms_to_iso(stats.sim_start_ms)} .. {ms_to_iso(stats.sim_end_ms)}")
    return 0
