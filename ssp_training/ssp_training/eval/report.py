"""Evaluation results: one typed record per evaluated model, JSON in and out, atomic writes.

All scores in a report are percentages (the paper's convention, SSP_SPEC §7.2, §10); the pure
metric functions in ``ssp_perception.metrics`` return fractions and are scaled here, once.
NaN (a class absent from both ground truth and predictions, or a clip with one frame) is
written as JSON ``null``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
import math
from pathlib import Path
from typing import Any

from ssp_perception.files import atomic_write_text, report_document, REPORT_KEY

EVAL_TOOL = "ssp_eval"


@dataclass
class ModelResult:
    """Scores and costs of one evaluated model (a checkpoint, with or without propagation)."""

    name: str
    """Row label in tables and plots (e.g. "SSP", "image model", "DFF")."""
    checkpoint: str
    """Path of the evaluated artifact."""
    kind: str
    """Model kind: "image", "ssp", "dff", "netwarp", "tcb_ppm" or "tcb_ocr"."""
    miou: float
    """Mean IoU in %, one confusion matrix pooled over all labelled frames."""
    per_class_iou: dict[str, float | None]
    """IoU in % per class name; None where the class is in neither GT nor predictions."""
    tc: float
    """Temporal consistency in %: mean over clips of the clip's mean pairwise mIoU."""
    tc_per_clip: dict[str, float | None]
    """Clip TC in % per clip name (None for a one-frame clip)."""
    tc_curves: dict[str, list[float | None]]
    """Per clip, the pairwise TC in % of frames (i, i+1) for i = 0 .. N-2."""
    params: int
    """Number of parameters of everything the method runs (RAFT included where it is used)."""
    gflops: float
    """GFLOPs of one streaming step at the evaluation size (torch FLOP counter, see efficiency)."""
    fps: float
    """Frames per second: 1000 / median step latency on the evaluation device."""
    latency_ms: float
    """Median step latency in milliseconds."""
    latency_p90_ms: float
    """90th percentile step latency in milliseconds."""
    cpu_ms: float
    """Median process CPU time per step in milliseconds (all threads; robust to other load)."""
    frames: int
    """Number of frames run."""
    labelled_frames: int
    """Number of frames with ground truth (the mIoU pool)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method details (flow provider, homography source, keyframe interval, ...)."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-safe dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResult:
        """Build a record from :meth:`to_json` output; None scores come back as NaN."""
        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        fields = dict(data)
        for key in ("miou", "tc", "gflops", "fps", "latency_ms", "latency_p90_ms", "cpu_ms"):
            fields[key] = num(fields[key])
        return cls(**fields)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``ssp_perception.files``), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)  # mode 0644: readable by the machine's other users


def write_report(path: Path, results: list[ModelResult], info: dict[str, Any]) -> None:
    """Write the evaluation report JSON (``info`` = dataset and settings, then ``results``)."""
    doc = report_document(EVAL_TOOL, {**_json_safe(info),
                                      "results": [r.to_json() for r in results]})
    write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def is_legacy_report(doc: dict) -> bool:
    """Recognise an ssp_eval report written before reports named their tool."""
    return isinstance(doc.get("results"), list) and isinstance(doc.get("settings"), dict)


def read_report(path: Path) -> tuple[list[ModelResult], dict[str, Any]]:
    """Read a report written by :func:`write_report`; return (results, info)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ValueError(f"{path}: not an ssp_eval report (no 'results' list)")
    results = [ModelResult.from_json(r) for r in doc.pop("results")]
    doc.pop(REPORT_KEY, None)
    return results, doc
