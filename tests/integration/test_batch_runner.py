"""local_test/batch_runner.py: a local Batch Transform job, against the real ./serve and against fake servers
that misbehave on purpose (5xx, 4xx, wrong line counts). Every server listens on 127.0.0.1 only."""
from __future__ import annotations

import contextlib
import http.server
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from images import b64, data_uri, encode, pattern
from server import Server
from static_server import serve, serve_files

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "local_test" / "batch_runner.py"
sys.path.insert(0, str(REPO / "local_test"))
import batch_runner  # noqa: E402
from batch_runner import MB, run_batch  # noqa: E402

URL_IMAGES = {f"/img-{n}.png": encode(pattern(300 + n)) for n in range(90)}
LABELS = ["cat", "dog", "red square"]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    # MaxPayloadInMB=1 splits a few hundred records into several mini-batches; MAX_BODY_MB=1 makes 1 MB the
    # server's limit for every request, so that a larger line is refused (413) whatever the route's rules.
    srv = Server({"MODEL_DIR": str(tiny_model_dir), "IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1",
                  "BATCH_MAX_PAYLOAD_MB": "1", "MAX_BODY_MB": "1"},
                 tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serve_files(URL_IMAGES) as base:
        yield base


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def output_lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1]


class CountingSession:
    """A requests.Session factory that counts the POSTs sent through the sessions it made."""

    def __init__(self):
        import requests
        self.posts = 0
        self.lock = threading.Lock()
        outer = self

        class Session(requests.Session):
            def post(self, *args, **kwargs):
                with outer.lock:
                    outer.posts += 1
                return super().post(*args, **kwargs)

        self.factory = Session


# ---- against the real ./serve ------------------------------------------------------------------------------

def test_a_mixed_json_lines_file_gets_one_answer_per_line_equal_to_open_clip(server, site, reference, tmp_path):
    lines, expected, bad = [], {}, set()

    def add(record, check=None, is_bad=False):
        if check is not None:
            expected[len(lines)] = check
        if is_bad:
            bad.add(len(lines))
        lines.append(record if isinstance(record, str) else json.dumps(record))

    for n in range(300):
        kind = n % 3
        if kind == 0:
            text = f"a photo of thing number {n}"
            add({"id": f"t-{n}", "text": text, "extra": n}, ("text", text))
        elif kind == 1:
            image = pattern(1000 + n, size=(512, 384))  # ~15 KB of base64 each: the file is over 1 MB
            add({"id": f"b-{n}", "image": b64(image)}, ("image", image))
        else:
            add({"id": f"u-{n}", "image": f"{site}/img-{n % 90}.png"}, ("image", pattern(300 + n % 90)))
        if n == 40:
            add({"task": "embed", "texts": ["a cat", "a dog"]}, ("full-embed", ["a cat", "a dog"]))
        if n == 80:
            images = [pattern(7), pattern(8)]
            add({"images": [b64(i) for i in images], "classes": [[label, i] for i, label in enumerate(LABELS)]},
                ("seed003", images))
        if n == 100:
            add("{this is not json", is_bad=True)
        if n == 150:
            add({"id": "bad-base64", "image": "AAAA"}, is_bad=True)
        if n == 200:
            add({"id": "bad-url", "image": f"{site}/missing.png"}, is_bad=True)
        if n == 250:
            add({"id": "bad-empty", "text": ""}, is_bad=True)
        if n == 260:
            add("", is_bad=True)
    source = write_lines(tmp_path / "records.jsonl", lines)
    assert source.stat().st_size > MB
    counting = CountingSession()
    log = io.StringIO()

    summary = run_batch(server.url, [source], tmp_path / "out", session_factory=counting.factory, progress=log)

    assert summary.exit_status == 0 and summary.failed_batches == 0
    assert summary.max_payload_mb == 1 and summary.max_concurrent >= 1  # from /execution-parameters
    assert summary.batches > 1 and counting.posts == summary.requests == summary.batches
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "records.jsonl.out")]
    assert len(answers) == len(lines) == summary.records == summary.answered
    assert {i for i, a in enumerate(answers) if isinstance(a, dict) and "error" in a} == bad
    assert summary.error_lines == len(bad)
    for i in bad:
        if lines[i].startswith("{\"id\""):
            assert answers[i]["id"] == json.loads(lines[i])["id"]  # error lines echo the record's fields
    assert answers[lines.index("")]["error"]["code"] == "empty_body"
    for i, line in enumerate(lines):
        record = json.loads(line) if line.startswith("{\"id\"") else None
        if record is not None and i not in bad:
            assert answers[i]["id"] == record["id"] and len(answers[i]["embedding"]) == 32
    assert answers[0]["extra"] == 0

    texts = [(i, c[1]) for i, c in expected.items() if c[0] == "text"][::10]
    images = [(i, c[1]) for i, c in expected.items() if c[0] == "image"][::10]
    np.testing.assert_allclose([answers[i]["embedding"] for i, _ in texts],
                               reference.texts([t for _, t in texts]), atol=1e-4)
    np.testing.assert_allclose([answers[i]["embedding"] for i, _ in images],
                               reference.images([im for _, im in images]), atol=1e-4)
    (i, (_, full_texts)), = [(i, c) for i, c in expected.items() if c[0] == "full-embed"]
    np.testing.assert_allclose(answers[i]["text_embeddings"], reference.texts(full_texts), atol=1e-4)
    (i, (_, seed_images)), = [(i, c) for i, c in expected.items() if c[0] == "seed003"]
    assert isinstance(answers[i], list) and len(answers[i]) == len(seed_images)
    probabilities = reference.classify_probabilities(seed_images, LABELS)
    for answer, row in zip(answers[i], probabilities):
        assert answer["confidence"] == pytest.approx(row.max(), abs=1e-4)
    assert f"done: {len(lines)}/{len(lines)} records" in log.getvalue()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_a_csv_file_of_texts_and_image_urls_is_answered_line_for_line(server, site, reference, tmp_path):
    texts = ["a red car", "two dogs playing", "a bowl of soup"]
    rows = []
    for n in range(30):
        rows.append(texts[n % 3] if n % 2 == 0 else f"{site}/img-{n}.png")
    rows.append(data_uri(pattern(5)))
    rows.append("")  # an empty text: its own error line
    source = write_lines(tmp_path / "queries.csv", rows)

    summary = run_batch(server.url, [source], tmp_path / "out", progress=None)

    assert summary.exit_status == 0
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "queries.csv.out")]
    assert len(answers) == len(rows)
    assert [("error" in a) for a in answers] == [False] * (len(rows) - 1) + [True]
    np.testing.assert_allclose([answers[n]["embedding"] for n in (0, 2, 4)],
                               reference.texts([texts[n % 3] for n in (0, 2, 4)]), atol=1e-4)
    np.testing.assert_allclose([answers[n]["embedding"] for n in (1, 3, len(rows) - 2)],
                               reference.images([pattern(301), pattern(303), pattern(5)]), atol=1e-4)


def test_a_line_larger_than_max_payload_answers_its_own_error_line(server, tmp_path):
    big = json.dumps({"id": "too-big", "text": "x" * (MB + MB // 2)})
    lines = [json.dumps({"id": f"t-{n}", "text": f"caption {n}"}) for n in range(6)]
    source = write_lines(tmp_path / "big.jsonl", lines[:3] + [big] + lines[3:])

    summary = run_batch(server.url, [source], tmp_path / "out", progress=None)

    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "big.jsonl.out")]
    assert len(answers) == 7
    assert answers[3] == {"id": "too-big", "error": answers[3]["error"]}
    assert answers[3]["error"]["code"] == "body_too_large"
    assert [a["id"] for a in answers] == ["t-0", "t-1", "t-2", "too-big", "t-3", "t-4", "t-5"]
    assert all("embedding" in a for i, a in enumerate(answers) if i != 3)
    assert summary.exit_status == 0 and summary.error_lines == 1 and summary.batches == 3


# ---- against fake servers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def fake_server(answer: Callable[[int, bytes], tuple[int, bytes]], parameters: dict | None = None,
                ping_status: int = 200) -> Iterator[tuple[str, list[bytes]]]:
    """/ping, /execution-parameters (404 when None) and POST /invocations answered by answer(n, body);
    yields the URL and the bodies posted, in order."""
    bodies: list[bytes] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, body: bytes, content_type: str = "application/jsonlines"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/ping":
                self.reply(ping_status, b"{}", "application/json")
            elif self.path == "/execution-parameters" and parameters is not None:
                self.reply(200, json.dumps(parameters).encode(), "application/json")
            else:
                self.reply(404, b'{"error": {"code": "not_found", "message": "no"}}', "application/json")

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                bodies.append(body)
                n = len(bodies)
            self.reply(*answer(n, body))

        def log_message(self, *args):
            pass

    with serve(Handler) as base:
        yield base, bodies


def echo_lines(body: bytes) -> bytes:
    """One answer line per record posted, naming the record."""
    return b"".join(json.dumps({"echo": line.decode()}).encode() + b"\n" for line in body.split(b"\n")[:-1])


def records(tmp_path: Path, n: int, name: str = "in.jsonl") -> Path:
    return write_lines(tmp_path / name, [json.dumps({"id": f"r-{i}", "text": f"text {i}"}) for i in range(n)])


def test_503_twice_then_200_succeeds_after_retries(tmp_path):
    def answer(n, body):
        return (503, b'{"error": {"code": "overloaded", "message": "busy"}}') if n <= 2 else (200, echo_lines(body))

    with fake_server(answer) as (url, bodies):
        summary = run_batch(url, [records(tmp_path, 5)], tmp_path / "out", backoff=0.01, progress=None)
    assert len(bodies) == 3 and bodies[0] == bodies[2]
    assert summary.retries == 2 and summary.failed_batches == 0 and summary.exit_status == 0
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "in.jsonl.out")]
    assert [json.loads(a["echo"])["id"] for a in answers] == [f"r-{i}" for i in range(5)]


def test_a_server_that_always_answers_500_gives_transform_failed_lines(tmp_path):
    boom = b'{"error": {"code": "internal_error", "message": "boom"}}'
    with fake_server(lambda n, body: (500, boom)) as (url, bodies):
        summary = run_batch(url, [records(tmp_path, 4)], tmp_path / "out", retries=2, backoff=0.01, progress=None)
    assert len(bodies) == 3  # the first try and two retries
    assert summary.failed_batches == 1 and summary.exit_status == 1 and summary.error_lines == 4
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "in.jsonl.out")]
    assert [a["id"] for a in answers] == [f"r-{i}" for i in range(4)]
    assert {a["error"]["code"] for a in answers} == {"transform_failed"}
    assert "HTTP 500 internal_error: boom" in answers[0]["error"]["message"]


def test_a_4xx_for_a_whole_mini_batch_is_not_retried(tmp_path):
    refused = b'{"error": {"code": "unsupported_media_type", "message": "no thanks"}}'
    with fake_server(lambda n, body: (415, refused)) as (url, bodies):
        summary = run_batch(url, [records(tmp_path, 3)], tmp_path / "out", backoff=0.01, progress=None)
    assert len(bodies) == 1 and summary.retries == 0 and summary.exit_status == 1
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "in.jsonl.out")]
    assert len(answers) == 3 and {a["error"]["code"] for a in answers} == {"transform_failed"}
    assert "unsupported_media_type" in answers[0]["error"]["message"]


def test_an_answer_with_the_wrong_number_of_lines_is_never_written(tmp_path):
    def answer(n, body):  # the second mini-batch loses a line
        lines = echo_lines(body)
        return 200, (lines if n != 2 else b"".join(lines.splitlines(keepends=True)[1:]))

    source = records(tmp_path, 30)
    with fake_server(answer, {"MaxPayloadInMB": 1, "MaxConcurrentTransforms": 1}) as (url, bodies):
        summary = run_batch(url, [source], tmp_path / "out", max_payload_mb=300 / MB, progress=None)
    assert len(bodies) == summary.batches > 2
    sizes = [len(body.split(b"\n")) - 1 for body in bodies]
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "in.jsonl.out")]
    assert len(answers) == 30 and summary.failed_batches == 1 and summary.exit_status == 1
    second = range(sizes[0], sizes[0] + sizes[1])
    assert all(answers[i]["error"]["code"] == "misaligned_answer" and answers[i]["id"] == f"r-{i}" for i in second)
    assert all("echo" in a for i, a in enumerate(answers) if i not in second)


def test_job_settings_win_over_the_container_and_the_container_over_the_defaults(tmp_path):
    source = records(tmp_path, 200)  # each line is about 30 bytes
    with fake_server(lambda n, body: (200, echo_lines(body)),
                     {"MaxPayloadInMB": 1, "MaxConcurrentTransforms": 3, "BatchStrategy": "MultiRecord"}) as (url, _):
        from_container = run_batch(url, [source], tmp_path / "a", progress=None)
        from_job = run_batch(url, [source], tmp_path / "b", max_payload_mb=1000 / MB, max_concurrent=2,
                             progress=None)
    assert (from_container.max_payload_mb, from_container.max_concurrent, from_container.batches) == (1, 3, 1)
    lines = source.read_bytes().split(b"\n")[:-1]
    assert (from_job.max_concurrent, from_job.batches) == (2, len(list(batch_runner.mini_batches(iter(lines), 1000))))
    assert from_job.batches > 5
    assert (tmp_path / "a" / "in.jsonl.out").read_bytes() == (tmp_path / "b" / "in.jsonl.out").read_bytes()
    with fake_server(lambda n, body: (200, echo_lines(body))) as (url, _):  # no /execution-parameters
        defaults = run_batch(url, [source], tmp_path / "c", progress=None)
    assert (defaults.max_payload_mb, defaults.max_concurrent) == (6, 1)


def test_at_most_max_concurrent_transforms_mini_batches_are_in_flight(tmp_path):
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def answer(n, body):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return 200, echo_lines(body)

    with fake_server(answer, {"MaxPayloadInMB": 1, "MaxConcurrentTransforms": 3}) as (url, bodies):
        summary = run_batch(url, [records(tmp_path, 100)], tmp_path / "out", max_payload_mb=100 / MB, progress=None)
    assert summary.batches == len(bodies) > 20 and summary.max_concurrent == 3
    assert 2 <= state["most"] <= 3
    answers = [json.loads(line) for line in output_lines(tmp_path / "out" / "in.jsonl.out")]
    assert [json.loads(a["echo"])["id"] for a in answers] == [f"r-{i}" for i in range(100)]


def test_mini_batches_hold_as_many_lines_as_fit_and_a_larger_line_alone():
    lines = [b"a" * 9, b"b" * 9, b"", b"c" * 25, b"d" * 4, b"e" * 4]
    assert list(batch_runner.mini_batches(iter(lines), 20)) == [
        [b"a" * 9, b"b" * 9], [b""], [b"c" * 25], [b"d" * 4, b"e" * 4]]


def test_directories_empty_files_and_empty_lines_keep_outputs_aligned(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b'{"text": "x"}\n\n{"text": "y"}')  # no final newline
    (folder / "b.csv").write_bytes(b"")
    (folder / "c.ndjson").write_bytes(b"\n\n")
    with fake_server(lambda n, body: (200, echo_lines(body))) as (url, bodies):
        summary = run_batch(url, [folder], tmp_path / "out", progress=None)
    assert summary.records == summary.answered == 5 and summary.files == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jsonl.out", "b.csv.out", "c.ndjson.out"]
    assert [json.loads(a)["echo"] for a in output_lines(tmp_path / "out" / "a.jsonl.out")] == [
        '{"text": "x"}', "", '{"text": "y"}']
    assert (tmp_path / "out" / "b.csv.out").read_bytes() == b""
    assert len(output_lines(tmp_path / "out" / "c.ndjson.out")) == 2
    assert bodies == [b'{"text": "x"}\n\n{"text": "y"}\n', b"\n\n"]


def test_a_server_that_never_becomes_ready_stops_the_run_in_bounded_time(tmp_path):
    with fake_server(lambda n, body: (200, b""), ping_status=503) as (url, bodies):
        with pytest.raises(batch_runner.RunnerError, match="did not answer 200"):
            run_batch(url, [records(tmp_path, 2)], tmp_path / "out", ping_timeout=0.5, progress=None)
    assert bodies == [] and not (tmp_path / "out").exists()


# ---- the command line --------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=60)


def test_cli_help_exits_0():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--max-payload-mb" in result.stdout and "MaxConcurrentTransforms" in result.stdout


def test_cli_usage_errors_exit_2(tmp_path):
    assert run_cli("--output-dir", str(tmp_path / "out"), str(tmp_path / "missing.jsonl")).returncode == 2
    (tmp_path / "notes.txt").write_text("hello\n")
    result = run_cli("--output-dir", str(tmp_path / "out"), str(tmp_path / "notes.txt"))
    assert result.returncode == 2 and "--content-type" in result.stderr
    assert run_cli(str(tmp_path / "notes.txt")).returncode == 2  # no --output-dir


def test_cli_exit_status_follows_failed_mini_batches(tmp_path):
    source = records(tmp_path, 3)
    with fake_server(lambda n, body: (200, echo_lines(body))) as (url, _):
        ok = run_cli("--url", url, "--output-dir", str(tmp_path / "ok"), str(source))
    with fake_server(lambda n, body: (500, b"boom")) as (url, _):
        failed = run_cli("--url", url, "--output-dir", str(tmp_path / "failed"), "--retries", "0", str(source))
    assert ok.returncode == 0, ok.stderr
    assert "done: 3/3 records" in ok.stderr and len(output_lines(tmp_path / "ok" / "in.jsonl.out")) == 3
    assert failed.returncode == 1 and "1 failed mini-batches" in failed.stderr
    assert len(output_lines(tmp_path / "failed" / "in.jsonl.out")) == 3
