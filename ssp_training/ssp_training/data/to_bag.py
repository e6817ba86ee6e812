"""Write a clip or a split of a prepared dataset as a rosbag2 (``ssp_data to-bag``).

Uses ``rosbags`` (no ROS installation needed) with its ROS 2 Kilted typestore: Kilted is the
distribution this project's ROS layer runs on (the newer Lyrical store exists in rosbags, but
the message definitions used here are identical and Kilted matches the installed rclpy).
Bags are rosbag2 metadata version 9, readable by ``ros2 bag info/play`` of Jazzy and later.

Topics (``<prefix>`` defaults to ``/camera``), all with the same header stamp per frame:

* ``<prefix>/image_raw``             sensor_msgs/Image, ``rgb8``
* ``<prefix>/image_raw/compressed``  sensor_msgs/CompressedImage, JPEG (only if asked)
* ``<prefix>/camera_info``           sensor_msgs/CameraInfo (K from dataset.json, else zeros)
* ``<prefix>/labels``                sensor_msgs/Image, ``mono8`` train ids (labelled frames)

Frames are stamped at the dataset's fps from a fixed start time; consecutive clips of a split
are separated by a one-second gap, so a node that resets on time jumps starts each clip fresh.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from ssp_perception.files import check_output_target, staged_dir
from ssp_perception.progress import progress_bar
from ssp_perception.ros_names import check_topic_name
import yaml

from .frames import (check_clip_name, clip_frames, DatasetInfo, list_clips, load_frame,
                     load_mask, sibling, SPLITS)

TYPESTORE = Stores.ROS2_KILTED
BAG_VERSION = 9
DEFAULT_START_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z: fixed, so bags repeat
CLIP_GAP_NS = 1_000_000_000
# builtin_interfaces/Time holds int32 seconds: the last stamp must be before 2038-01-19.
MAX_STAMP_NS = (2**31 - 1) * 1_000_000_000
MAX_FPS = 1e9   # beyond, consecutive stamps would fall on the same nanosecond
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
JPEG_QUALITY = 90
BAG_TOOL = "ssp_data to-bag"
_TYPES = {"image": "sensor_msgs/msg/Image", "compressed": "sensor_msgs/msg/CompressedImage",
          "info": "sensor_msgs/msg/CameraInfo", "labels": "sensor_msgs/msg/Image"}


def topics(prefix: str = "/camera") -> dict[str, str]:
    """Return the topic names used for ``prefix``: keys image, compressed, info, labels.

    Raises ``ValueError`` (naming ``--topic-prefix``) if they are not valid fully qualified
    ROS 2 topic names; ``/`` puts the topics at the root.
    """
    if prefix != "/":
        check_topic_name(prefix, "--topic-prefix", absolute=True)
    p = prefix.rstrip("/")
    return {"image": f"{p}/image_raw", "compressed": f"{p}/image_raw/compressed",
            "info": f"{p}/camera_info", "labels": f"{p}/labels"}


def is_legacy_bag(folder: Path) -> bool:
    """Return True if ``folder`` is a bag ``to-bag`` wrote before output markers existed.

    Recognised by what it writes and nothing else: ``metadata.yaml`` plus its one storage file
    (named after the folder), and only the image/camera_info/labels topics of one prefix with
    their message types. A bag recorded from a camera, or a folder with anything more, is not.
    """
    try:
        names = {p.name for p in folder.iterdir()}
        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        info = meta["rosbag2_bagfile_information"]
        found = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
                 for t in info["topics_with_message_count"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False
    data = names - {"metadata.yaml"}
    storage = {f"{folder.name}.{ext}" for ext in ("db3", "mcap")}
    image = [t for t in found if t.endswith("/image_raw")]
    if "metadata.yaml" not in names or len(data) != 1 or not data <= storage or len(image) != 1:
        return False
    prefix = image[0].removesuffix("/image_raw")
    expected = {f"{prefix}/image_raw": _TYPES["image"],
                f"{prefix}/image_raw/compressed": _TYPES["compressed"],
                f"{prefix}/camera_info": _TYPES["info"], f"{prefix}/labels": _TYPES["labels"]}
    return all(expected.get(name) == kind for name, kind in found.items())


def _clips_of(root: Path, clip_or_split: str) -> list[str]:
    if clip_or_split in SPLITS and (root / f"{clip_or_split}.txt").is_file():
        clips = list_clips(root, clip_or_split)
        if not clips:
            raise ValueError(f"split {clip_or_split!r} of {root} is empty")
        return clips
    if (root / "data" / check_clip_name(clip_or_split, root, "--clip") / "origin").is_dir():
        return [clip_or_split]
    raise ValueError(f"{clip_or_split!r} is neither a split ({', '.join(SPLITS)}) nor a clip "
                     f"of {root / 'data'}")


class _Messages:
    """Builds the serialized messages of one frame."""

    def __init__(self, info: DatasetInfo, frame_id: str) -> None:
        self.store = get_typestore(TYPESTORE)
        t = self.store.types
        self.Image = t["sensor_msgs/msg/Image"]
        self.Compressed = t["sensor_msgs/msg/CompressedImage"]
        self.Info = t["sensor_msgs/msg/CameraInfo"]
        self.Header = t["std_msgs/msg/Header"]
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Roi = t["sensor_msgs/msg/RegionOfInterest"]
        self.frame_id = frame_id
        self.k = info.camera_matrix if info.camera_matrix is not None else np.zeros((3, 3))

    def header(self, stamp_ns: int) -> object:
        sec, nsec = divmod(stamp_ns, 1_000_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nsec), frame_id=self.frame_id)

    def image(self, stamp_ns: int, array: np.ndarray, encoding: str) -> bytes:
        h, w = array.shape[:2]
        channels = 1 if array.ndim == 2 else array.shape[2]
        msg = self.Image(header=self.header(stamp_ns), height=h, width=w, encoding=encoding,
                         is_bigendian=0, step=w * channels,
                         data=np.ascontiguousarray(array).reshape(-1))
        return self.store.serialize_cdr(msg, self.Image.__msgtype__)

    def compressed(self, stamp_ns: int, rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a frame")
        # image_transport's format string: original encoding; codec; encoded channel order.
        msg = self.Compressed(header=self.header(stamp_ns), format="rgb8; jpeg compressed bgr8",
                              data=buf.reshape(-1))
        return self.store.serialize_cdr(msg, self.Compressed.__msgtype__)

    def camera_info(self, stamp_ns: int, size: tuple[int, int]) -> bytes:
        h, w = size
        k = self.k
        # An all-zero K marks an uncalibrated camera (sensor_msgs/CameraInfo convention).
        p = np.zeros((3, 4))
        p[:, :3] = k
        r = np.eye(3) if k.any() else np.zeros((3, 3))
        msg = self.Info(header=self.header(stamp_ns), height=h, width=w,
                        distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).copy(),
                        r=r.reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0,
                        roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0,
                                     do_rectify=False))
        return self.store.serialize_cdr(msg, self.Info.__msgtype__)


def _write_frame(writer: Writer, conn: dict, msgs: _Messages, frame: Path, t: int) -> None:
    """Write the messages of one frame, all stamped ``t`` (ns)."""
    rgb = load_frame(frame)
    writer.write(conn["image"], t, msgs.image(t, rgb, "rgb8"))
    if "compressed" in conn:
        writer.write(conn["compressed"], t, msgs.compressed(t, rgb))
    writer.write(conn["info"], t, msgs.camera_info(t, rgb.shape[:2]))
    mask = sibling(frame, "mask")
    if mask.is_file():
        writer.write(conn["labels"], t, msgs.image(t, load_mask(mask), "mono8"))


def _check_stamps(start_ns: int, rate: float, frames: int, clips: int) -> None:
    """Raise ``ValueError`` unless the last of ``frames`` stamps fits a ROS time (int32 s)."""
    gaps = (clips - 1) * CLIP_GAP_NS
    last = start_ns + (frames - 1) * 1e9 / rate + gaps
    if frames > 1 and last > MAX_STAMP_NS:
        least = (frames - 1) * 1e9 / (MAX_STAMP_NS - start_ns - gaps)
        raise ValueError(f"--fps {rate:g} stamps the last of {frames} frames "
                         f"{(last - start_ns) / 1e9:.3g} s after the bag's start, beyond what a "
                         f"ROS time holds (int32 seconds, 2038-01-19); use --fps >= "
                         f"{least * 1.001:.3g}")


def write_bag(root: str | Path, clip_or_split: str, out_path: str | Path,
              storage: str = "sqlite3", compressed: bool = False, fps: float | None = None,
              topic_prefix: str = "/camera", frame_id: str = "camera_optical_frame",
              start_ns: int = DEFAULT_START_NS, overwrite: bool = False,
              progress: bool = True) -> Path:
    """Write the clip (or every clip of the split) ``clip_or_split`` of ``root`` as a bag.

    Every input is checked before anything is written. The bag is written into a staging
    folder next to ``out_path`` and renamed into place when complete
    (:func:`ssp_perception.files.staged_dir`); ``overwrite`` (``--force``) replaces only a bag
    this tool wrote. ``fps`` overrides the dataset's frame rate for the stamps.
    """
    root, out = Path(root), Path(out_path)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    names = topics(topic_prefix)
    info = DatasetInfo.load(root)
    rate = float(fps if fps is not None else info.fps)
    if not math.isfinite(rate) or not 0 < rate <= MAX_FPS:
        raise ValueError(f"--fps must be a number in (0, {MAX_FPS:g}], got {rate:g}")
    check_output_target(out, BAG_TOOL, overwrite, legacy=is_legacy_bag)
    clips = _clips_of(root, clip_or_split)
    frames = [f for c in clips for f in clip_frames(root, c)]
    _check_stamps(start_ns, rate, len(frames), len(clips))
    msgs = _Messages(info, frame_id)
    with staged_dir(out, BAG_TOOL, force=overwrite, legacy=is_legacy_bag) as stage:
        # rosbags creates the bag folder itself and names the storage file after it.
        with Writer(stage / out.name, version=BAG_VERSION,
                    storage_plugin=STORAGES[storage]) as writer:
            kinds = ("image", "info", "labels") + (("compressed",) if compressed else ())
            conn = {key: writer.add_connection(names[key], _TYPES[key], typestore=msgs.store)
                    for key in kinds}
            bar = progress_bar(total=len(frames), unit="frame", desc="to-bag",
                               disable=not progress)
            clip_start = start_ns
            for clip in clips:
                t = clip_start
                for i, frame in enumerate(clip_frames(root, clip)):
                    t = clip_start + round(i * 1e9 / rate)
                    _write_frame(writer, conn, msgs, frame, t)
                    bar.update(1)
                clip_start = t + round(1e9 / rate) + CLIP_GAP_NS
            bar.close()
        for item in (stage / out.name).iterdir():
            os.replace(item, stage / item.name)
        (stage / out.name).rmdir()
    return out
