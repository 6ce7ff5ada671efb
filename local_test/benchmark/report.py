"""The markdown report: the machine and how the run went, the raw model's up-front table, the load table and its
ratios, memory, cold starts and the targets. It only formats: every figure comes in measured."""
from __future__ import annotations

from typing import Optional

from .common import ARCH, IMAGE_H, IMAGE_W, JPEG_QUALITY, N_IMAGES, OTHER_LOAD_LIMIT, SCENARIOS, UNITS
from .load import Cell
from .raw_process import TABLE


def _cores(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _header(meta: dict, config: dict) -> list[str]:
    torch_cpu = meta["torch_cpu"]
    amx = ", ".join(meta["amx_flags"]) if meta["amx_flags"] else "none"
    tiles = {True: "yes", False: "no"}.get(torch_cpu.get("amx_tile"), "?")
    return [f"# clip-sagemaker benchmark, {meta['date']}", "",
            f"Machine: {meta['cores']} cores ({meta['cpu']}), {meta['memory_gb']} GB RAM; Python {meta['python']}, "
            f"torch {meta['torch']}, open_clip {meta['open_clip']}, Pillow {meta['pillow']}; commit {meta['commit']} "
            f"(the working tree may differ).",
            f"AMX: {'present' if meta['amx_flags'] else 'absent'} (CPU flags: {amx}); torch CPU capability "
            f"{torch_cpu.get('capability')}, AMX tiles usable by torch: {tiles}.",
            f"Model: {ARCH}, seeded random weights (full size), {config['model_dir']}.",
            f"Load: {config['rounds']} interleaved rounds x {config['seconds']:g} s per server and scenario, after a "
            f"{config['warmup']:g} s warm-up; {N_IMAGES} photo-like {IMAGE_W}x{IMAGE_H} JPEGs (quality "
            f"{JPEG_QUALITY}, about {config['jpeg_kb']:.0f} KB each). The client runs on the same cores.", ""]


def _disturbance(meta: dict, table: Optional[dict], cells: list[Cell]) -> list[str]:
    disturbed = [o for c in cells for o in c.round_other_cores() if o > OTHER_LOAD_LIMIT]
    before = meta.get("busy_cores_before_start", 0.0)
    raw_other = table.get("other_cpu_cores", 0.0) if table else 0.0
    if disturbed or before > OTHER_LOAD_LIMIT or raw_other > OTHER_LOAD_LIMIT:
        worst = max(disturbed + [before, raw_other])
        return [f"**WARNING: other processes on this machine used CPU during the run** (up to {worst:.2f} cores in "
                f"a round; {len(disturbed)} of {sum(len(c.rounds) for c in cells)} rounds above "
                f"{OTHER_LOAD_LIMIT} cores; {before:.2f} cores busy before the start; {raw_other:.2f} during (a)'s "
                "table). Those figures are disturbed: rerun on a quiet machine.", ""]
    return [f"Other processes stayed below {OTHER_LOAD_LIMIT} cores in every round (the figures are "
            "undisturbed by them; the host may still vary).", ""]


def _setup(servers: dict, table: Optional[dict]) -> list[str]:
    lines = []
    for name, s in servers.items():
        info, env = s["info"], s["env"]
        lines.append(f"- ({name}) {s['label']}: {info.get('precision')}, max batch {info.get('max_batch_size')}, "
                     f"text cache {info.get('text_cache', {}).get('capacity')}, trimmed text "
                     f"{info.get('trimmed_text')}; env {' '.join(f'{k}={v}' for k, v in env.items()) or '(defaults)'}")
    lines += ["- Every server's environment is the caller's without any name in clip_sagemaker.settings.ENVIRONMENT "
              "(and without OMP_NUM_THREADS, MKL_NUM_THREADS, OMP_WAIT_POLICY), plus MODEL_DIR, LOG_LEVEL=warning, "
              "its port and the variables listed above.",
              "- JPEG draft decoding is on in every server (the product default), so (b) vs (c) isolates batching, "
              "the text cache and trimmed text; (b) vs (d) isolates the precision."]
    if table:
        facts = table["facts"]
        bf16 = facts["precisions"].get("bf16", {})
        lines.append(f"- (a) runs open_clip in a process of its own, {facts['threads']} torch threads, OpenMP's "
                     f"defaults like the servers; bf16 is open_clip's precision=\"bf16\" (Linear weights "
                     f"{bf16.get('linear_weights')}, LayerNorms {bf16.get('layernorm_weights')}); each shape is "
                     "warmed up before it is timed.")
    return lines + [""]


def _raw_table(table: dict) -> list[str]:
    lines = ["## (a) Raw model, up front: open_clip, no server, 2 torch threads, inference_mode", "",
             "| measurement | per call (median) | items/s | CPU cores |", "|---|---:|---:|---:|"]
    for row in TABLE:
        r = table["rows"][row.key]
        rate = f"{r['items_per_s']:.1f}" if row.unit else ""
        lines.append(f"| {row.label} | {r['median_ms']:.1f} ms | {rate} | {r['cpu_cores']:.2f} |")
        if row.key == "fp32-image-b32":
            lines.append(f"| fp32 encode_image, best | | {table['best_fp32_image_items_per_s']:.1f} | |")
    return lines + [""]


def _load_table(cells: list[Cell]) -> list[str]:
    lines = ["## Load: (b) product defaults, (c) one forward per item, no cache, padded text, (d) product in fp32, "
             "(e) product without the front", "",
             "items/s: images or texts embedded per second; classification: requests per second (1 image, the same "
             "6 classes). CPU: cores busy on average in the server (master + workers), in this client, and in other "
             "processes on the machine (not the benchmark's). Rows (a): the raw model's rounds, interleaved with the "
             "servers' (latencies per call: per batch, or per lone image).", "",
             "| scenario | conc. | server | items/s | per round | p50 ms | p99 ms | requests | errors "
             "| server CPU | client CPU | other CPU |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cell in cells:
        row = cell.as_json()
        who = f"(a) {cell.label}" if cell.raw else f"({cell.server})"
        concurrency = "-" if cell.raw else str(cell.concurrency)
        lines.append(f"| {cell.scenario} | {concurrency} | {who} | {row['items_per_s']:.1f} "
                     f"{UNITS[SCENARIOS[cell.scenario][0]]} | "
                     f"{' / '.join(f'{r:.1f}' for r in row['round_items_per_s'])} | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['requests']} | 0 | {_cores(row['server_cpu_cores'])} | "
                     f"{_cores(row['client_cpu_cores'])} | {_cores(row['other_cpu_cores'])} |")
    return lines + _ratios(cells)


def _ratios(cells: list[Cell]) -> list[str]:
    pairs: dict = {}
    for cell in cells:
        pairs.setdefault(cell.scenario, {})[cell.server] = cell.rate
    rows = [f"| {scenario} | {_over(r, 'c')} | {_over(r, 'd')} |" for scenario, r in pairs.items()
            if r.get("b") and (r.get("c") or r.get("d"))]
    if not rows:
        return []
    return ["", "| scenario | (b) / (c) | (b) / (d), vs fp32 |", "|---|---:|---:|", *rows]


def _over(rates: dict, other: str) -> str:
    return f"{rates['b'] / rates[other]:.2f}x" if rates.get("b") and rates.get(other) else "-"


def _memory(servers: dict, model_only: Optional[dict]) -> list[str]:
    lines = ["", "## Memory and cold start (servers: gunicorn master + workers)", "",
             "VmHWM is the kernel's peak per process (start-up included), summed over the server's processes; "
             "the sampled peak is the largest VmRSS sum seen every 0.25 s while the server was under load.", "",
             "| process | precision | cold start s | idle RSS MB | VmHWM after start MB | peak RSS under load MB "
             "| VmHWM at the end MB |", "|---|---|---:|---:|---:|---:|---:|"]
    if model_only:
        lines.append(f"| model only (load_model, after gc) | {model_only.get('precision')} | | "
                     f"{model_only['VmRSS']:.0f} | {model_only['VmHWM']:.0f} | | |")
    for name, s in servers.items():
        cold = f"{s['cold_start_s']:.1f}" if s.get("cold_start_s") else "-"
        lines.append(f"| server ({name}) | {s['info'].get('precision')} | {cold} | {s['idle_rss_mb']:.0f} | "
                     f"{s['idle_hwm_mb']:.0f} | {s['peak_rss_mb']:.0f} | {s['hwm_mb']:.0f} |")
    return lines


def _targets(targets: list[dict]) -> list[str]:
    lines = ["", "## Targets", "", "| target | measured | ratio | required | result |", "|---|---|---:|---:|---|"]
    for t in targets:
        unit = "" if "ms:" in t["target"] else "x"  # a difference in ms, not a ratio
        ratio = f"{t['measured']:.2f}{unit}" if t["measured"] is not None else "-"
        lines.append(f"| {t['target']} | {t['detail']} | {ratio} | {t['op']} {t['required']:g}{unit} | {t['result']} |")
    return lines


def render_report(results: dict) -> str:
    meta, config, servers, table = results["machine"], results["config"], results["servers"], results["table"]
    cells: list[Cell] = results["cells"]
    lines = _header(meta, config) + _disturbance(meta, table, cells) + _setup(servers, table)
    if table:
        lines += _raw_table(table)
    lines += _load_table(cells) + _memory(servers, results["model_only"]) + _targets(results["targets"])
    return "\n".join(lines)
