"""The command line and the run's order: options, the inputs, the raw model's table with no server up, the
model-only baseline, the servers one after another (each one's cold start), the scenarios, the report; and
that every process it started is stopped, also on Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import __doc__ as DESCRIPTION
from . import model_only
from .common import ARCH, DEFAULT_WORK_DIR, N_IMAGES, SCENARIOS, BenchmarkError, log
from .inputs import make_jpegs, word_check
from .load import Cell, run_scenario
from .machine import busy_cores, machine
from .processes import ACCOUNTED_PIDS, MemorySampler, tree_hwm_mb, tree_rss_mb
from .raw_process import SIDE_BY_SIDE, TABLE, RawProcess, measure_table
from .report import render_report
from .servers import VARIANT_NAMES, Server, child_env, start_servers
from .targets import evaluate_targets

QUICK = {"rounds": 1, "seconds": 2.0, "warmup": 1.0}
TABLE_SHARE = 0.6  # of --seconds, per row of the raw model's up-front table


def parse_scenarios(value: str) -> list[str]:
    chosen = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        matches = [name for name, (kind, _) in SCENARIOS.items() if part in (name, kind)]
        if not matches:
            raise argparse.ArgumentTypeError(f"unknown scenario {part!r}; choose from {', '.join(SCENARIOS)} "
                                             "or image, text, classify")
        chosen.extend(m for m in matches if m not in chosen)
    return [name for name in SCENARIOS if name in chosen]


def parse_servers(value: str) -> tuple[str, ...]:
    chosen = tuple(name for name in VARIANT_NAMES if name in {p.strip() for p in value.split(",")})
    unknown = {p.strip() for p in value.split(",") if p.strip()} - set(VARIANT_NAMES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose servers from {', '.join(VARIANT_NAMES)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="where the model directory, images and server logs go (reused; default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds per round and server (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per scenario and server (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a check that every row runs, not a measurement: rounds {QUICK['rounds']}, seconds "
                             f"{QUICK['seconds']:g}, warm-up {QUICK['warmup']:g} (overrides those three)")
    parser.add_argument("--scenarios", type=parse_scenarios, default=list(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}, or kinds image, text, classify "
                             "(default: all)")
    parser.add_argument("--servers", type=parse_servers, default=VARIANT_NAMES,
                        help=f"comma-separated subset of the servers {', '.join(VARIANT_NAMES)} (default: all); "
                             "b,e with --skip-raw measures only what the front costs")
    parser.add_argument("--skip-raw", action="store_true", help="skip (a), the raw model measurement")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every figure to this JSON file")
    return parser


def estimate_s(args) -> float:
    start = 30 + 15 * len(args.servers)  # facts, idle check, model-only baseline, one cold start per server
    load = len(args.scenarios) * len(args.servers) * (args.warmup + args.rounds * (args.seconds + 0.7))
    if args.skip_raw:
        return start + load
    table = 15 + 25 + len(TABLE) * (args.seconds * TABLE_SHARE + 0.5)  # worker start, fp32 batch 32, rows
    side = sum(len(SIDE_BY_SIDE.get(s, ())) for s in args.scenarios) * (args.warmup + args.rounds * args.seconds)
    return start + load + table + side


@dataclass
class Run:
    """What this run started, so that all of it is stopped whatever happens."""
    servers: list[Server] = field(default_factory=list)
    raw: Optional[RawProcess] = None
    sampler: MemorySampler = field(default_factory=MemorySampler)

    def stop(self) -> None:
        self.sampler.target = None
        self.sampler.stop()
        if self.raw is not None:
            self.raw.stop()
        for server in self.servers:
            server.stop()
        if self.servers:
            log("servers stopped")


def _prepare(work_dir: Path) -> list[bytes]:
    model_dir = work_dir / "model-vit-b-32"
    if not (model_dir / "open_clip_model.safetensors").is_file():
        log(f"building {model_dir} ({ARCH}, seeded random weights)")
        subprocess.run([sys.executable, "-m", "clip_sagemaker.model_files", ARCH, "--out", str(model_dir)],
                       env=child_env(), check=True, stdout=subprocess.DEVNULL)
    else:
        log(f"reusing {model_dir}")
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    return make_jpegs(work_dir / "images", N_IMAGES)


def _raw_table(run: Run, work_dir: Path, seconds: float) -> dict:
    log("(a) raw model: open_clip fp32 and bf16 in a process of its own, 2 threads (it stays, idle, for "
        "side-by-side rounds)")
    run.raw = RawProcess(work_dir / "model-vit-b-32", work_dir / "images")
    ACCOUNTED_PIDS.append(run.raw.pid)
    return measure_table(run.raw, seconds)


def _start_servers(run: Run, work_dir: Path, names: tuple[str, ...]) -> dict:
    log(f"model-only process (the memory baseline), then servers {', '.join(f'({n})' for n in names)} one after "
        "another")
    baseline = model_only.measure(work_dir / "model-vit-b-32")
    start_servers(work_dir / "model-vit-b-32", work_dir / "logs", run.servers, names)
    time.sleep(1.0)
    for server in run.servers:
        server.idle_rss_mb, server.idle_hwm_mb = tree_rss_mb(server.pid), tree_hwm_mb(server.pid)
    log("servers ready: " + ", ".join(f"({s.name}) {s.info.get('precision')} {s.url}, cold start "
                                      f"{s.cold_start_s:.1f} s" for s in run.servers)
        + f"; model-only RSS {baseline['VmRSS']:.0f} MB")
    return baseline


def _server_figures(servers: list[Server]) -> dict:
    return {s.name: {"label": s.label, "env": s.variant.env, "info": s.info, "cold_start_s": s.cold_start_s,
                     "idle_rss_mb": s.idle_rss_mb, "idle_hwm_mb": s.idle_hwm_mb, "peak_rss_mb": s.peak_rss_mb,
                     "hwm_mb": s.hwm_mb} for s in servers}


def _load(run: Run, args, jpegs: list[bytes]) -> list[Cell]:
    run.sampler.start()
    cells: list[Cell] = []
    for name in args.scenarios:
        log(f"scenario {name}")
        cells += run_scenario(name, run.servers, run.raw, jpegs, args.rounds, args.seconds, args.warmup,
                              run.sampler)
    run.sampler.target = None
    for server in run.servers:
        server.hwm_mb = tree_hwm_mb(server.pid)
    return cells


def _write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "cells": [c.as_json() for c in results["cells"]]}, indent=2))
    log(f"wrote {path}")


def _measure(run: Run, args, meta: dict) -> dict:
    work_dir = args.work_dir.resolve()
    jpegs = _prepare(work_dir)
    table = None if args.skip_raw else _raw_table(run, work_dir, args.seconds * TABLE_SHARE)
    baseline = _start_servers(run, work_dir, args.servers)
    cells = _load(run, args, jpegs)
    servers = _server_figures(run.servers)
    config = {"model_dir": str(work_dir / "model-vit-b-32"), "rounds": args.rounds, "seconds": args.seconds,
              "warmup": args.warmup, "scenarios": args.scenarios, "servers": list(args.servers),
              "jpeg_kb": sum(len(j) for j in jpegs) / len(jpegs) / 1024}
    targets = evaluate_targets({(c.scenario, c.server): c for c in cells}, table, servers, baseline)
    return {"machine": meta, "config": config, "table": table, "servers": servers, "cells": cells,
            "model_only": baseline, "targets": targets}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the run like Ctrl-C: the servers still get stopped


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup <= 0:
        parser.error("--rounds must be at least 1, --seconds and --warmup above 0")
    word_check()
    log(f"benchmark: scenarios {', '.join(args.scenarios)}; {args.rounds} rounds x {args.seconds:g} s; expected "
        f"duration about {estimate_s(args) / 60:.1f} minutes (more on the first run, which builds the model directory)")
    signal.signal(signal.SIGTERM, _interrupt)
    started, run = time.monotonic(), Run()
    try:
        meta = machine(child_env())
        meta["busy_cores_before_start"] = busy_cores()
        if meta["busy_cores_before_start"] > 0.2:
            log(f"WARNING: the machine is not idle ({meta['busy_cores_before_start']:.2f} cores busy before the "
                "start): expect disturbed figures")
        results = _measure(run, args, meta)
        print(render_report(results), flush=True)
        log(f"done in {(time.monotonic() - started) / 60:.1f} minutes")
        if args.json:
            _write_json(args.json, results)
        return 0
    except BenchmarkError as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a server behind
        run.stop()
