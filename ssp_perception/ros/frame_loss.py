"""Count camera frames that never arrived, from the stamps of those that did (ROS-free).

A camera publishes at a steady period, so the stamps of the frames a subscriber receives are
(nearly) multiples of that period apart; a gap of ``k`` periods means ``k - 1`` frames were
lost on the way (DDS fragments dropped, a best-effort reader, a full socket buffer). The node
counts these separately from the frames it drops itself by the latest-frame policy: the first
is a transport problem with a transport fix, the second is the node being slower than the
camera.

The period is the median of the single-period intervals found near a low percentile of the
recent stamp intervals, not the median of all: with heavy loss most intervals are multiples
of the period. The estimate needs at least a few pairs of
consecutive frames; while it is unknown the intervals are kept and counted once it is known.
"""

from __future__ import annotations

from collections import deque
import math

# Intervals of the last this many frames estimate the period.
_WINDOW = 64
# The period is this percentile of the window's intervals (robust to up to ~80 % loss).
_PERCENTILE = 0.1
# Intervals needed before the period is trusted.
_MIN_INTERVALS = 8
# A gap longer than this many periods is a pause or a restart of the camera, not loss.
_PAUSE_PERIODS = 50.0


class FrameLossCounter:
    """Estimate the publisher's frame period from stamps and count frames that never arrived.

    >>> c = FrameLossCounter()
    >>> for k in (0, 1, 2, 3, 6, 7, 8, 9, 10, 11):   # frames 4 and 5 lost, 10 Hz
    ...     _ = c.add(k / 10)
    >>> c.missing, round(c.period_s, 3)
    (2, 0.1)
    """

    def __init__(self) -> None:
        self.missing = 0
        """Frames that never arrived since the start (gaps of whole periods)."""
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=_WINDOW)
        self._uncounted: list[float] = []     # intervals seen before the period was known

    @property
    def period_s(self) -> float:
        """Return the estimated publisher period in seconds (NaN while unknown)."""
        if len(self._intervals) < _MIN_INTERVALS:
            return math.nan
        ordered = sorted(self._intervals)
        period = ordered[int(_PERCENTILE * (len(ordered) - 1))]
        # Refine on the single-period intervals around it: the percentile sits in their low
        # tail when stamps jitter.
        for _ in range(2):
            single = [i for i in ordered if 0.5 * period < i < 1.5 * period]
            period = single[len(single) // 2] if single else period
        # Then fit it to the intervals of up to three periods (where rounding is unambiguous):
        # their sum over the periods they cover divides the stamps' jitter by that count.
        short = [(i, round(i / period)) for i in ordered if i < 3.5 * period]
        return sum(i for i, _ in short) / max(1, sum(max(1, m) for _, m in short))

    def _period_without_early_pauses(self) -> float:
        """Return the period once known, after dropping pauses seen while it was unknown.

        A pause before the period is known (a camera that starts on boot time and then syncs
        its clock to GPS: one interval of decades) cannot be recognised when it arrives; once
        the period is known it is dropped from the window and from the uncounted intervals,
        so it never counts as lost frames.
        """
        period = self.period_s
        if not math.isfinite(period) or max(self._uncounted) <= _PAUSE_PERIODS * period:
            return period
        limit = _PAUSE_PERIODS * period
        self._intervals = deque((i for i in self._intervals if i <= limit), maxlen=_WINDOW)
        self._uncounted = [i for i in self._uncounted if i <= limit]
        return self.period_s

    def add(self, stamp_s: float | None) -> int:
        """Take the stamp of a received frame; return how many frames were newly found missing.

        Stamps that go backwards or repeat (a bag loop, a clock jump) restart the sequence;
        ``None`` (no stamp) is ignored.
        """
        if stamp_s is None or not math.isfinite(stamp_s):
            return 0
        last, self._last = self._last, stamp_s
        if last is None or stamp_s <= last:
            return 0
        interval = stamp_s - last
        period = self.period_s
        if math.isfinite(period) and interval > _PAUSE_PERIODS * period:
            # A pause: neither loss nor a sample of the period. The camera may come back at
            # another rate, so the period is learned anew.
            self._intervals.clear()
            self._uncounted.clear()
            return 0
        self._intervals.append(interval)
        self._uncounted.append(interval)
        period = self._period_without_early_pauses()
        if not math.isfinite(period):
            return 0
        found = sum(_lost(i, period) for i in self._uncounted)
        self._uncounted.clear()
        self.missing += found
        return found


def _lost(interval: float, period: float) -> int:
    """Return the frames missing in one interval: whole periods beyond the first."""
    return max(0, round(interval / period) - 1)
