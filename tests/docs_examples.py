"""The documentation's examples, as tests read them: code blocks of README.md and docs/*.md, marked by an
HTML comment on the line before the block's opening fence (invisible on the site and on GitHub).

    <!-- example -->            a bash block to run, in page order, against ./serve on localhost:8080
    <!-- example: output -->    what the last run block printed: compared with `...` matching anything on its
                                line, whitespace optional (lines may be broken for reading), and
                                numbers within a tolerance (the same fp32 model on another CPU may differ in
                                the last digits)
    <!-- example: syntax -->    a bash (or python) block that needs the Hub, Docker, AWS or a set-up step: its
                                syntax is checked, it is not run

Every bash block must carry one of these, so that a new example cannot slip past the test.
"""
from __future__ import annotations

import math
import queue
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_MARKER = re.compile(r"^\s*<!-- example(?::\s*(?P<kind>[\w-]+))?\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")  # indented: a block inside a list item
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"\.\.\.|{_NUMBER}|[A-Za-z_]\w*|\S")
KINDS = ("run", "output", "syntax")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    kind: Optional[str]  # run, output, syntax; None when unmarked
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, each with the marker on the line before it (if any)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker = _MARKER.match(lines[i - 1]) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```"))
        kind = (marker.group("kind") or "run") if marker else None
        indent = len(fence.group("indent"))
        code = "".join(line[indent:] + "\n" for line in lines[i + 1:end])
        found.append(Block(page, i + 1, fence.group("lang"), kind, code))
        i = end + 1
    return found


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, line) pairs; whitespace only separates tokens."""
    return [(t.group(0), text.count("\n", 0, t.start())) for t in _TOKEN.finditer(text)]


def _same(want: str, got: str, rel_tol: float, abs_tol: float) -> bool:
    if re.fullmatch(_NUMBER, want) and re.fullmatch(_NUMBER, got):
        return math.isclose(float(want), float(got), rel_tol=rel_tol, abs_tol=abs_tol)
    return want == got


def mismatch(expected: str, actual: str, rel_tol: float = 1e-3, abs_tol: float = 2e-5) -> Optional[str]:
    """None when `actual` is what `expected` shows, else why not. In `expected`, `...` stands for anything on
    its line and whitespace is optional; numbers must be close.

    A glob match on tokens: each stretch between two `...` is found at its leftmost place (which is what
    the rest of the text needs most room for), so it takes linear time where a regex backtracks."""
    shown = [token for token, _ in _tokens(expected)]
    printed = _tokens(actual)
    stretches = [[]]
    for token in shown:
        if token == "...":
            stretches.append([])
        else:
            stretches[-1].append(token)

    def differs(stretch: list[str], at: int) -> Optional[str]:
        if at + len(stretch) > len(printed):
            return "the text differs"
        for want, (got, _) in zip(stretch, printed[at:]):
            if not _same(want, got, rel_tol, abs_tol):
                numeric = re.fullmatch(_NUMBER, want) and re.fullmatch(_NUMBER, got)
                return f"{got} where the docs show {want}" if numeric else "the text differs"
        return None

    first, *middle = stretches
    problem = differs(first, 0)
    if problem or not middle:
        return problem or (None if len(first) == len(printed) else "the text differs")
    *middle, last = middle
    at = len(first)
    for stretch in middle:
        line = printed[at - 1][1] if at else 0
        while at < len(printed) and differs(stretch, at) and printed[at][1] == line:
            at += 1
        if at >= len(printed) or differs(stretch, at):
            return "the text differs"
        at += len(stretch)
    end = len(printed) - len(last)
    line = printed[at - 1][1] if at else 0
    if end < at or any(printed[k][1] != line for k in range(at, end)):
        return "the text differs"
    return differs(last, end)


class Shell:
    """One bash for one page: the page's run blocks share its variables, as in a reader's terminal."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int):
        self.port = port
        self._sentinel = f"__example_done_{uuid.uuid4().hex}__"
        self._process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        # Every failing command is reported, not only a block's last one.
        self.run("set -o pipefail; trap 'echo \"EXAMPLE FAILED (status $?): $BASH_COMMAND\"' ERR", timeout=10)

    def run(self, code: str, timeout: float = 120) -> str:
        """The block's output (stdout and stderr), with localhost:8080 pointing at the test's server."""
        code = code.replace("localhost:8080", f"localhost:{self.port}").replace("127.0.0.1:8080",
                                                                               f"127.0.0.1:{self.port}")
        self._process.stdin.write(f"{code}\nprintf '\\n{self._sentinel}\\n'\n")
        self._process.stdin.flush()
        output, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no end within {timeout} s; so far:\n{''.join(output)}") from None
            if line is None:
                raise AssertionError(f"bash exited; output:\n{''.join(output)}")
            if line.rstrip("\n") == self._sentinel:
                return "".join(output)[:-1]  # the newline printed before the sentinel
            output.append(line)

    def _read(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=10)


def syntax_error(block: Block) -> Optional[str]:
    if block.lang == "python":
        try:
            compile(block.code, block.where, "exec")
        except SyntaxError as exc:
            return str(exc)
        return None
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    return result.stderr or None
