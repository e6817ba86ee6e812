"""Every command that README.md and docs/*.md print works here, at least as far as its --help.

The commands are collected from the markdown itself, so a new doc or a new line is covered
without touching this test: every line of a fenced ``bash``/``sh``/``shell``/``console`` block
(continuations joined, comments dropped, split at ``&&``, ``;`` and ``|``), and every inline code
span that starts with one of the project's programs. Each command is checked by what it runs:

- a console script (``ssp_replay``, ``ssp_bench``, ``ssp_data``, ``ssp_train``, ``ssp_eval``,
  ``ssp_export``) or ``python -m ssp_...``: the script found on PATH (or the module) runs with
  the command's words up to its first option plus ``--help`` and exits 0, and every option the doc
  uses appears in that help. The scripts run in this process (``runpy``), as their file on PATH,
  because a fresh interpreter importing torch costs 20-30 s each on the CI machine; that the file
  starts the right interpreter is checked separately from its ``#!`` line.
- ``ssp_node`` (a ROS node, it has no --help): its ROS arguments must parse (``rclpy.init``).
- ``ros2 run PKG EXE`` / ``ros2 launch PKG FILE name:=value``: the ros2 CLI is not installable
  here, so what it would resolve is checked instead: the executable in PKG's lib folder, the
  launch file in its share folder, and every ``name:=`` as a declared launch argument.
- ``make TARGET ...``: ``make -n`` accepts it; ``python -c CODE``: every import in CODE resolves.
- scripts named by path: they exist (and are executable when run directly).
- every repository path a command names (``scripts/env.sh``, ``ssp_training/configs/...``) exists.
Commands that cannot run here are listed in SKIP with the reason; a documented command that is
neither checked nor skipped fails the test, so the list stays explicit.
"""

import ast
import contextlib
from dataclasses import dataclass
import functools
import importlib
import io
import os
from pathlib import Path
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings

from ament_index_python.packages import get_package_prefix, get_package_share_directory
import pytest
import rclpy
from rclpy.signals import SignalHandlerOptions

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# Console scripts of ssp_perception and ssp_training: the names README and docs tell users to type.
PACKAGES = {"ssp_perception": ("ssp_node", "ssp_replay", "ssp_bench"),
            "ssp_training": ("ssp_data", "ssp_train", "ssp_eval", "ssp_export")}
CONSOLE_SCRIPTS = {name: pkg for pkg, names in PACKAGES.items() for name in names}
NODES = {"ssp_node"}   # ROS nodes: ROS arguments only, no --help (it would start the node)
# Shell plumbing around the commands: nothing to run, the paths they name are still checked.
SHELL_WORDS = {"cd", "mkdir", "cat", "export", "source", ".", "for", "done", "while", "if", "fi"}
# Programs the docs print that cannot run here, and why. Their repository paths are checked.
SKIP = {
    "ros2": "the ros2 CLI is not installable here (ros2 run / ros2 launch are resolved instead)",
    "rosdep": "resolves package.xml dependencies on a native ROS 2 install; not installable here",
    "colcon": "builds the user's own workspace on a native ROS 2 install; make setup runs colcon "
              "here with the same --base-paths",
    "pip": "installs packages from a registry (make setup installs the same pins)",
    "git": "clones this repository (a placeholder URL)",
    "torchrun": "distributed training over several GPUs or hosts; the same ssp_train fit runs as "
                "documented commands above and in the training tests",
}
SKIP_MODULES = {
    "venv": "creates a virtual environment (make setup does it)",
    "pytest": "runs test files, which make test runs; the files it names are checked to exist",
}
OPTION = re.compile(r"^-{1,2}[A-Za-z][\w-]*$")


@dataclass(frozen=True)
class DocCommand:
    """One simple command as a doc prints it, and where."""

    where: str
    text: str
    words: tuple[str, ...]


def _split(text: str) -> list[list[str]]:
    """Split a shell line into simple commands (words), dropping comments and operators."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    commands.append(words)
    for words in commands:
        # `for S in ...; do CMD` and `then CMD`: the command after the keyword is the one to check.
        while words and words[0] in {"do", "then", "else"}:
            words.pop(0)
    return [w for w in commands if w]


def _logical_lines(lines: list[str], first_no: int) -> list[tuple[int, str]]:
    """Join backslash continuations; return (line number, text) pairs."""
    out, buf, start = [], "", first_no
    for no, line in enumerate(lines, first_no):
        if not buf:
            start = no
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _program(words) -> str:
    """Name of what a command runs: the first word that is not a VAR=value assignment."""
    return next((w for w in words if not re.match(r"^[A-Za-z_]\w*=", w)), "")


def collect() -> tuple[list[DocCommand], list[DocCommand]]:
    """Commands from the shell blocks, and the inline spans that start with a project program."""
    blocks, inline = [], []
    for doc in DOCS:
        rel = doc.relative_to(ROOT)
        lines = doc.read_text().splitlines()
        fence, lang, body, body_start = None, "", [], 0
        for no, line in enumerate(lines, 1):
            mark = re.match(r"^\s*(```+|~~~+)\s*(\w*)", line)
            if fence is None and mark:
                fence, lang, body, body_start = mark.group(1), mark.group(2).lower(), [], no + 1
            elif fence is not None and line.strip().startswith(fence):
                if lang in SHELL_LANGS:
                    for start, text in _logical_lines(body, body_start):
                        for words in _split(text):
                            blocks.append(DocCommand(f"{rel}:{start}", text.strip(),
                                                     tuple(words)))
                fence = None
            elif fence is not None:
                body.append(line)
            else:
                for span in re.findall(r"`([^`]+)`", line):
                    for words in _split(span) if _inline_program(span) else ():
                        inline.append(DocCommand(f"{rel}:{no}", span, tuple(words)))
    return blocks, inline


def _inline_program(span: str) -> bool:
    """Whether an inline code span is a command of the project (not just a name)."""
    first = span.split()[:3]
    if not first:
        return False
    if first[0] in CONSOLE_SCRIPTS and first[0] not in NODES:
        return len(first) > 1
    if first[0] in {"python", "python3"} and len(first) > 2:
        return first[1] == "-c" or (first[1] == "-m" and first[2].startswith("ssp_"))
    return first[0] == "make" and len(first) > 1


BLOCK_COMMANDS, INLINE_COMMANDS = collect()
ALL_COMMANDS: list[DocCommand] = []
# One check per distinct command, named by the first place that prints it.
for _cmd in BLOCK_COMMANDS + INLINE_COMMANDS:
    if all(_cmd.words != c.words for c in ALL_COMMANDS):
        ALL_COMMANDS.append(_cmd)


def _kind(cmd: DocCommand) -> str:
    """How a documented command is checked (see the module docstring), or 'skip' / 'unknown'."""
    words = _words(cmd)
    if not words:
        return "shell"   # only VAR=value assignments
    prog = words[0]
    if prog in NODES:
        return "node"
    if prog in CONSOLE_SCRIPTS:
        return "help"
    if prog in {"python", "python3"} and len(words) > 2 and words[1] == "-m":
        if words[2].startswith("ssp_"):
            return "help"
        return "skip" if words[2] in SKIP_MODULES else "unknown"
    if prog in {"python", "python3"} and len(words) > 2 and words[1] == "-c":
        return "imports"
    if prog == "ros2" and len(words) > 3 and words[1] in {"run", "launch"}:
        return "ros2_" + words[1]
    if prog == "make":
        return "make"
    if prog == "bash" or "/" in prog:
        return "script"
    if prog in SHELL_WORDS:
        return "shell"
    return "skip" if prog in SKIP else "unknown"


def _words(cmd: DocCommand) -> list[str]:
    """Return the command's words from its program on (VAR=value assignments dropped)."""
    prog = _program(cmd.words)
    return list(cmd.words[cmd.words.index(prog):]) if prog else []


def _options(words) -> list[str]:
    """List the -x / --long options a command uses (also inside [optional] brackets)."""
    opts = (w.strip("[]").split("=", 1)[0] for w in words)
    return [o for o in opts if OPTION.match(o)]


def _help_argv(words: list[str]) -> tuple[str, ...]:
    """Return the command's words up to its first option, plus --help."""
    head = []
    for w in words:
        if w.startswith("-") and not (w == "-m" and head in (["python"], ["python3"])):
            break
        if w.startswith("[") or w == "...":   # optional or elided arguments
            break
        head.append(w)
    return (*head, "--help")


@functools.lru_cache(maxsize=None)
def run_help(argv: tuple[str, ...]) -> tuple[int, str]:
    """Run a console script found on PATH (or `python -m module`) in this process."""
    out = io.StringIO()
    saved = sys.argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                if argv[0] in {"python", "python3"}:
                    sys.argv = [argv[2], *argv[3:]]
                    with warnings.catch_warnings():
                        # The module may be imported already (by another test): runpy says so.
                        warnings.simplefilter("ignore", RuntimeWarning)
                        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
                else:
                    script = shutil.which(argv[0])
                    if script is None:
                        return 127, f"{argv[0]}: not on PATH (source scripts/env.sh)"
                    sys.argv = [script, *argv[1:]]
                    runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = saved
    return code, out.getvalue()


@functools.lru_cache(maxsize=None)
def tracked_top_dirs() -> frozenset:
    """Top-level folders of the repository's tracked files (paths under them must exist)."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: cannot tell repository paths from generated ones")
    return frozenset(f.split("/", 1)[0] for f in files if "/" in f)


def _repo_paths(words) -> list[str]:
    """Words (or the values of key:=value / --opt=value words) that name repository paths."""
    out = []
    for word in words:
        value = re.split(r":=|=", word)[-1].strip("[]")
        if "/" in value and value.split("/", 1)[0] in tracked_top_dirs():
            out.append(value)
    return out


def _ids(commands):
    return [f"{c.where} {' '.join(c.words)[:60]}" for c in commands]


def test_docs_print_commands():
    """The collection finds the docs' commands (a broken parser must not pass by finding none)."""
    kinds = {_kind(c) for c in ALL_COMMANDS}
    assert len(BLOCK_COMMANDS) >= 20 and {"help", "make", "imports"} <= kinds


def test_every_documented_command_is_checked_or_skipped_with_a_reason():
    unknown = [f"{c.where}: {c.text}" for c in ALL_COMMANDS if _kind(c) == "unknown"]
    assert not unknown, (
        "no check for these documented commands: teach test_docs_commands.py how to run them, "
        "or add their program to SKIP with the reason it cannot run here:\n" + "\n".join(unknown))


def test_documented_repository_paths_exist():
    missing = [f"{c.where}: {p} (in `{c.text}`)" for c in ALL_COMMANDS
               for p in _repo_paths(c.words) if not (ROOT / p).exists()]
    assert not missing, "documented commands name missing files:\n" + "\n".join(missing)


HELP = [c for c in ALL_COMMANDS if _kind(c) == "help"]


@pytest.mark.parametrize("cmd", HELP, ids=_ids(HELP))
def test_documented_tool_runs_its_help_and_knows_every_option(cmd):
    words = _words(cmd)
    argv = _help_argv(words)
    code, text = run_help(argv)
    assert code == 0, f"{cmd.where}: `{' '.join(argv)}` exited {code}:\n{text[-2000:]}"
    args = words[3:] if words[0] in {"python", "python3"} else words[1:]
    missing = [o for o in _options(args) if not re.search(rf"(^|[\s,\[(]){re.escape(o)}\b", text)]
    assert not missing, f"{cmd.where}: `{cmd.text}` uses {missing}, unknown to `{' '.join(argv)}`"


NODE = [c for c in ALL_COMMANDS if _kind(c) in {"node", "ros2_run"}]


@pytest.mark.parametrize("cmd", NODE, ids=_ids(NODE))
def test_documented_node_command_resolves_and_its_ros_arguments_parse(cmd):
    words = _words(cmd)
    if words[0] == "ros2":   # ros2 run PKG EXE ARGS: EXE from PKG's lib folder, as ros2 runs it
        pkg, exe, args = words[2], words[3], words[4:]
        path = Path(get_package_prefix(pkg)) / "lib" / pkg / exe
        assert os.access(path, os.X_OK), f"{cmd.where}: ros2 run would not find {path}"
    else:
        exe, args = words[0], words[1:]
        assert shutil.which(exe), f"{cmd.where}: {exe} is not on PATH (source scripts/env.sh)"
    context = rclpy.Context()
    # Raises on malformed --ros-args; no signal handlers: this is a test process, not a node.
    rclpy.init(args=[exe, *args], context=context, signal_handler_options=SignalHandlerOptions.NO)
    context.try_shutdown()


LAUNCH = [c for c in ALL_COMMANDS if _kind(c) == "ros2_launch"]


@pytest.mark.parametrize("cmd", LAUNCH, ids=_ids(LAUNCH))
def test_documented_launch_command_names_an_installed_file_and_declared_arguments(cmd):
    words = _words(cmd)
    pkg, name, args = words[2], words[3], words[4:]
    found = list(Path(get_package_share_directory(pkg)).rglob(name))
    assert found, f"{cmd.where}: ros2 launch would not find {name} in {pkg}'s share folder"
    declared = set(re.findall(r"DeclareLaunchArgument\(\s*[\"'](\w+)[\"']", found[0].read_text()))
    for arg in args:
        key = arg.split(":=", 1)[0]
        assert ":=" in arg and key in declared, f"{cmd.where}: `{arg}` is not a launch argument"


MAKE = [c for c in ALL_COMMANDS if _kind(c) == "make"]


@pytest.mark.parametrize("cmd", MAKE, ids=_ids(MAKE))
def test_documented_make_command_is_a_target(cmd):
    # -n: make resolves the targets and variables and prints the recipes without running them.
    result = subprocess.run(["make", "-n", *_words(cmd)[1:]], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"{cmd.where}: `{cmd.text}`: {result.stderr.strip()}"


IMPORTS = [c for c in ALL_COMMANDS if _kind(c) == "imports"]


@pytest.mark.parametrize("cmd", IMPORTS, ids=_ids(IMPORTS))
def test_documented_python_snippet_imports_resolve(cmd):
    # These snippets run benchmarks (minutes of CPU): their imports are what a doc can get wrong.
    words = _words(cmd)
    tree = ast.parse(words[words.index("-c") + 1])
    names = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             for a in n.names]
    names += [(a.name, None) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert names, f"{cmd.where}: `{cmd.text}` imports nothing to check"
    for module, attr in names:
        mod = importlib.import_module(module)
        assert attr is None or hasattr(mod, attr), f"{cmd.where}: {module} has no {attr}"


SCRIPTS = [c for c in ALL_COMMANDS if _kind(c) == "script"]


@pytest.mark.parametrize("cmd", SCRIPTS, ids=_ids(SCRIPTS))
def test_documented_script_exists(cmd):
    words = _words(cmd)
    direct = words[0] != "bash"
    script = Path(words[0] if direct else words[1])
    if not script.is_absolute() and script.parts[0] not in tracked_top_dirs():
        pytest.skip(f"{script} is not a repository path")
    path = ROOT / script
    assert path.is_file(), f"{cmd.where}: {script} is missing"
    assert not direct or os.access(path, os.X_OK), f"{cmd.where}: {script} is not executable"


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_console_script_is_on_path_and_runs_this_environments_python(name):
    script = shutil.which(name)
    assert script, f"{name} is not on PATH: source scripts/env.sh"
    pkg = CONSOLE_SCRIPTS[name]
    path = Path(script)
    assert path.parent.name == pkg and path.parent.parent.name == "lib", path
    assert path.is_relative_to(ROOT), f"{name} comes from {path}, not from this checkout"
    interpreter = Path(path.read_text().splitlines()[0].removeprefix("#!").split()[0])
    assert interpreter.parent.parent.resolve() == Path(sys.prefix).resolve(), (
        f"{name} starts {interpreter}, not this environment's {sys.prefix}")


def test_one_console_script_runs_as_its_own_process():
    # The in-process runs above skip the interpreter start; this one (the lightest) does not.
    result = subprocess.run(["ssp_replay", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "usage: ssp_replay" in result.stdout, result.stderr


def _clean_shell(script: str, path: str = "/usr/local/bin:/usr/bin:/bin"):
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": path,
           "ROS_DISTRO": os.environ.get("ROS_DISTRO", "kilted")}
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_env_sh_puts_every_console_script_on_path_from_a_clean_shell():
    # A stale entry of another distribution's environment must be dropped, not kept ahead.
    stale = f"{ROOT}/install-other/ssp_perception/lib/ssp_perception:{ROOT}/.venv-other/bin"
    result = _clean_shell(
        "source scripts/env.sh && source scripts/env.sh && echo PATH=$PATH && "
        f"for t in {' '.join(sorted(CONSOLE_SCRIPTS))}; do command -v $t; done",
        path=f"{stale}:/usr/local/bin:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    found = [line for line in lines if not line.startswith("PATH=")]
    assert [Path(p).name for p in found] == sorted(CONSOLE_SCRIPTS)
    assert all(Path(p).is_relative_to(ROOT) for p in found), found
    entries = next(line for line in lines if line.startswith("PATH=")).split("=", 1)[1].split(":")
    assert not [e for e in entries if "-other" in e], "a stale environment stayed on PATH"
    assert len(entries) == len(set(entries)), "sourcing twice duplicated PATH entries"


def test_env_sh_refuses_an_unknown_distribution_in_one_line():
    result = _clean_shell("ROS_DISTRO=humble; source scripts/env.sh; echo rc=$?")
    assert result.stdout.strip() == "rc=2"
    assert result.stderr.strip().splitlines() == [
        "ROS_DISTRO='humble' is not supported here: use kilted (the default) or jazzy"]
