"""The issues' targets: each one's measured ratio, its bound and its verdict (PASS, MISS, or n/a when its inputs
were not measured), marked when the rounds it rests on were disturbed by other processes.

Three groups: [bf16] the targets of issue 12 (the product against the raw bf16 model and the fp32 server);
[batching] the product against itself with batching, the text cache and trimming off; [fp32] the targets
of the fp32 era, now measured on (d), the product in fp32, against the raw fp32 model.
"""
from __future__ import annotations

from typing import Optional

from .common import OTHER_LOAD_LIMIT
from .load import Cell, percentile

_COMPARE = {">=": lambda m, r: m >= r, ">": lambda m, r: m > r, "<=": lambda m, r: m <= r}


def target(name: str, measured: Optional[float], op: str, required: float, detail: str,
           disturbed: bool = False) -> dict:
    if measured is None:
        return {"target": name, "measured": None, "op": op, "required": required, "detail": detail,
                "result": "n/a", "disturbed": False}
    # A verdict from rounds that other processes disturbed is not one: it says so next to it.
    result = ("PASS" if _COMPARE[op](measured, required) else "MISS") + (" (disturbed: rerun)" if disturbed else "")
    return {"target": name, "measured": measured, "op": op, "required": required, "detail": detail,
            "result": result, "disturbed": disturbed}


class _Figures:
    """Looks up what a target compares; None for anything this run did not measure."""

    def __init__(self, cells: dict[tuple[str, str], Cell], table: Optional[dict], servers: dict):
        self.cells, self.table, self.servers = cells, table, servers

    def rate(self, scenario: str, server: str) -> Optional[float]:
        cell = self.cells.get((scenario, server))
        return cell.rate if cell and cell.rounds else None

    def p50_ms(self, scenario: str, server: str) -> Optional[float]:
        cell = self.cells.get((scenario, server))
        return percentile(cell.latencies(), 50) * 1000 if cell and cell.rounds else None

    def up_front(self, key: str, field: str, unit: str) -> str:
        row = (self.table or {}).get("rows", {}).get(key)
        return f"; up front: {row[field]:.1f}{unit}" if row else ""

    def server(self, name: str, field: str) -> Optional[float]:
        return self.servers.get(name, {}).get(field) or None

    def disturbed(self, *keys: tuple[str, str]) -> bool:
        return any(o > OTHER_LOAD_LIMIT for key in keys if key in self.cells
                   for o in self.cells[key].round_other_cores())


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _versus(a: Optional[float], b: Optional[float], unit: str, digits: int = 1) -> str:
    return f"{a:.{digits}f} vs {b:.{digits}f} {unit}" if a and b else "not measured"


def _rate_target(f: _Figures, name: str, scenario: str, a: str, b: str, op: str, required: float, unit: str,
                 up_front: str = "") -> dict:
    ra, rb = f.rate(scenario, a), f.rate(scenario, b)
    detail = _versus(ra, rb, unit, 2 if unit == "req/s" else 1) + (up_front if ra and rb else "")
    return target(name, _ratio(ra, rb), op, required, detail, f.disturbed((scenario, a), (scenario, b)))


def _latency_target(f: _Figures, name: str, a: str, b: str, required: float, up_front: str) -> dict:
    la, lb = f.p50_ms("image-c1", a), f.p50_ms("image-c1", b)
    detail = _versus(la, lb, "ms") + (up_front if la and lb else "")
    return target(name, _ratio(la, lb), "<=", required, detail, f.disturbed(("image-c1", a), ("image-c1", b)))


def _bf16_targets(f: _Figures) -> list[dict]:
    hwm_b, hwm_d = f.server("b", "hwm_mb"), f.server("d", "hwm_mb")
    cold_b, cold_d = f.server("b", "cold_start_s"), f.server("d", "cold_start_s")
    return [
        _rate_target(f, "[bf16] image c=8: (b) / (a) raw bf16, draft decode + preprocess + encode_image batch 8",
                     "image-c8", "b", "a-bf16", ">=", 0.7, "img/s", f.up_front("bf16-image-b8", "items_per_s", "")),
        _rate_target(f, "[bf16] short texts c=8: (b) / (a) raw bf16, encode_text trimmed to the prompt, batch 8",
                     "text-c8", "b", "a-bf16", ">", 1.0, "texts/s",
                     f.up_front("bf16-text-trimmed", "items_per_s", "")),
        _latency_target(f, "[bf16] image c=1 p50 latency: (b) / (a) raw bf16 draft decode + preprocess + batch-1 "
                        "forward", "b", "a-bf16", 1.15, f.up_front("bf16-c1", "median_ms", " ms")),
        target("[bf16] memory: peak RSS (VmHWM) of (b) / of (d), the fp32 server", _ratio(hwm_b, hwm_d), "<=", 0.8,
               _versus(hwm_b, hwm_d, "MB", 0)),
        target("[bf16] cold start, ./serve to the first /ping 200: (b) / (d)", _ratio(cold_b, cold_d), "<=", 1.5,
               _versus(cold_b, cold_d, "s")),
    ]


def _batching_targets(f: _Figures) -> list[dict]:
    return [
        _rate_target(f, "[batching] image c=8: (b) / (c)", "image-c8", "b", "c", ">=", 1.4, "img/s"),
        _rate_target(f, "[batching] short texts c=8: (b) / (c)", "text-c8", "b", "c", ">=", 7.0, "texts/s"),
        _rate_target(f, "[batching] classification c=4: (b) / (c)", "classify-c4", "b", "c", ">=", 4.0, "req/s"),
    ]


def _fp32_targets(f: _Figures, model_only: Optional[dict]) -> list[dict]:
    peak, alone = f.server("b", "peak_rss_mb"), (model_only or {}).get("VmRSS")
    return [
        _rate_target(f, "[fp32] image c=8: (d) / (a) raw fp32, encode_image batch 8", "image-c8", "d", "a-fp32",
                     ">=", 0.8, "img/s", f.up_front("fp32-image-b8", "items_per_s", "")),
        _latency_target(f, "[fp32] image c=1 p50 latency: (d) / (a) raw fp32 draft decode + preprocess + batch-1 "
                        "forward", "d", "a-fp32", 1.1, f.up_front("fp32-c1", "median_ms", " ms")),
        target("memory: (b) peak RSS sampled under load / the model-only process (same precision)",
               _ratio(peak, alone), "<=", 1.25, _versus(peak, alone, "MB", 0)),
    ]


def _front_targets(f: _Figures) -> list[dict]:
    """What nginx in front costs: (b) with it against (e) without, round by round (the rounds alternate)."""
    found = []
    for kind, unit in (("image", "img/s"), ("text", "texts/s")):
        with_front, without = f.cells.get((f"{kind}-c1", "b")), f.cells.get((f"{kind}-c1", "e"))
        added = spread = None
        if with_front and without and with_front.rounds and without.rounds:
            added = f.p50_ms(f"{kind}-c1", "b") - f.p50_ms(f"{kind}-c1", "e")
            per_round = [1000 * (percentile(a.latencies_s, 50) - percentile(b.latencies_s, 50))
                         for a, b in zip(with_front.rounds, without.rounds)]
            spread = f"; per round {' / '.join(f'{d:+.2f}' for d in per_round)} ms"
        detail = _versus(f.p50_ms(f"{kind}-c1", "b"), f.p50_ms(f"{kind}-c1", "e"), "ms", 2) + (spread or "")
        found.append(target(f"[front] {kind} c=1 p50 latency the front adds, ms: (b) - (e)", added, "<=", 1.0,
                            detail, f.disturbed((f"{kind}-c1", "b"), (f"{kind}-c1", "e"))))
        rate = _rate_target(f, f"[front] {kind} c=8 throughput: (b) / (e)", f"{kind}-c8", "b", "e", ">=", 0.97, unit)
        a, b = f.cells.get((f"{kind}-c8", "b")), f.cells.get((f"{kind}-c8", "e"))
        if a and b and a.rounds and b.rounds:
            rate["detail"] += "; per round " + " / ".join(f"{x.rate / y.rate:.3f}" for x, y in zip(a.rounds, b.rounds))
        found.append(rate)
    return found


def evaluate_targets(cells: dict[tuple[str, str], Cell], table: Optional[dict], servers: dict,
                     model_only: Optional[dict]) -> list[dict]:
    f = _Figures(cells, table, servers)
    return _bf16_targets(f) + _batching_targets(f) + _fp32_targets(f, model_only) + _front_targets(f)
