"""Progress bars: redrawn on a terminal, a few plain lines in a log file or a pipe."""

import io
import os
import subprocess

import pytest
from ssp_perception.progress import LOG_INTERVAL_S, progress_bar
from ssp_perception.testing import console_code


def _lines(text: str) -> list[str]:
    assert "\r" not in text
    assert text.endswith("\n")
    return text.splitlines()


def test_a_terminal_gets_tqdms_redrawn_bar():
    main, side = os.openpty()
    with os.fdopen(side, "w") as tty:
        bar = progress_bar(total=3, desc="work", file=tty, mininterval=0)
        for _ in range(3):
            bar.update(1)
        bar.close()
    drawn = os.read(main, 65536).decode()
    os.close(main)
    assert drawn.count("\r") >= 3 and "work: 100%" in drawn


def test_a_log_gets_a_line_at_the_start_and_one_at_the_end(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log = io.StringIO()
    bar = progress_bar(total=1000, desc="epoch 1/2", file=log, mininterval=0.1)
    assert bar.mininterval == LOG_INTERVAL_S and bar.miniters == 1 and not bar.dynamic_miniters
    for k in range(1000):
        bar.update(1)
        if k == 500:
            bar.write("a message in between", file=log)
    bar.close()
    lines = _lines(log.getvalue())
    assert len(lines) == 3, lines
    assert lines[0].startswith("epoch 1/2:   0%")
    assert lines[1] == "a message in between"
    assert lines[2].startswith("epoch 1/2: 100%") and "1000/1000" in lines[2]


def test_a_bar_that_clears_itself_leaves_only_its_first_line(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log = io.StringIO()
    for _ in progress_bar(range(50), desc="validate", file=log, leave=False):
        pass
    assert _lines(log.getvalue()) == [log.getvalue().strip()]
    assert log.getvalue().startswith("validate:   0%")


@pytest.mark.parametrize("value, lines", [("0", 6), ("-1", 2), ("soon", 2)])
def test_tqdm_mininterval_in_the_environment_sets_the_interval(monkeypatch, value, lines):
    monkeypatch.setenv("TQDM_MININTERVAL", value)
    log = io.StringIO()
    bar = progress_bar(total=5, desc="x", file=log, miniters=1)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert len(_lines(log.getvalue())) == lines   # 0/5 .. 5/5, or the first and last


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(5), file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_a_tool_logged_to_a_file_writes_plain_lines(tmp_path):
    log = tmp_path / "synth.log"
    with log.open("w") as stderr:
        subprocess.run(["python", "-c", console_code("ssp_data"), "synth", "--out",
                        str(tmp_path / "ds"), "--sequences", "2", "--frames", "3",
                        "--size", "32x48"], stderr=stderr, stdout=subprocess.DEVNULL,
                       check=True, timeout=280)
    bars = [line for line in _lines(log.read_text()) if line.startswith("synth:")]
    assert bars[0].startswith("synth:   0%") and bars[-1].startswith("synth: 100%|"), bars
    assert len(bars) <= 3, bars
