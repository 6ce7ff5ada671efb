#!/usr/bin/env python3
"""Runs a Batch Transform job against a running container, locally: what SageMaker does, without AWS.

Needs only `requests`. Point it at a container (`./serve`, or `local_test/serve_local.sh`) and give it input
files or directories (every file directly inside, sorted; names starting with "." are skipped):

  local_test/batch_runner.py --url http://127.0.0.1:8080 records.jsonl more/ --output-dir out/

It does what a job with SplitType=Line, BatchStrategy=MultiRecord and AssembleWith=Line does:
- waits for GET /ping to answer 200, then reads GET /execution-parameters: its MaxPayloadInMB and
  MaxConcurrentTransforms are used unless given here (SageMaker's precedence: the job's settings, then the
  container's, then the defaults of 6 MB and 1);
- splits each file on newlines (every line is a record, empty ones too; a final newline ends the last record)
  and packs as many consecutive lines as fit in MaxPayloadInMB (1 MB = 1048576 bytes, newlines included) into
  one POST /invocations; a line larger than that is sent alone;
- keeps up to MaxConcurrentTransforms requests in flight, retries 5xx answers, 429, connection errors and
  timeouts with exponential backoff, and never retries any other 4xx;
- writes OUTPUT_DIR/<input file name>.out: one answer line per input line, in input order, atomically.

Whatever happens to a mini-batch, its lines still get one answer line each, so the output always lines up
with the input: a line the server refuses as too large (413, sent alone) answers
`{"error": {"code": "body_too_large", ...}}`; a mini-batch that still fails after its retries, or that the
server refuses with a 4xx, answers `transform_failed` on each of its lines; an answer with the wrong number
of lines is never written, its lines answer `misaligned_answer`. Error lines written here echo a JSON Lines
item record's fields (its `id`, say) as the server's own error lines do; with `--accept text/csv` they are
`error,<code>,<message>` as the server writes them.

Progress goes to stderr every ~2 s, and a summary at the end. Exit status: 0 when every record was
answered (error lines for bad records included), 1 when a mini-batch failed (the outputs are still written,
with error lines) or the server never became ready, 2 for usage errors.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO, Union

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "container"))
from clip_sagemaker.settings import MB, SAGEMAKER_PAYLOAD_LIMIT_MB  # noqa: E402

DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker's defaults when neither the job nor the container says
DEFAULT_MAX_CONCURRENT = 1
JSONLINES = "application/jsonlines"
CSV = "text/csv"
CONTENT_TYPES = {".jsonl": JSONLINES, ".jsonlines": JSONLINES, ".ndjson": JSONLINES, ".csv": CSV}
ACCEPT_TYPES = (JSONLINES, CSV)
PROGRESS_INTERVAL_S = 2.0
MAX_BACKOFF_S = 30.0
PING_REQUEST_TIMEOUT_S = 2.0  # what SageMaker allows a ping
_SAFE = re.compile(r"[^A-Za-z0-9._-]")  # X-Request-Id: the server takes only these characters (and ":")


class UsageError(ValueError):
    """The command line or the inputs cannot be used (exit status 2)."""


class RunnerError(RuntimeError):
    """The job could not start: the server never became ready (exit status 1)."""


@dataclass
class Summary:
    files: int = 0
    records: int = 0            # input records (lines) in all files
    answered: int = 0           # answer lines written: equals `records` when the run was not interrupted
    error_lines: int = 0        # answer lines that are errors, the server's or this runner's
    batches: int = 0            # mini-batches (one POST /invocations each, before retries)
    failed_batches: int = 0     # mini-batches whose lines got transform_failed / misaligned_answer
    requests: int = 0           # POST /invocations sent, retries included
    retries: int = 0
    elapsed_s: float = 0.0
    max_payload_mb: float = DEFAULT_MAX_PAYLOAD_MB
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    outputs: list[Path] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 0 if self.failed_batches == 0 and self.answered == self.records else 1

    @property
    def records_per_s(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class InputFile:
    path: Path
    content_type: str
    output: Path
    records: int = 0


@dataclass
class MiniBatch:
    file: InputFile
    index: int                  # within its file
    lines: list[bytes]          # without their newlines

    def body(self) -> bytes:
        # Every line ends with a newline, so that a trailing empty line stays a record on the server too.
        return b"".join(line + b"\n" for line in self.lines)


@dataclass
class FileEnd:
    file: InputFile


@dataclass
class BatchResult:
    answers: list[bytes]
    error_lines: int = 0
    failed: bool = False
    requests: int = 0


# ---- inputs ------------------------------------------------------------------------------------------------

def collect_inputs(inputs: list[Union[str, Path]], output_dir: Path, content_type: Optional[str]) -> list[InputFile]:
    """Files as given, and every file directly inside a directory (sorted); each with its content type."""
    paths: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageError(f"no such file or directory: {given}")
    if not paths:
        raise UsageError("no input files found")
    files, outputs = [], {}
    for path in paths:
        kind = content_type or CONTENT_TYPES.get(path.suffix.lower())
        if kind is None:
            raise UsageError(f"cannot tell the content type of {path} from its extension (known: "
                             f"{', '.join(sorted(CONTENT_TYPES))}); pass --content-type")
        output = output_dir / f"{path.name}.out"
        if output in outputs:
            raise UsageError(f"{path} and {outputs[output]} would both be written to {output}")
        outputs[output] = path
        files.append(InputFile(path, kind, output, count_records(path)))
    return files


def count_records(path: Path) -> int:
    """Lines in a file; a final newline ends the last line rather than starting one."""
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MB):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def read_records(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            yield line[:-1] if line.endswith(b"\n") else line


def mini_batches(lines: Iterator[bytes], limit_bytes: int) -> Iterator[list[bytes]]:
    """As many consecutive lines as fit in limit_bytes (each with its newline); a larger line goes alone."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        cost = len(line) + 1
        if batch and size + cost > limit_bytes:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += cost
    if batch:
        yield batch


def work_items(files: list[InputFile], limit_bytes: int) -> Iterator[Union[MiniBatch, FileEnd]]:
    for file in files:
        for index, lines in enumerate(mini_batches(read_records(file.path), limit_bytes)):
            yield MiniBatch(file, index, lines)
        yield FileEnd(file)


# ---- the server --------------------------------------------------------------------------------------------

def wait_until_ready(session: requests.Session, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = session.get(f"{url}/ping", timeout=PING_REQUEST_TIMEOUT_S)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        if time.monotonic() >= deadline:
            raise RunnerError(f"{url}/ping did not answer 200 within {timeout:g} s (last: {last})")
        time.sleep(0.25)


def container_parameters(session: requests.Session, url: str) -> dict:
    """GET /execution-parameters, which is optional: {} when the container has none or answers nonsense."""
    try:
        response = session.get(f"{url}/execution-parameters", timeout=10)
        document = response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _positive(value, limit: Optional[float] = None) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return value if limit is None or value <= limit else None


# ---- one mini-batch ----------------------------------------------------------------------------------------

def _echo(line: bytes, content_type: str) -> dict:
    """The fields the server would echo on an item record's error line: all but text / image / normalize."""
    if content_type != JSONLINES:
        return {}
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(doc, dict) and "task" not in doc and (("text" in doc) != ("image" in doc)):
        return {k: v for k, v in doc.items() if k not in ("text", "image", "normalize")}
    return {}


def error_line(line: bytes, content_type: str, accept: str, code: str, message: str) -> bytes:
    if accept == CSV:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(["error", code, message.replace("\n", " ")])
        return buffer.getvalue().encode()
    body = {**_echo(line, content_type), "error": {"code": code, "message": message}}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def is_error_answer(answer: bytes, accept: str) -> bool:
    if accept == CSV:
        return answer.startswith(b"error,")
    if b'"error"' not in answer:  # cheap test first: most answers are embeddings
        return False
    try:
        doc = json.loads(answer)
    except ValueError:
        return False
    return isinstance(doc, dict) and "error" in doc


def split_answer(body: bytes) -> list[bytes]:
    if not body:
        return []
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _server_error(response: requests.Response) -> tuple[Optional[str], str]:
    """(code, message) from an {"error": {...}} body, else (None, the start of the body)."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            return error.get("code"), str(error.get("message", ""))
    except (ValueError, AttributeError):
        pass
    return None, response.text[:300].strip()


def _retry_after(response: requests.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", "")), MAX_BACKOFF_S)
    except ValueError:
        return 0.0


class Transformer:
    """Sends mini-batches to /invocations, one requests.Session per thread, and turns every outcome into
    exactly one answer line per input line."""

    def __init__(self, url: str, accept: str, retries: int, timeout: float, backoff: float,
                 session_factory: Callable[[], requests.Session]):
        self.url, self.accept, self.retries, self.timeout, self.backoff = url, accept, retries, timeout, backoff
        self.session_factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.session_factory()
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def failed(self, batch: MiniBatch, code: str, message: str, sent: int) -> BatchResult:
        kind = batch.file.content_type
        answers = [error_line(line, kind, self.accept, code, message) for line in batch.lines]
        return BatchResult(answers, error_lines=len(answers), failed=True, requests=sent)

    def transform(self, batch: MiniBatch) -> BatchResult:
        headers = {"Content-Type": batch.file.content_type, "Accept": self.accept,
                   "X-Request-Id": f"batch-runner:{_SAFE.sub('_', batch.file.path.name)[:80]}:{batch.index}"}
        body = batch.body()
        where = f"{batch.file.path.name}, mini-batch {batch.index} ({len(batch.lines)} records, {len(body)} bytes)"
        sent, last, wait_hint = 0, "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S), wait_hint))
            wait_hint = 0.0
            sent += 1
            try:
                response = self.session().post(f"{self.url}/invocations", data=body, headers=headers,
                                               timeout=(min(10.0, self.timeout), self.timeout))
            except requests.RequestException as exc:  # connection refused or reset, timeouts: try again
                last = f"{type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if status == 200:
                return self._answered(batch, response.content, sent, where)
            code, message = _server_error(response)
            last = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
            if status >= 500 or status == 429:
                wait_hint = _retry_after(response)
                continue
            if status == 413 and len(batch.lines) == 1:
                # A record larger than the payload limit: its own error, as the server would have written it.
                answers = [error_line(batch.lines[0], batch.file.content_type, self.accept, "body_too_large",
                                      message or "the record is larger than the server's payload limit")]
                return BatchResult(answers, error_lines=1, requests=sent)
            return self.failed(batch, "transform_failed", f"{where}: {last} (not retried)", sent)
        return self.failed(batch, "transform_failed", f"{where}: {last} (after {sent} attempts)", sent)

    def _answered(self, batch: MiniBatch, content: bytes, sent: int, where: str) -> BatchResult:
        answers = split_answer(content)
        if len(answers) != len(batch.lines):
            return self.failed(batch, "misaligned_answer",
                               f"{where}: the server answered {len(answers)} lines for {len(batch.lines)}", sent)
        errors = sum(is_error_answer(a, self.accept) for a in answers)
        return BatchResult(answers, error_lines=errors, requests=sent)


# ---- output and progress -----------------------------------------------------------------------------------

class OutputFile:
    """OUT/<name>.out, written to a temporary file beside it and renamed into place when complete."""

    def __init__(self, file: InputFile):
        self.file = file
        handle, self.temp = tempfile.mkstemp(dir=file.output.parent, prefix=f".{file.output.name}.", suffix=".tmp")
        self.handle = os.fdopen(handle, "wb")
        self.written = 0

    def write(self, answers: list[bytes]) -> None:
        for answer in answers:
            self.handle.write(answer + b"\n")
        self.written += len(answers)

    def commit(self) -> None:
        if self.written != self.file.records:  # cannot happen unless the file changed while being read
            self.discard()
            raise RunnerError(f"{self.file.path} changed while it was read ({self.file.records} lines counted, "
                              f"{self.written} answered); {self.file.output} was not written")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.file.output)

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        if os.path.exists(self.temp):
            os.unlink(self.temp)


class Progress:
    """Counts as mini-batches complete; a reporter thread prints a line every ~2 s, and a summary at the end."""

    def __init__(self, summary: Summary, stream: Optional[TextIO]):
        self.summary, self.stream = summary, stream
        self.done = 0
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, name="batch-runner-progress", daemon=True)

    def __enter__(self) -> "Progress":
        if self.stream is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def completed(self, result: BatchResult) -> None:
        with self.lock:
            self.done += len(result.answers)
            self.summary.error_lines += result.error_lines
            self.summary.failed_batches += result.failed
            self.summary.requests += result.requests
            self.summary.retries += result.requests - 1

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(f"batch_runner: {text}", file=self.stream, flush=True)

    def line(self) -> str:
        with self.lock:
            done, errors, failed = self.done, self.summary.error_lines, self.summary.failed_batches
        elapsed = time.monotonic() - self.started
        total = self.summary.records
        share = f" ({100 * done / total:.1f}%)" if total else ""
        return (f"{done}/{total} records{share}, {done / elapsed if elapsed > 0 else 0:.1f} records/s, "
                f"{errors} error lines, {failed} failed mini-batches")

    def _report(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL_S):
            self.say(self.line())


class OrderedWriter:
    """Writes mini-batch answers in input order, whatever order they complete in: a queue of the items handed
    out, in flight or done but not yet written, from which only the oldest is ever written."""

    def __init__(self, summary: Summary, window: int):
        self.summary = summary
        # A few more items than the pool runs at once keep it busy while the oldest is still being answered.
        self.window = window
        self.outputs: dict[Path, OutputFile] = {}
        self.pending: deque[tuple[Union[MiniBatch, FileEnd], Optional[Future]]] = deque()

    def add(self, item: Union[MiniBatch, FileEnd], future: Optional[Future]) -> None:
        self.pending.append((item, future))

    def write_ready(self) -> None:
        """Writes what can be written without waiting, and waits only to bring the queue back to the window."""
        pending = self.pending
        while len(pending) > self.window or (pending and (pending[0][1] is None or pending[0][1].done())):
            self._write_oldest()

    def write_all(self) -> None:
        while self.pending:
            self._write_oldest()

    def cancel(self) -> None:
        """Cancels the mini-batches not yet started, so that an interrupted run stops soon."""
        for _, future in self.pending:
            if future is not None:
                future.cancel()

    def discard(self) -> None:
        """Removes the temporary files of outputs never completed, so that no partial output is left."""
        for out in self.outputs.values():
            out.discard()

    def _write_oldest(self) -> None:
        item, future = self.pending.popleft()
        if isinstance(item, FileEnd):
            out = self.outputs.pop(item.file.output, None) or OutputFile(item.file)  # an empty input file
            out.commit()
            self.summary.outputs.append(item.file.output)
            return
        result = future.result()
        out = self.outputs.get(item.file.output)
        if out is None:
            out = self.outputs[item.file.output] = OutputFile(item.file)
        out.write(result.answers)
        self.summary.answered += len(result.answers)


# ---- the job -----------------------------------------------------------------------------------------------

def handshake(url: str, session_factory: Callable[[], requests.Session], ping_timeout: float,
              max_payload_mb: Optional[float], max_concurrent: Optional[int]) -> tuple[float, int]:
    """Waits for /ping, asks /execution-parameters, and returns (MaxPayloadInMB, MaxConcurrentTransforms).

    Raises RunnerError when /ping does not answer 200 within ping_timeout seconds.
    """
    control = session_factory()
    try:
        wait_until_ready(control, url, ping_timeout)
        announced = container_parameters(control, url)
    finally:
        control.close()
    # SageMaker's precedence: the job's own settings, then the container's answer, then the defaults.
    payload_mb = (max_payload_mb or _positive(announced.get("MaxPayloadInMB"), SAGEMAKER_PAYLOAD_LIMIT_MB)
                  or DEFAULT_MAX_PAYLOAD_MB)
    concurrent = _positive(announced.get("MaxConcurrentTransforms"))
    return payload_mb, (max_concurrent or (int(concurrent) if concurrent and concurrent == int(concurrent) else 0)
                        or DEFAULT_MAX_CONCURRENT)


def _check_arguments(url: str, content_type: Optional[str], accept: str, max_payload_mb: Optional[float],
                     max_concurrent: Optional[int], retries: int, timeout: float, output_dir: Path) -> None:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http:// or https:// URL, not {url!r}")
    if content_type is not None and content_type not in (JSONLINES, CSV):
        raise UsageError(f"--content-type must be {JSONLINES} or {CSV}")
    if accept not in ACCEPT_TYPES:
        raise UsageError(f"--accept must be one of {', '.join(ACCEPT_TYPES)} (one answer line per record)")
    if max_payload_mb is not None and _positive(max_payload_mb, SAGEMAKER_PAYLOAD_LIMIT_MB) is None:
        raise UsageError(f"--max-payload-mb must be above 0 and at most {SAGEMAKER_PAYLOAD_LIMIT_MB}")
    if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
        raise UsageError("--max-concurrent must be at least 1")
    if retries < 0 or timeout <= 0:
        raise UsageError("--retries must be at least 0 and --timeout above 0")
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is not a directory")


def _announce(progress: Progress, summary: Summary, output_dir: Path) -> None:
    progress.say(f"{summary.records} records in {_plural(summary.files, 'file')} → {output_dir}; MaxPayloadInMB="
                 f"{summary.max_payload_mb:g}, MaxConcurrentTransforms={summary.max_concurrent}")
    if summary.max_payload_mb * summary.max_concurrent > SAGEMAKER_PAYLOAD_LIMIT_MB:
        progress.say(f"warning: SageMaker refuses jobs whose MaxConcurrentTransforms x MaxPayloadInMB is above "
                     f"{SAGEMAKER_PAYLOAD_LIMIT_MB}")


def run_batch(url: str, inputs: list[Union[str, Path]], output_dir: Union[str, Path],
              content_type: Optional[str] = None, max_payload_mb: Optional[float] = None,
              max_concurrent: Optional[int] = None, retries: int = 3, accept: Optional[str] = None,
              timeout: float = 600, session_factory: Callable[[], requests.Session] = requests.Session,
              progress: Optional[TextIO] = sys.stderr, ping_timeout: float = 120, backoff: float = 0.5) -> Summary:
    """Transforms every input file into OUTPUT_DIR/<name>.out; see the module's docstring.

    Raises UsageError for arguments or inputs that cannot be used, RunnerError when the server is not ready
    within ping_timeout seconds. `progress=None` prints nothing.
    """
    url, accept, output_dir = url.rstrip("/"), accept or JSONLINES, Path(output_dir)
    _check_arguments(url, content_type, accept, max_payload_mb, max_concurrent, retries, timeout, output_dir)
    files = collect_inputs(list(inputs), output_dir, content_type)

    summary = Summary(files=len(files), records=sum(f.records for f in files))
    summary.max_payload_mb, summary.max_concurrent = handshake(url, session_factory, ping_timeout,
                                                               max_payload_mb, max_concurrent)
    output_dir.mkdir(parents=True, exist_ok=True)

    transformer = Transformer(url, accept, retries, timeout, backoff, session_factory)
    pool = ThreadPoolExecutor(max_workers=summary.max_concurrent, thread_name_prefix="transform")
    progress_ = Progress(summary, progress)
    _announce(progress_, summary, output_dir)
    writer = OrderedWriter(summary, window=2 * summary.max_concurrent)

    def run_one(batch: MiniBatch) -> BatchResult:
        result = transformer.transform(batch)
        progress_.completed(result)
        return result

    try:
        with progress_:
            for item in work_items(files, int(summary.max_payload_mb * MB)):
                if isinstance(item, MiniBatch):
                    summary.batches += 1
                    writer.add(item, pool.submit(run_one, item))
                else:
                    writer.add(item, None)
                writer.write_ready()
            writer.write_all()
    finally:
        writer.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        transformer.close()
        writer.discard()
        summary.elapsed_s = time.monotonic() - progress_.started
    progress_.say(f"done: {summary.answered}/{summary.records} records in {_plural(summary.files, 'file')}, "
                  f"{summary.batches} mini-batches ({summary.retries} retries), {summary.error_lines} error lines, "
                  f"{summary.failed_batches} failed mini-batches, {summary.elapsed_s:.1f} s "
                  f"({summary.records_per_s:.1f} records/s)")
    return summary


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# ---- the command line --------------------------------------------------------------------------------------

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="batch_runner.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every record was answered (error lines included), 1 when a mini-batch "
               "failed or the server was not ready, 2 for usage errors.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="input files, or directories whose files (not subdirectories) are all taken")
    parser.add_argument("--url", default="http://127.0.0.1:8080",
                        help="the container's base URL (default: %(default)s)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where <input name>.out files go")
    parser.add_argument("--content-type", choices=(JSONLINES, CSV),
                        help="Content-Type of every input (default: by extension: .jsonl/.jsonlines/.ndjson are "
                             "JSON Lines, .csv is CSV)")
    parser.add_argument("--max-payload-mb", type=float,
                        help="MaxPayloadInMB: the largest mini-batch (default: the container's "
                             "/execution-parameters, else 6)")
    parser.add_argument("--max-concurrent", type=int,
                        help="MaxConcurrentTransforms: mini-batches in flight (default: the container's "
                             "/execution-parameters, else 1)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a mini-batch after a 5xx, 429, connection error or timeout "
                             "(default: %(default)s)")
    parser.add_argument("--accept", choices=ACCEPT_TYPES, default=JSONLINES,
                        help="Accept of every request (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for one answer, like the job's InvocationsTimeoutInSeconds "
                             "(default: %(default)s)")
    parser.add_argument("--ping-timeout", type=float, default=120,
                        help="seconds to wait for /ping to answer 200 (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        summary = run_batch(args.url, args.inputs, args.output_dir, content_type=args.content_type,
                            max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent,
                            retries=args.retries, accept=args.accept, timeout=args.timeout,
                            progress=None if args.quiet else sys.stderr, ping_timeout=args.ping_timeout)
    except UsageError as exc:
        print(f"batch_runner: {exc}", file=sys.stderr)
        return 2
    except RunnerError as exc:
        print(f"batch_runner: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("batch_runner: interrupted; no incomplete output was written", file=sys.stderr)
        return 130
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
