"""rosbag2 input and output with rosbags: the one wrapper of the bag library in this repo.

:class:`BagSource` validates and reads the camera (and ground-truth) topic of a bag;
:class:`BagRecorder` writes serialised messages from any thread; :func:`ensure_type` registers
message types rosbags does not know (ssp_msgs) from their .msg files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import queue
import struct
import threading
from typing import Any, Iterator

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores

from .config import ReplayConfig, ReplayError, WriteError
from .report import encode_labels
from ..conversions import (COMPRESSED_TYPE, IMAGE_TYPE, LABEL_ENCODINGS, mono8_array,
                           rgb8_image_message, stamp_ns)
from ...cli import one_line
from ...encodings import decode_compressed, decode_image, EncodingError


@dataclass
class Frame:
    """One input frame: its stamps and the sensor_msgs/Image bytes that get published."""

    index: int
    stamp_ns: int
    """Header stamp, nanoseconds (outputs are matched to inputs by it)."""
    log_ns: int
    """Bag receive time, nanoseconds (the realtime schedule and the output bag use it)."""
    cdr: bytes
    """Serialised sensor_msgs/Image (CompressedImage input is decoded to rgb8 first)."""
    msg: Any
    """The same image, deserialised by rosbags (for the evaluation pass)."""
    bad: str = ""
    """Why the replay cannot read this frame itself ("undeserialisable", "undecodable"); only
    with ``--on-bad-frame skip`` (``fail`` stops instead). Then ``cdr`` is empty, ``msg`` None."""
    detail: str = ""
    """The one-line reason of ``bad``."""


UNREADABLE_STAMP = -1
"""The stamp of a frame whose header cannot be read (a message cut short)."""


def raw_stamp(cdr: bytes) -> int:
    """Return the header stamp of a serialised message from its first bytes, or -1.

    Every message the replay reads starts with a std_msgs/Header, whose stamp follows the
    4-byte CDR encapsulation (byte 1 odd: little endian), so it is readable even where the
    rest of the message is not.
    """
    if len(cdr) < 12:
        return UNREADABLE_STAMP
    sec, nanosec = struct.unpack_from("<iI" if cdr[1] & 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class BagIndex:
    """What the validation pass learnt about the bag."""

    path: Path
    storage: str
    """"sqlite3" or "mcap"."""
    image_type: str
    stamps: tuple[int, ...]
    log_times: tuple[int, ...]
    labels: dict[int, bytes] = field(repr=False)
    """Ground truth by header stamp, PNG-compressed."""
    unmatched_labels: int = 0
    """Ground-truth messages whose stamp matched no image."""
    label_ids: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)
    """The ids each ground-truth mask holds, by header stamp (checked against the classes)."""

    @property
    def frames(self) -> int:
        """Return the number of frames to replay."""
        return len(self.stamps)

    @property
    def rate_hz(self) -> float:
        """Return the bag's median frame rate (NaN for a single frame)."""
        if len(self.log_times) < 2:
            return math.nan
        dt = np.median(np.diff(np.asarray(self.log_times, np.float64))) / 1e9
        return 1.0 / dt if dt > 0 else math.nan


def _storage_of(path: Path) -> str:
    files = [path] if path.is_file() else sorted(path.iterdir())
    if any(p.suffix == ".mcap" for p in files):
        return "mcap"
    if any(p.suffix == ".db3" for p in files):
        return "sqlite3"
    raise ReplayError(f"bag {path}: no .mcap or .db3 storage file found")


class BagSource:
    """Read the image (and label) topic of one rosbag2 with rosbags; validate it up front."""

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg
        self.path = cfg.bag
        if not self.path.exists():
            raise ReplayError(f"bag {self.path} does not exist")
        if self.path.is_file() and self.path.suffix == ".bag":
            raise ReplayError(f"bag {self.path} is a ROS 1 bag; ssp_replay reads rosbag2 "
                              f"(convert it with `rosbags-convert --src {self.path}`)")
        # sensor_msgs/Image and CompressedImage are the same in every ROS 2 distribution.
        self.typestore = get_typestore(Stores.ROS2_KILTED)

    def _open(self) -> Reader:
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as err:  # rosbags raises several types for unreadable bags
            raise ReplayError(f"bag {self.path} cannot be opened (image topic "
                              f"{self.cfg.image_topic}): {err}") from err
        return reader

    def _connections(self, reader: Reader, topic: str, role: str) -> list:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            known = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections}))
            raise ReplayError(f"bag {self.path} has no {role} topic {topic}; "
                              f"its topics: {known or 'none'}")
        allowed = (IMAGE_TYPE, COMPRESSED_TYPE) if role == "image" else (IMAGE_TYPE,)
        for c in conns:
            if c.msgtype not in allowed:
                raise ReplayError(f"bag {self.path}: {role} topic {topic} has type {c.msgtype}; "
                                  f"ssp_replay needs {' or '.join(allowed)}")
        return conns

    def index(self) -> BagIndex:
        """Read the bag once: check topics, types, stamps and ground truth; count frames."""
        cfg = self.cfg
        reader = self._open()
        try:
            image_conns = self._connections(reader, cfg.image_topic, "image")
            label_conns = (self._connections(reader, cfg.label_topic, "label")
                           if cfg.label_topic else [])
            stamps: list[int] = []
            log_times: list[int] = []
            seen: set[int] = set()
            labels: dict[int, bytes] = {}
            label_ids: dict[int, tuple[int, ...]] = {}
            checked = False
            for conn, log_ns, raw in self._messages(reader, image_conns + label_conns):
                if conn.topic == cfg.label_topic:
                    msg = self._deserialize(raw, conn)
                    stamp = stamp_ns(msg.header)
                    mask = self._label_array(msg, stamp)
                    labels[stamp] = encode_labels(mask)
                    label_ids[stamp] = tuple(np.flatnonzero(np.bincount(mask.ravel())).tolist())
                    continue
                if cfg.max_frames and len(stamps) >= cfg.max_frames:
                    continue
                # The first readable frame is decoded (an unusable encoding fails here, not
                # as N timeouts); of the others the stamps are enough.
                frame = self._frame(len(stamps), log_ns, raw, conn, decode=not checked)
                if not frame.bad:
                    if not checked:
                        self.rgb(frame)
                        checked = True
                    if frame.stamp_ns in seen:
                        raise ReplayError(
                            f"bag {self.path}: topic {cfg.image_topic} has two frames stamped "
                            f"{frame.stamp_ns} ns; outputs are matched to frames by header "
                            f"stamp")
                    seen.add(frame.stamp_ns)
                stamps.append(frame.stamp_ns)
                log_times.append(log_ns)
            image_type = image_conns[0].msgtype
        finally:
            reader.close()
        if not stamps:
            raise ReplayError(f"bag {self.path} has no messages on topic {cfg.image_topic}")
        matched = {s: labels[s] for s in stamps if s in labels}
        if cfg.label_topic and not matched:
            raise ReplayError(f"bag {self.path}: no message on label topic {cfg.label_topic} "
                              f"shares a header stamp with {cfg.image_topic}")
        return BagIndex(self.path, _storage_of(self.path), image_type, tuple(stamps),
                        tuple(log_times), matched, len(labels) - len(matched),
                        {s: label_ids[s] for s in matched})

    def check_label_ids(self, index: BagIndex, num_classes: int, ignore_index: int) -> None:
        """Raise ReplayError naming the first ground-truth mask with ids outside the classes.

        Called once the node named its classes (``class_info``), before any frame is sent.
        """
        bad = {s: [i for i in ids if i >= num_classes and i != ignore_index]
               for s, ids in index.label_ids.items()}
        bad = {s: ids for s, ids in bad.items() if ids}
        if not bad:
            return
        first = next(s for s in index.stamps if s in bad)
        more = f" (and {len(bad) - 1} more masks)" if len(bad) > 1 else ""
        raise ReplayError(f"bag {self.path}: label message stamped {first} ns on "
                          f"{self.cfg.label_topic} holds class ids "
                          f"{', '.join(map(str, bad[first][:10]))} outside the model's "
                          f"{num_classes} classes [0, {num_classes}) ({ignore_index} = "
                          f"ignore){more}")

    def _messages(self, reader: Reader, conns: list) -> Iterator[tuple[Any, int, bytes]]:
        try:
            yield from reader.messages(connections=conns)
        except Exception as err:  # a damaged storage file fails while it is being read
            topics = ", ".join(sorted({c.topic for c in conns}))
            raise ReplayError(f"bag {self.path} is corrupt (reading {topics}): {err}") from err

    def _deserialize(self, raw: bytes, conn: Any) -> Any:
        try:
            return self.typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as err:
            raise ReplayError(f"bag {self.path}: a message stamped {raw_stamp(raw)} ns on "
                              f"{conn.topic} cannot be deserialised as {conn.msgtype}: "
                              f"{err}") from err

    def _message(self, k: int, raw: bytes, conn: Any) -> Any:
        """Return image message ``k`` deserialised, or None where --on-bad-frame skip skips it."""
        try:
            return self.typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as err:
            self._bad_frame(k, raw_stamp(raw), f"cannot be deserialised as {conn.msgtype}: "
                            f"{one_line(err)}")
            return None

    def _bad_frame(self, k: int, stamp: int, detail: str) -> None:
        """Raise ReplayError naming frame ``k`` unless ``--on-bad-frame skip`` skips it."""
        if self.cfg.on_bad_frame == "skip":
            return
        when = "stamp unreadable" if stamp == UNREADABLE_STAMP else f"stamp {stamp} ns"
        raise ReplayError(f"bag {self.path}: frame {k} ({when}) on {self.cfg.image_topic} "
                          f"{detail}; pass --on-bad-frame skip to replay the other frames "
                          f"and count such frames in the report")

    def _frame(self, k: int, log_ns: int, raw: bytes, conn: Any, decode: bool = True) -> Frame:
        """Return frame ``k`` as publishable bytes; a bad one (skip) says why, see Frame.bad.

        ``decode=False`` (the index pass): a CompressedImage is not decoded, only its stamp
        and message are kept (``cdr`` empty).
        """
        msg = self._message(k, raw, conn)
        if msg is None:
            return Frame(k, raw_stamp(raw), log_ns, b"", None, "undeserialisable",
                         f"cannot be deserialised as {conn.msgtype}")
        if conn.msgtype != COMPRESSED_TYPE:
            return Frame(k, stamp_ns(msg.header), log_ns, bytes(raw), msg)
        if not decode:
            return Frame(k, stamp_ns(msg.header), log_ns, b"", msg)
        # The node subscribes to raw images, as it would behind an image_transport republisher.
        try:
            rgb = decode_compressed(msg.data, msg.format)
        except EncodingError as err:
            self._bad_frame(k, stamp_ns(msg.header), f"cannot be decoded: {err}")
            return Frame(k, stamp_ns(msg.header), log_ns, b"", None, "undecodable", str(err))
        image = rgb8_image_message(self.typestore, msg.header, rgb)
        return Frame(k, stamp_ns(msg.header), log_ns,
                     bytes(self.typestore.serialize_cdr(image, IMAGE_TYPE)), image)

    def _label_array(self, msg: Any, stamp: int) -> np.ndarray:
        if msg.encoding not in LABEL_ENCODINGS:
            raise ReplayError(f"bag {self.path}: label topic {self.cfg.label_topic} has encoding "
                              f"{msg.encoding!r}; ground truth must be one of "
                              f"{', '.join(LABEL_ENCODINGS)} (train ids, 255 = ignore)")
        if msg.step < msg.width or len(msg.data) < msg.height * msg.step:
            raise ReplayError(f"bag {self.path}: label message stamped {stamp} ns on "
                              f"{self.cfg.label_topic} is truncated or has a bad step")
        return mono8_array(msg).copy()

    def frames(self, index: BagIndex) -> Iterator[Frame]:
        """Yield the frames to replay in bag order, as publishable sensor_msgs/Image bytes.

        A frame the replay cannot read itself (a message that cannot be deserialised, a
        compressed image that cannot be decoded) stops with ReplayError naming its index and
        stamp, or with ``--on-bad-frame skip`` comes as a :attr:`Frame.bad` frame.
        """
        reader = self._open()
        try:
            conns = self._connections(reader, self.cfg.image_topic, "image")
            k = 0
            for conn, log_ns, raw in self._messages(reader, conns):
                if k >= index.frames:
                    break
                yield self._frame(k, log_ns, raw, conn)
                k += 1
        finally:
            reader.close()

    def label_messages(self, index: BagIndex) -> Iterator[tuple[int, bytes]]:
        """Yield (stamp, serialised message) of the ground truth that matches replayed frames."""
        reader = self._open()
        try:
            conns = self._connections(reader, self.cfg.label_topic, "label")
            for conn, _, raw in self._messages(reader, conns):
                stamp = stamp_ns(self._deserialize(raw, conn).header)
                if stamp in index.labels:
                    yield stamp, bytes(raw)
        finally:
            reader.close()

    def rgb(self, frame: Frame) -> np.ndarray:
        """Return the frame as H x W x 3 uint8 RGB."""
        m = frame.msg
        try:
            return decode_image(m.data, m.encoding, m.width, m.height, m.step,
                                bool(m.is_bigendian))
        except EncodingError as err:
            raise ReplayError(f"bag {self.path}: frame stamped {frame.stamp_ns} ns on "
                              f"{self.cfg.image_topic}: {err}") from err


def _msg_definition_paths(ros_type: str) -> list[Path]:
    pkg, kind, name = ros_type.split("/")
    paths = []
    try:
        from ament_index_python.packages import get_package_share_directory
        paths.append(Path(get_package_share_directory(pkg)) / kind / f"{name}.msg")
    except (ImportError, LookupError, ValueError):
        pass
    if pkg == "ssp_msgs":
        # A source checkout keeps the .msg files directly in msg/ (docs/ARCHITECTURE.md).
        paths.append(Path(__file__).resolve().parents[3] / "msg" / f"{name}.msg")
    return paths


def ensure_type(typestore: Any, ros_type: str) -> None:
    """Register ``ros_type`` from its .msg file when rosbags does not know it (e.g. ssp_msgs)."""
    if ros_type in typestore.types:
        return
    for path in _msg_definition_paths(ros_type):
        if path.is_file():
            typestore.register(get_types_from_msg(path.read_text(), ros_type))
            return
    raise ReplayError(f"no message definition for {ros_type}: looked in "
                      f"{', '.join(str(p) for p in _msg_definition_paths(ros_type)) or 'nowhere'}")


_RELIABILITY = {ReliabilityPolicy.RELIABLE: QosReliability.RELIABLE,
                ReliabilityPolicy.BEST_EFFORT: QosReliability.BEST_EFFORT}
_DURABILITY = {DurabilityPolicy.TRANSIENT_LOCAL: QosDurability.TRANSIENT_LOCAL,
               DurabilityPolicy.VOLATILE: QosDurability.VOLATILE}


def _bag_qos(qos: QoSProfile) -> Qos:
    # Recorded so that `ros2 bag play` re-offers e.g. the latched class_info as latched.
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, max(1, qos.depth),
               _RELIABILITY.get(qos.reliability, QosReliability.RELIABLE),
               _DURABILITY.get(qos.durability, QosDurability.VOLATILE),
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


OPEN_TIMEOUT_S = 10.0  # creating a bag takes milliseconds


class BagRecorder:
    """Write serialised messages to a rosbag2 from any thread.

    rosbags' sqlite3 storage may only be used by the thread that opened it, and callbacks run
    in the executor thread, so one writer thread owns the Writer and drains a queue. A write
    error (a full disk) is raised by the next call and by :meth:`close` as WriteError naming
    ``shown_as`` (the path the user knows; the bag is written into a staging folder).
    """

    def __init__(self, path: Path, storage: str, shown_as: Path | None = None) -> None:
        self.path = path
        self.shown_as = shown_as or path
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self._topics: set[str] = set()
        # Bounded: a writer that falls behind slows the producers instead of filling memory.
        self._queue: queue.Queue = queue.Queue(maxsize=256)
        self._error: BaseException | None = None
        self._opened = threading.Event()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._thread = threading.Thread(target=self._run, args=(plugin,), name="bag_writer",
                                        daemon=True)
        try:
            self._thread.start()
            self._opened.wait()
        except BaseException:
            # Interrupted (Ctrl-C) while the writer creates the bag: the caller never gets this
            # object to close, so stop the writer here. Otherwise it would go on creating files
            # while the caller's cleanup removes the folder they are written to.
            self._stop()
            raise
        self._check()

    def _run(self, plugin: StoragePlugin) -> None:
        try:
            writer = Writer(self.path, version=9, storage_plugin=plugin)
            writer.open()
        except BaseException as err:  # reported to the caller by _check()
            self._error = err
            self._opened.set()
            return
        self._opened.set()
        connections: dict[str, Any] = {}
        try:
            while (item := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # keep draining so that producers never block
                try:
                    if item[0] == "add":
                        _, topic, ros_type, qos = item
                        connections[topic] = writer.add_connection(
                            topic, ros_type, typestore=self.typestore, offered_qos_profiles=qos)
                    else:
                        _, topic, log_ns, cdr = item
                        writer.write(connections[topic], log_ns, cdr)
                except BaseException as err:
                    self._error = err
        finally:
            try:
                writer.close()   # writes the buffered chunks and metadata.yaml: may fail too
            except BaseException as err:   # reported to the caller, not as a thread traceback
                self._error = self._error or err

    def _check(self) -> None:
        if self._error is not None:
            raise WriteError(f"cannot write the output bag {self.shown_as}: "
                             f"{one_line(self._error)}")

    def _put(self, item: Any) -> None:
        self._check()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise WriteError(f"the writer of {self.shown_as} stopped") from None

    def add(self, topic: str, ros_type: str, qos: QoSProfile | None = None) -> None:
        """Declare a topic once (its type is registered from .msg files when needed)."""
        if topic in self._topics:
            return
        ensure_type(self.typestore, ros_type)
        self._topics.add(topic)
        self._put(("add", topic, ros_type, [_bag_qos(qos)] if qos is not None else []))

    def write(self, topic: str, log_ns: int, cdr: bytes) -> None:
        """Queue one serialised message."""
        self._put(("write", topic, log_ns, cdr))

    def deserialize(self, cdr: bytes, ros_type: str) -> Any:
        """Return the rosbags message of ``cdr``."""
        return self.typestore.deserialize_cdr(cdr, ros_type)

    def close(self) -> None:
        """Write what is queued and finish the bag (metadata.yaml is written here)."""
        self._stop()
        self._check()

    def _stop(self) -> None:
        # Signals are ignored while a tool cleans up (ssp_perception.cli). The bound covers a
        # signal that came inside Thread.start() before the thread existed: it never opens.
        self._opened.wait(OPEN_TIMEOUT_S)
        if self._opened.is_set() and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
