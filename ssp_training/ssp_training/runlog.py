"""Run logging: metrics CSV files, TensorBoard events and the final curve plots.

Two CSV files live in the run folder: ``train.csv`` (one row every ``run.log_every``
optimiser steps) and ``val.csv`` (one row per validation). On ``--resume`` rows written after
the checkpoint being resumed (by the killed process) are dropped, so each step appears once.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

TRAIN_CSV = "train.csv"
VAL_CSV = "val.csv"
PLOT_FILE = "curves.png"


class CsvLog:
    """Append-only CSV with a header fixed by the first row written."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending (its existing header, if any, is kept)."""
        self.path = Path(path)
        self.fields: list[str] | None = None
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as f:
                self.fields = next(csv.reader(f), None)

    def append(self, row: dict[str, float | int | str]) -> None:
        """Append one row; keys not in the header are added by rewriting the file once."""
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([], self.fields)
        elif set(row) - set(self.fields):
            rows = self.rows()
            self.fields = self.fields + [k for k in row if k not in self.fields]
            self._rewrite(rows, self.fields)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def rows(self) -> list[dict[str, str]]:
        """Return every row as strings."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        """Drop rows whose ``step`` is larger than ``step`` (written after the checkpoint)."""
        if self.fields is None:
            return
        keep = [r for r in self.rows() if int(float(r.get("step") or 0)) <= step]
        self._rewrite(keep, self.fields)

    def _rewrite(self, rows: list[dict], fields: list[str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)


class RunLog:
    """CSV + TensorBoard logging of one run (only rank 0 creates one)."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        """Open the logs of ``run_dir``; on resume, drop what was logged after the checkpoint."""
        self.run_dir = Path(run_dir)
        self.train = CsvLog(self.run_dir / TRAIN_CSV)
        self.val = CsvLog(self.run_dir / VAL_CSV)
        # On resume, rows the killed process wrote after the checkpoint go; on a fresh start
        # in a folder a run left before its first checkpoint, all of its rows.
        self.train.truncate_after(resume_step or 0)
        self.val.truncate_after(resume_step or 0)
        from torch.utils.tensorboard import SummaryWriter
        # purge_step hides events a killed process wrote after the checkpoint.
        self.tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                purge_step=resume_step if resume_step else None)

    def log_train(self, row: dict[str, float | int]) -> None:
        """Log one training row (must hold ``step`` and ``epoch``)."""
        self.train.append(row)
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.tb.add_scalar(f"train/{k}", v, row["step"])

    def log_val(self, row: dict[str, float | int]) -> None:
        """Log one validation row (must hold ``step`` and ``epoch``)."""
        self.val.append(row)
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"val/{k}", v, row["step"])
        self.tb.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        self.tb.close()


def _floats(rows: list[dict[str, str]], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]))
        except (KeyError, TypeError, ValueError):
            out.append(math.nan)
    return out


def plot_curves(run_dir: Path) -> Path | None:
    """Plot loss terms, learning rate and validation mIoU/TC to ``curves.png``; return it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train = CsvLog(run_dir / TRAIN_CSV).rows()
    val = CsvLog(run_dir / VAL_CSV).rows()
    if not train:
        return None
    steps = _floats(train, "step")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss_keys = [k for k in train[0] if k in ("loss", "ce", "tc", "kd", "kd_prev")]
    for k in loss_keys:
        axes[0].plot(steps, _floats(train, k), label=k)
    axes[0].set(title="training losses", xlabel="step", yscale="log")
    axes[0].legend()
    axes[1].plot(steps, _floats(train, "lr"))
    axes[1].set(title="learning rate", xlabel="step")
    if val:
        vsteps = _floats(val, "step")
        for k in ("miou", "tc"):
            if k in val[0]:
                axes[2].plot(vsteps, [100 * v for v in _floats(val, k)], marker="o", label=k)
        axes[2].legend()
    axes[2].set(title="validation (%)", xlabel="step")
    fig.tight_layout()
    out = run_dir / PLOT_FILE
    tmp = run_dir / f".{PLOT_FILE}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
