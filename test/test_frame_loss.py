"""FrameLossCounter: frames that never arrived, counted from the stamps of those that did."""

import math

import numpy as np

from ssp_perception.ros.frame_loss import FrameLossCounter


def _count(stamps):
    counter = FrameLossCounter()
    for t in stamps:
        counter.add(t)
    return counter


def test_no_loss_counts_nothing_and_finds_the_period():
    c = _count(np.arange(100) * 0.05)
    assert c.missing == 0 and math.isclose(c.period_s, 0.05)


def test_every_lost_frame_is_counted_even_before_the_period_is_known():
    sent = np.arange(200) / 10.0
    rng = np.random.default_rng(0)
    keep = np.ones(200, bool)
    keep[[1, 2]] = False                     # lost before any period estimate exists
    keep[rng.choice(np.arange(10, 200), 60, replace=False)] = False   # 30 % loss later
    keep[0] = keep[-1] = True
    c = _count(sent[keep])
    assert c.missing == 200 - keep.sum()
    assert math.isclose(c.period_s, 0.1)


def test_heavy_loss_and_jitter():
    rng = np.random.default_rng(1)
    sent = np.arange(500) / 20.0 + rng.uniform(-0.005, 0.005, 500)   # +-10 % of the period
    keep = rng.random(500) < 0.3             # 70 % lost
    keep[:6] = True                          # a few consecutive frames to find the period
    c = _count(sent[keep])
    received = np.flatnonzero(keep)
    assert c.missing == received[-1] + 1 - len(received)
    assert abs(c.period_s - 0.05) < 0.003


def test_backwards_stamps_restart_and_pauses_are_not_loss():
    stamps = list(np.arange(20) / 10.0) + list(np.arange(20) / 10.0)   # bag loop
    stamps += list(100.0 + np.arange(20) / 10.0)                      # 98 s pause
    c = _count(stamps)
    assert c.missing == 0
    assert c.add(None) == 0 and c.add(float("nan")) == 0


def test_add_returns_the_frames_found_missing():
    c = _count(np.arange(10) / 10.0)
    assert c.add(1.3) == 3 and c.missing == 3


def test_after_a_pause_a_new_rate_is_learned_anew():
    stamps = list(np.arange(40) / 20.0)                       # 20 Hz
    stamps += list(10.0 + np.arange(40) / 10.0)               # 8 s pause, then 10 Hz
    c = _count(stamps)
    assert c.missing == 0 and math.isclose(c.period_s, 0.1)


def test_a_clock_jump_before_the_period_is_known_is_a_pause_not_loss():
    # A camera that starts on boot time and then syncs its clock (GPS, NTP) after 3 frames.
    boot = 10.0 + np.arange(3) / 10.0
    synced = 1764800000.0 + np.arange(30) / 10.0
    synced = np.delete(synced, [12, 20])                      # and loses two frames later
    c = _count(np.concatenate([boot, synced]))
    assert c.missing == 2
    assert math.isclose(c.period_s, 0.1, rel_tol=1e-6)
