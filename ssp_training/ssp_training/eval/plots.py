"""Evaluation plots: per-class IoU bars, TC over time per clip, accuracy vs consistency.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state, no display needed)
and saved atomically as PNG (mode 0644). ``plot_merged`` and ``plot_lambda_sweep`` draw the
pipeline's merged table (means with ± std error bars over seeds).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.figure import Figure
import numpy as np
from ssp_perception.files import atomic_write_bytes

from .report import ModelResult
from .tables import MergedRow


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())  # 0644, never half-written


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def plot_per_class_iou(results: list[ModelResult], path: Path) -> Path:
    """Save grouped bars of per-class IoU (%) with one bar per model and class."""
    names = list(results[0].per_class_iou) if results else []
    # About a quarter inch per bar, within a readable 6..16 inch width.
    fig = Figure(figsize=(min(16.0, max(6.0, 0.25 * len(names) * len(results) + 2)), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(results))
    x = np.arange(len(names))
    for i, r in enumerate(results):
        values = [_nan(r.per_class_iou.get(n)) for n in names]
        ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=r.name)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Per-class IoU")
    ax.legend(fontsize="small", ncols=min(3, max(1, len(results))))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_tc_over_time(results: list[ModelResult], clip: str, path: Path) -> Path:
    """Save the pairwise TC (%) of frames (i, i+1) over i for one clip, one line per model."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for r in results:
        curve = np.array([_nan(v) for v in r.tc_curves.get(clip, [])])
        ax.plot(np.arange(curve.size), curve, label=f"{r.name} ({_fmt(r.tc_per_clip.get(clip))})")
    ax.set_xlabel("frame pair (i, i+1)")
    ax.set_ylabel("TC (%)")
    ax.set_title(f"Temporal consistency over time: {clip}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_accuracy_vs_consistency(results: list[ModelResult], path: Path) -> Path:
    """Save a scatter of mIoU (%) against TC (%) with one labelled point per model."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    for r in results:
        ax.scatter([r.tc], [r.miou], s=40)
        ax.annotate(r.name, (r.tc, r.miou), textcoords="offset points", xytext=(5, 4),
                    fontsize="small")
    ax.set_xlabel("TC (%)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Accuracy vs temporal consistency")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _fmt(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.1f}"


def write_plots(results: list[ModelResult], out_dir: Path) -> list[Path]:
    """Write all evaluation plots under ``out_dir``; return the written paths."""
    out_dir = Path(out_dir)
    paths = [plot_per_class_iou(results, out_dir / "per_class_iou.png"),
             plot_accuracy_vs_consistency(results, out_dir / "accuracy_vs_consistency.png")]
    clips = sorted({c for r in results for c in r.tc_curves})
    for clip in clips:
        paths.append(plot_tc_over_time(results, clip, out_dir / "tc" / f"{clip}.png"))
    return paths


def _stats(pairs: list[tuple[float, float]], i: int) -> tuple[float, float]:
    vals = np.array([p[i] for p in pairs], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return float("nan"), 0.0
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0


def plot_merged(rows: list[MergedRow], datasets: list[str], path: Path) -> Path:
    """Save mIoU against TC of every merged row, one panel per dataset, ± std error bars."""
    fig = Figure(figsize=(5.5 * len(datasets), 4.5))
    for k, dataset in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), k + 1)
        for r in rows:
            pairs = r.scores.get(dataset)
            if not pairs:
                continue
            (m, m_sd), (t, t_sd) = _stats(pairs, 0), _stats(pairs, 1)
            ax.errorbar([t], [m], xerr=[t_sd], yerr=[m_sd], fmt="o", ms=5, capsize=2)
            ax.annotate(r.name, (t, m), textcoords="offset points", xytext=(5, 4),
                        fontsize="x-small")
        ax.set_xlabel("TC (%)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"Accuracy vs temporal consistency: {dataset}")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_lambda_sweep(rows: list[MergedRow], dataset: str, path: Path) -> Path:
    """Save mIoU and TC (%) of the SSP rows against the TC-loss weight λ on ``dataset``."""
    sweep = sorted((r.lam, r.scores[dataset]) for r in rows
                   if r.lam is not None and r.scores.get(dataset))
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    lams = [lam for lam, _ in sweep]
    for i, label in ((0, "mIoU"), (1, "TC")):
        stats = [_stats(pairs, i) for _, pairs in sweep]
        ax.errorbar(lams, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                    capsize=2, label=label)
    ax.set_xlabel("TC-loss weight λ")
    ax.set_ylabel("score (%)")
    ax.set_title(f"λ sweep: {dataset}")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
