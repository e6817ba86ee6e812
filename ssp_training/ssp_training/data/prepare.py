"""Prepare UAVid (v1.5 video release + VDD labels) and RuralScapes (``ssp_data prepare``).

Both become the common layout of docs/DATA_FORMAT.md, following SSP_SPEC §6:

* **UAVid**: every frame of ``uavid_{train,val}/<seq>/images.mp4``, frame 0 dropped, cut into
  100-frame clips (shorter than 50 dropped); the label ``Labels/<NNNNNN>.png`` belongs to video
  frame NNNNNN, so each clip's only label is its last frame. Colours map to UAVid ids, VDD's
  water and roof overlay clutter and building, then ids become train ids (clutter -> 255).
  Val = seq16-20, 36, 37; the official test set has no labels and is skipped.
* **RuralScapes**: every 5th frame of ``videos/<VID>.MP4`` plus the last (50 -> 10 fps);
  frames and labels each drop their first and last; 50-frame clips (shorter than 10, or
  without a label, dropped). Val = DJI_0051, 0056, 0061, 0086, 0088, 0089, 0116.

Frame stems are the source video's frame index (``%06d``); clips are ``<seq>_<kkk>``.

The work is resumable and idempotent: every clip is written into a temporary folder and
renamed into place when complete, every finished sequence leaves a record in ``.state/``, and
a rerun skips finished sequences without decoding anything; the split lists and
``dataset.json`` are rewritten only when their content changes.

Label colours, clip rules and the sequence plans of each download live in :mod:`.sources`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
import json
import logging
import os
from pathlib import Path
import shutil
from typing import Callable, Iterator

import cv2
import numpy as np
from ssp_perception.config import MAX_SIDE
from ssp_perception.progress import progress_bar

from . import files
from .archive import ArchiveError, open_source, Source
from .sources import (plan_ruralscapes, plan_uavid, PrepareError, Rules, ruralscapes_mask,
                      RURALSCAPES_RULES, SequencePlan, uavid_mask, UAVID_RULES)

LOG = logging.getLogger(__name__)
FORMAT_VERSION = 1
DEFAULT_SIZE = (1440, 2560)


# ---------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class _Frame:
    index: int
    image: np.ndarray


def _decode(path: Path, member: str) -> Iterator[_Frame]:
    """Yield the frames of a video in order, RGB; errors name the video."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PrepareError(f"cannot open video {member} (missing, corrupt or an unsupported "
                           "codec)")
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield _Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
        if i == 0:
            raise PrepareError(f"no frame could be decoded from video {member} (corrupt or "
                               "unsupported codec)")
    finally:
        cap.release()


_THUMB = (64, 36)         # (w, h) of the grey thumbnails frames and stills are compared at
MATCH_WINDOW = 3          # video frames searched on each side of a label's nominal position
MISMATCH_LEVELS = 8.0     # mean grey-level difference above which a frame is not its still


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Return a small grey float32 picture for comparing frames with stills."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def match_offset(frames: Iterator[_Frame], still_index: int, still: np.ndarray,
                 window: int = MATCH_WINDOW) -> tuple[int, float]:
    """Return (offset, error): video frame ``still_index + offset`` looks most like ``still``.

    Only frames within ``window`` of the nominal position are decoded and compared (grey
    thumbnails, mean absolute difference in grey levels).
    """
    errors = {}
    for f in frames:
        if f.index > still_index + window:
            break
        if f.index >= still_index - window:
            errors[f.index - still_index] = float(np.abs(thumbnail(f.image) - still).mean())
    if not errors:
        raise PrepareError(f"the video ends before frame {still_index}")
    best = min(errors, key=errors.get)
    return best, errors[best]


def _extracted(frames: Iterator[_Frame], step: int) -> Iterator[_Frame]:
    """Yield every ``step``-th frame and, if the step skipped it, the video's last frame."""
    last: _Frame | None = None
    last_yielded = -1
    for f in frames:
        if f.index % step == 0:
            yield f
            last_yielded = f.index
        last = f
    if last is not None and last.index != last_yielded:
        yield last


def _kept(frames: Iterator[_Frame], rules: Rules) -> Iterator[_Frame]:
    """Yield the extracted frames without the first/last one as the rules say.

    One frame is held back until the next arrives, so the last one is known without
    trusting the container's (often inexact) frame count.
    """
    held: _Frame | None = None
    n = -1
    for n, f in enumerate(_extracted(frames, rules.step)):
        if held is not None and not (n == 1 and rules.drop_first):
            yield held
        held = f
    if held is not None and not rules.drop_last and not (n == 0 and rules.drop_first):
        yield held


class _ClipWriter:
    """Writes one clip into a temporary folder and moves it into place when complete.

    A clip whose folder already exists was finished by an earlier run: its frames are only
    counted. Encoding and writing run on a thread pool (OpenCV releases the GIL).
    """

    def __init__(self, data_dir: Path, name: str, pool: ThreadPoolExecutor,
                 resize: Callable[[np.ndarray], np.ndarray]) -> None:
        self.final = data_dir / name
        self.tmp = data_dir / f".{name}.partial"
        self.name = name
        self.skip = self.final.is_dir()
        self.count = 0
        self.labels = 0
        self.pool = pool
        self.resize = resize
        self.pending: list[Future] = []
        if not self.skip:
            shutil.rmtree(self.tmp, ignore_errors=True)
            (self.tmp / "origin").mkdir(parents=True)
            (self.tmp / "mask").mkdir()

    def _write_frame(self, stem: str, image: np.ndarray) -> None:
        files.write_png(self.tmp / "origin" / f"{stem}.png", self.resize(image))

    def add(self, stem: str, image: np.ndarray, mask: np.ndarray | None,
            labelled: bool) -> None:
        """Queue a full-resolution RGB frame and its train-id mask (already resized)."""
        self.count += 1
        self.labels += labelled
        if self.skip:
            return
        self.pending.append(self.pool.submit(self._write_frame, stem, image))
        if mask is not None:
            self.pending.append(self.pool.submit(
                files.write_png, self.tmp / "mask" / f"{stem}.png", mask))
        while len(self.pending) > 8:   # bound the frames held in memory
            self.pending.pop(0).result()

    def close(self, keep: bool) -> bool:
        """Finish the clip: move it into place if ``keep``, else discard it."""
        for f in self.pending:
            f.result()
        if not self.skip:
            if keep:
                os.replace(self.tmp, self.final)
            else:
                files.remove_tree(self.tmp)
        return keep


@dataclass(frozen=True)
class PrepareParams:
    """What a prepared folder was made from; a rerun must match it."""

    dataset: str
    size: tuple[int, int]
    inputs: tuple[str, ...]

    def to_dict(self) -> dict:
        """Return the plain-JSON form."""
        return {"dataset": self.dataset, "size": list(self.size), "inputs": list(self.inputs)}


def _input_id(path: Path) -> str:
    """Return a cheap fingerprint of an input: name and size (files) or name (folders)."""
    return f"{path.name}:{path.stat().st_size}" if path.is_file() else f"{path.name}/"


class _Preparer:
    """Turn planned sequences into clips, sequence by sequence, resumably."""

    def __init__(self, out: Path, rules: Rules, params: PrepareParams, source: Source,
                 extra: Source | None, progress: bool) -> None:
        self.out, self.rules, self.params = out, rules, params
        self.source, self.extra, self.progress = source, extra, progress
        self.data_dir = out / "data"
        self.state_dir = out / ".state"
        self.cache_dir = out / ".cache"
        self.unknown_colour = 0

    def done(self, plan: SequencePlan) -> list[str] | None:
        """Return the clips of a finished sequence, or None if it must be (re)done."""
        path = self.state_dir / f"{plan.name}.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        if state.get("params") != self.params.to_dict():
            raise PrepareError(
                f"{self.out} was prepared with other settings ({state.get('params')}); "
                f"now {self.params.to_dict()}: use a new --out folder or delete it")
        clips = list(state["clips"])
        return clips if all((self.data_dir / c).is_dir() for c in clips) else None

    def run(self, plan: SequencePlan) -> list[str]:
        """Prepare one sequence and return its clip names."""
        clips = self.done(plan)
        if clips is not None:
            LOG.info("%s: already prepared (%d clips), skipped", plan.name, len(clips))
            return clips
        for d in (self.data_dir, self.state_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        labels = self._labels(plan)
        video = self.source.local_path(plan.video, self.cache_dir)
        try:
            offset = self._offset(plan, video)
            clips = self._write_clips(plan, video, labels, offset)
        finally:
            if video.is_relative_to(self.cache_dir):
                video.unlink(missing_ok=True)
        files.write_json(self.state_dir / f"{plan.name}.json",
                         {"params": self.params.to_dict(), "clips": clips})
        return clips

    def _still(self, plan: SequencePlan, index: int) -> np.ndarray:
        name = plan.stills[index]
        return thumbnail(files.decode_image(self.source.read(name), f"{self.source.path}:{name}"))

    def _offset(self, plan: SequencePlan, video: Path) -> int:
        """Return how many frames the video runs ahead of the label numbering (usually 0).

        Labels are named after their video frame; where the download also has the labelled
        pictures as stills, the first one is looked up in the video to confirm that, and a
        shift (a video with extra or missing leading frames) is corrected.
        """
        usable = sorted(set(plan.stills) & set(plan.labels))
        if not usable:
            return 0
        first = usable[0]
        offset, err = match_offset(_decode(video, plan.video), first, self._still(plan, first))
        if err > MISMATCH_LEVELS:
            raise PrepareError(
                f"{plan.video}: no frame within {MATCH_WINDOW} of frame {first} looks like the "
                f"still {plan.stills[first]} (closest differs by {err:.1f} grey levels): the "
                "video and the labels do not belong together")
        if offset:
            LOG.warning("%s: label %06d matches video frame %d; shifting all labels by %+d",
                        plan.name, first, first + offset, offset)
        return offset

    def _labels(self, plan: SequencePlan) -> dict[int, str]:
        idx = sorted(plan.labels)
        if self.rules.drop_label_ends:
            idx = idx[1:-1]
        return {i: plan.labels[i] for i in idx}

    def _mask(self, plan: SequencePlan, index: int) -> np.ndarray:
        name = plan.labels[index]
        colour = files.decode_image(self.source.read(name), f"{self.source.path}:{name}")
        if self.rules.name == "uavid":
            vdd = None
            if self.extra is not None and index in plan.extra:
                vdd = files.decode_image(self.extra.read(plan.extra[index]),
                                         f"{self.extra.path}:{plan.extra[index]}",
                                         grayscale=True)
            mask, unknown = uavid_mask(colour, vdd)
        else:
            mask, unknown = ruralscapes_mask(colour)
        self.unknown_colour += unknown
        h, w = self.params.size
        return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)

    def _write_clips(self, plan: SequencePlan, video: Path, labels: dict[int, str],
                     offset: int) -> list[str]:
        h, w = self.params.size
        rules = self.rules
        clips: list[str] = []
        decoded = [0]

        def counted() -> Iterator[_Frame]:
            # Frames are numbered like the labels: video frame i is frame i - offset.
            for f in _decode(video, plan.video):
                decoded[0] = f.index + 1 - offset
                if f.index >= offset:
                    yield _Frame(f.index - offset, f.image)

        def resize(img: np.ndarray) -> np.ndarray:
            # Bicubic, as Ref resizes its frames (spec §6.1).
            return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)

        bar = progress_bar(desc=plan.name, unit="frame", disable=not self.progress)
        with ThreadPoolExecutor(max_workers=2) as pool:
            writer: _ClipWriter | None = None
            for position, frame in enumerate(_kept(counted(), rules)):
                if position % rules.clip_len == 0:
                    if writer is not None:
                        self._close(writer, clips)
                    name = f"{plan.name}_{position // rules.clip_len:03d}"
                    writer = _ClipWriter(self.data_dir, name, pool, resize)
                labelled = frame.index in labels
                mask = self._mask(plan, frame.index) if labelled and not writer.skip else None
                if labelled and frame.index in plan.stills:
                    self._check_still(plan, frame)
                writer.add(f"{frame.index:06d}", frame.image, mask, labelled)
                bar.update(1)
            if writer is not None:
                self._close(writer, clips)
        bar.close()
        beyond = sorted(i for i in labels if i >= decoded[0])
        if beyond:
            raise PrepareError(
                f"{plan.video}: has {decoded[0]} frames but labels point beyond it: "
                f"{', '.join(labels[i] for i in beyond[:3])} (is the video truncated?)")
        return clips

    def _check_still(self, plan: SequencePlan, frame: _Frame) -> None:
        err = float(np.abs(thumbnail(frame.image) - self._still(plan, frame.index)).mean())
        if err > MISMATCH_LEVELS:
            raise PrepareError(
                f"{plan.video}: frame {frame.index} differs from the still "
                f"{plan.stills[frame.index]} by {err:.1f} grey levels: the video drops or "
                "repeats frames, so its labels cannot be placed")

    def _close(self, writer: _ClipWriter, clips: list[str]) -> None:
        keep = writer.count >= self.rules.min_len and (
            writer.labels > 0 or not self.rules.require_label)
        if writer.close(keep):
            clips.append(writer.name)


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    files.atomic_write_bytes(path, data)
    return True


def _finish(out: Path, rules: Rules, params: PrepareParams, fps: float,
            splits: dict[str, list[str]]) -> bool:
    """Write the split lists and dataset.json (only if they change); return True if any did."""
    changed = False
    for split in ("train", "val"):
        text = "".join(f"{c}\n" for c in splits.get(split, []))
        changed |= _write_if_changed(out / f"{split}.txt", text.encode())
    desc = {"format": FORMAT_VERSION, "class_set": rules.class_set.to_dict(), "fps": fps,
            "size": list(params.size), "source": rules.name,
            "generator": {"name": f"ssp_data prepare {rules.name}", **params.to_dict()}}
    text = json.dumps(desc, indent=2, sort_keys=True) + "\n"
    changed |= _write_if_changed(out / "dataset.json", text.encode())
    return changed


@dataclass(frozen=True)
class PrepareReport:
    """What a prepare run did."""

    out: Path
    clips: dict[str, list[str]]
    sequences_done: int
    sequences_skipped: int
    changed: bool


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return ``size`` as (H, W) ints if each side is in 1..MAX_SIDE, else raise PrepareError."""
    if len(size) != 2 or not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in size):
        raise PrepareError(f"--size must be HxW with sides 1..{MAX_SIDE}, got "
                           f"{'x'.join(map(str, size))}")
    return int(size[0]), int(size[1])


def _remove_failed(out: Path, created: bool, keep_cache: bool) -> None:
    """After a failed or interrupted run: drop half-written clips and, unless kept, the cache.

    Finished sequences stay (a rerun resumes after them); a folder this run created and
    finished nothing in is removed entirely.
    """
    for partial in (out / "data").glob(".*.partial"):
        files.remove_tree(partial)
    if not keep_cache:
        files.remove_tree(out / ".cache")
    if created and not any((out / ".state").glob("*.json")):
        files.remove_tree(out)


def _prepare(out: str | Path, rules: Rules, plans_fn: Callable[[], list[SequencePlan]],
             params: PrepareParams, source: Source, extra: Source | None, fps: float,
             progress: bool, keep_cache: bool) -> PrepareReport:
    out = Path(out)
    created = not out.exists()
    plans = plans_fn()
    prep = _Preparer(out, rules, params, source, extra, progress)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    done = skipped = 0
    try:
        for plan in plans:
            already = prep.done(plan) is not None
            clips = prep.run(plan)
            splits[plan.split].extend(clips)
            skipped += already
            done += not already
    except BaseException:
        _remove_failed(out, created, keep_cache)
        raise
    if prep.unknown_colour:
        LOG.warning("%d label pixels had colours outside the %s palette; they are ignored "
                    "(255)", prep.unknown_colour, rules.name)
    if not keep_cache:
        shutil.rmtree(out / ".cache", ignore_errors=True)
    changed = _finish(out, rules, params, fps, splits) or done > 0
    return PrepareReport(out=out, clips=splits, sequences_done=done,
                         sequences_skipped=skipped, changed=changed)


def _check_out(out: str | Path) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / ".state").is_dir():
        raise PrepareError(f"--out {out} is a non-empty folder that was not made by "
                           "`ssp_data prepare`; choose an empty or new folder")


def prepare_uavid(uavid: str | Path, out: str | Path, vdd: str | Path | None = None,
                  size: tuple[int, int] = DEFAULT_SIZE, progress: bool = True,
                  keep_cache: bool = False) -> PrepareReport:
    """Prepare UAVid v1.5 (video release zip or folder) plus optional VDD labels into ``out``.

    Without VDD labels there is no water and no roof class (roofs stay "building").
    """
    size = check_size(size)
    _check_out(out)
    inputs = [Path(uavid)] + ([Path(vdd)] if vdd is not None else [])
    with open_source(uavid) as src:
        vdd_src = open_source(vdd) if vdd is not None else None
        try:
            if vdd_src is None:
                LOG.warning("no VDD labels given: water and roof will be absent")
            params = PrepareParams("uavid", tuple(size), tuple(_input_id(p) for p in inputs))
            return _prepare(out, UAVID_RULES, lambda: plan_uavid(src, vdd_src), params, src,
                            vdd_src, 20.0, progress, keep_cache)
        finally:
            if vdd_src is not None:
                vdd_src.close()


def prepare_ruralscapes(source: str | Path, out: str | Path,
                        size: tuple[int, int] = DEFAULT_SIZE, progress: bool = True,
                        keep_cache: bool = False) -> PrepareReport:
    """Prepare RuralScapes (download zip or folder with videos/ and labels/) into ``out``."""
    size = check_size(size)
    _check_out(out)
    with open_source(source) as src:
        params = PrepareParams("ruralscapes", tuple(size), (_input_id(Path(source)),))
        return _prepare(out, RURALSCAPES_RULES, lambda: plan_ruralscapes(src), params, src,
                        None, 10.0, progress, keep_cache)


__all__ = ["ArchiveError", "PrepareError", "PrepareReport", "prepare_ruralscapes",
           "prepare_uavid"]
