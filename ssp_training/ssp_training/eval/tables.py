"""Markdown tables of evaluation results in the layout of the paper's table (SSP_SPEC §10).

``results_table`` is one ``ssp_eval`` run; ``merged_table`` is the paper's whole table built
by ``ssp_train pipeline``: one row per method (ablations and λ included), one mIoU / TC column
pair per dataset, mean ± sample standard deviation over seeds when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
import statistics
from typing import Any

from .report import ModelResult


def _fmt(value: float, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_params(n: int) -> str:
    """Return a parameter count in millions as the paper writes it, e.g. ``43.38 M``."""
    return f"{n / 1e6:.2f} M"


def format_gflops(value: float) -> str:
    """Return GFLOPs with one decimal from 100 up (as the paper) and 3 significant digits below."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def results_table(results: list[ModelResult], device: str = "") -> str:
    """Return a markdown table: method | params | GFLOPs | FPS | mIoU | TC (scores in %)."""
    fps_head = f"FPS ({device})" if device else "FPS"
    lines = [f"| method | params | GFLOPs | {fps_head} | mIoU | TC |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {format_params(r.params)} | {format_gflops(r.gflops)} | "
                     f"{_fmt(r.fps, 1)} | {_fmt(r.miou, 2)} | {_fmt(r.tc, 2)} |")
    return "\n".join(lines) + "\n"


def per_class_table(results: list[ModelResult]) -> str:
    """Return a markdown table of per-class IoU in %, one row per model, one column per class."""
    names = list(results[0].per_class_iou) if results else []
    lines = ["| method | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for r in results:
        cells = [_fmt(r.per_class_iou.get(n), 1) for n in names]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class MergedRow:
    """One method's scores over datasets and seeds, and its cost (from its first report)."""

    name: str
    """Row label (the paper's row name)."""
    lam: float | None = None
    """TC-loss weight λ of an SSP row (the λ-sweep plot), None otherwise."""
    params: int | None = None
    """Parameters (first dataset's report; the class count changes it slightly)."""
    gflops: float | None = None
    """GFLOPs per frame (first dataset's report)."""
    fps: list[float] = field(default_factory=list)
    """FPS of every report of the first dataset (the table shows their mean)."""
    scores: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per dataset, one (mIoU %, TC %) pair per seed."""

    def add(self, dataset: str, result: ModelResult) -> None:
        """Add one report's result of this row on ``dataset``."""
        if self.params is None:
            self.params, self.gflops = result.params, result.gflops
            self._cost_dataset = dataset
        if dataset == getattr(self, "_cost_dataset", dataset):
            self.fps.append(result.fps)
        self.scores.setdefault(dataset, []).append((result.miou, result.tc))

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able summary: costs and per-dataset mean/std/n of mIoU and TC."""
        out: dict[str, Any] = {"name": self.name, "params": self.params,
                               "gflops": _finite(self.gflops), "fps": _finite(_mean(self.fps))}
        if self.lam is not None:
            out["lambda"] = self.lam
        for dataset, pairs in self.scores.items():
            out[dataset] = {metric: {"mean": _finite(_mean(vals)), "std": _finite(_std(vals)),
                                     "n": len(vals), "values": [_finite(v) for v in vals]}
                            for metric, vals in (("miou", [m for m, _ in pairs]),
                                                 ("tc", [t for _, t in pairs]))}
        return out


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else float("nan")


def _std(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def mean_std(values: list[float], digits: int = 2) -> str:
    """Return ``mean`` or ``mean ± std`` (sample std) of ``values``, "–" when there are none."""
    mean, std = _mean(values), _std(values)
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def merged_table(rows: list[MergedRow], datasets: list[str], device: str = "") -> str:
    """Return the paper's table: method | params | GFLOPs | FPS | mIoU / TC per dataset."""
    fps_head = f"FPS ({device})" if device else "FPS"
    head = " | ".join(f"{d} mIoU / TC" for d in datasets)
    seeds = max((len(p) for r in rows for p in r.scores.values()), default=0)
    lines = [f"| method | params | GFLOPs | {fps_head} | {head} |",
             "|---|---:|---:|---:|" + "---:|" * len(datasets)]
    for r in rows:
        cells = []
        for d in datasets:
            pairs = r.scores.get(d, [])
            cells.append(f"{mean_std([m for m, _ in pairs])} / {mean_std([t for _, t in pairs])}"
                         if pairs else "–")
        params = format_params(r.params) if r.params is not None else "–"
        lines.append(f"| {r.name} | {params} | {format_gflops(r.gflops)} | "
                     f"{_fmt(_mean(r.fps), 1)} | " + " | ".join(cells) + " |")
    note = (f"\nScores in %; mean ± std over {seeds} seeds where a row has several.\n"
            if seeds > 1 else "\nScores in %.\n")
    return "\n".join(lines) + "\n" + note
