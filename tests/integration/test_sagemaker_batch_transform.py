"""Integration: the SageMaker Python SDK's own local-mode Batch Transform against the real ./serve (no Docker).

`sagemaker.local` runs a Batch Transform with AWS's own code: it asks the container for GET
/execution-parameters, splits each input file into lines (SplitType=Line), packs them into requests
(MultiRecordStrategy / SingleRecordStrategy, sized with the MaxPayloadInMB it settled on), POSTs them to
/invocations and assembles `<file>.out` (AssembleWith=Line writes b"\\n" after every response). Only the
Docker parts are replaced: the docker host lookup (it runs `docker info`) answers 127.0.0.1, and
`_SageMakerContainer` is a stand-in whose serve() / stop_serving() record what they are given and start
nothing, because ./serve is already running on a loopback port (`local.serving_port`).

The server announces MaxPayloadInMB=1 (BATCH_MAX_PAYLOAD_MB=1), so that the SDK's MultiRecord batching,
once it has read that answer, cuts the main file into several requests.

Observed SDK behaviours that the assertions pin down (sagemaker 2.257.6):
- The .out file is the concatenation of every response followed by b"\\n". The server separates its
  answer lines with "\\n" but does not end the last one with it, so the .out file holds exactly one line
  per input record, in order.
- MultiRecordStrategy.pad yields its (empty) buffer when the very first record of a file is already over
  MaxPayloadInMB: the SDK POSTs an empty body. The server answers 200 with an empty body, and the SDK
  writes a lone b"\\n" for it, so that file's .out starts with a blank line. The over-sized record then goes
  alone in the next request.
- The SDK never looks at the HTTP status of /invocations: an error answer would be written into the .out
  as if it were output. Hence the server log is checked for 200 on every request.
Nothing leaves 127.0.0.1: the test fails on any attempt to resolve or connect to another host (telemetry
is opted out with the SDK's config file; the AWS credentials and region are dummies).
"""
from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from http_helper import post
from images import b64, pattern

ANNOUNCED_PAYLOAD_MB = 1
JOB_TIMEOUT_S = 60
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-sagemaker:test"  # never pulled
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
JSONLINES = "application/jsonlines"

TEXTS = ["a photo of a cat", "two dogs playing", "un café crème", "a red sports car", "a bowl of soup",
         "a diagram of a transformer", "an old oak tree", "blue jeans", "a mountain lake at dawn",
         "a plate of sushi", "a city skyline at night", "a black and white photo of a bicycle"]
LABELS = ["cat", "dog", "red square", "car", "tree", "a bowl of soup"]


def noisy(seed: int, size=(240, 180)) -> Image.Image:
    """A pattern with per-pixel noise: it does not compress, so a few of them exceed MaxPayloadInMB."""
    pixels = np.asarray(pattern(seed, size), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-40, 41, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


# ---- input files: what each line is, and what its answer line must be ---------------------------------------

def main_records() -> list[tuple[str, dict]]:
    """About 50 lines: text and image item records, two full request bodies and three bad records."""
    entries = []
    for n in range(24):
        text = f"{TEXTS[n % len(TEXTS)]}, variant {n}"
        entries.append((json.dumps({"id": f"t-{n}", "text": text}, ensure_ascii=False),
                        {"kind": "text", "id": f"t-{n}", "text": text}))
    for n in range(20):
        image = noisy(100 + n)
        entries.append((json.dumps({"id": f"i-{n}", "image": b64(image), "sku": f"sku-{n}"}),
                        {"kind": "image", "id": f"i-{n}", "image": image, "echo": {"sku": f"sku-{n}"}}))
    embed_texts = ["a photo of a cat", "a diagram"]
    entries.append((json.dumps({"task": "embed", "texts": embed_texts}), {"kind": "embed", "texts": embed_texts}))
    classify_images = [pattern(seed) for seed in (60, 61)]
    classes = [[label, int(i == 2)] for i, label in enumerate(LABELS)]
    entries.append((json.dumps({"images": [b64(i) for i in classify_images], "classes": classes}),
                    {"kind": "seed003", "images": classify_images}))
    entries.append((json.dumps({"id": "i-bad", "image": base64.b64encode(b"definitely not an image").decode()}),
                    {"kind": "error", "id": "i-bad", "code": "invalid_image"}))
    entries.append((json.dumps({"id": "t-empty", "text": ""}),
                    {"kind": "error", "id": "t-empty", "code": "empty_text"}))
    entries.append(('this line is {not JSON', {"kind": "error", "id": None, "code": "malformed_json"}))
    order = np.random.default_rng(7).permutation(len(entries))
    return [entries[i] for i in order]


def big_first_records() -> list[tuple[str, dict]]:
    """A file whose first record alone is over MaxPayloadInMB (about 1.2 MB of base64 PNG)."""
    big = noisy(200, size=(760, 560))
    entries = [(json.dumps({"id": "i-big", "image": b64(big)}), {"kind": "image", "id": "i-big", "image": big})]
    for n in range(4):
        entries.append((json.dumps({"id": f"t-big-{n}", "text": TEXTS[n]}),
                        {"kind": "text", "id": f"t-big-{n}", "text": TEXTS[n]}))
    entries.append((json.dumps({"id": "i-big-small", "image": b64(pattern(70))}),
                    {"kind": "image", "id": "i-big-small", "image": pattern(70)}))
    entries.append((json.dumps({"id": "t-big-empty", "text": ""}),
                    {"kind": "error", "id": "t-big-empty", "code": "empty_text"}))
    return entries


def write_jsonl(path: Path, entries) -> None:
    path.write_text("".join(line + "\n" for line, _ in entries), encoding="utf-8")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("transform-input")
    main, big_first = main_records(), big_first_records()
    write_jsonl(root / "records.jsonl", main)
    write_jsonl(root / "big-first.jsonl", big_first)
    assert (root / "records.jsonl").stat().st_size > 2 * ANNOUNCED_PAYLOAD_MB * 2 ** 20
    assert (root / "big-first.jsonl").read_text().index("\n") > ANNOUNCED_PAYLOAD_MB * 2 ** 20
    return SimpleNamespace(dir=root, files={"records.jsonl": main, "big-first.jsonl": big_first})


# ---- the server, the SDK, and a guard that keeps every connection on loopback ------------------------------

@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir), "SAGEMAKER_BATCH": "true",
                         "BATCH_MAX_PAYLOAD_MB": str(ANNOUNCED_PAYLOAD_MB)})


class _LoopbackGuard:
    """Refuses (and records) any name lookup or connection that is not loopback, in this process."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.attempts: list = []
        real_connect, real_connect_ex, real_getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                                           socket.getaddrinfo)
        guard = self

        def check(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
                guard.attempts.append(address)
                raise OSError(f"test guard: connection to {address} refused, only loopback is allowed")

        def connect(sock, address):
            check(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock, address):
            check(sock, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            name = host.decode() if isinstance(host, bytes) else host
            if name is not None and name not in LOOPBACK:
                guard.attempts.append(name)
                raise socket.gaierror(f"test guard: lookup of {name!r} refused, only loopback is allowed")
            return real_getaddrinfo(host, *args, **kwargs)

        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        # Armed: a connection elsewhere is refused before any packet is sent (TEST-NET-1, never routed).
        with pytest.raises(OSError, match="test guard"):
            socket.create_connection(("aws.amazon.com", 443), timeout=1)
        with socket.socket() as sock, pytest.raises(OSError, match="test guard"):
            sock.connect(("192.0.2.1", 9))
        assert self.attempts == ["aws.amazon.com", ("192.0.2.1", 9)]
        self.attempts.clear()


class _NoDockerContainer:
    """Stands in for sagemaker.local.image._SageMakerContainer: ./serve already runs on loopback."""

    calls: list = []

    def __init__(self, instance_type, instance_count, image, sagemaker_session=None, *args, **kwargs):
        self.image = image
        _NoDockerContainer.calls.append(("init", instance_type, instance_count, image))

    def serve(self, model_dir, environment):
        _NoDockerContainer.calls.append(("serve", model_dir, dict(environment)))

    def stop_serving(self):
        _NoDockerContainer.calls.append(("stop_serving",))


@pytest.fixture(scope="module")
def sdk(server, tiny_model_dir, tmp_path_factory, sagemaker_sdk_env):
    no_aws = tmp_path_factory.mktemp("no-aws")
    patch = sagemaker_sdk_env
    # The AWS environment on top of the SDK's: dummy credentials, no config files, no instance metadata.
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDTESTONLY", "AWS_SECRET_ACCESS_KEY": "test-only-secret",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(no_aws / "config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws / "credentials")}.items():
        patch.setenv(name, value)
    patch.delenv("AWS_PROFILE", raising=False)
    patch.delenv("AWS_SESSION_TOKEN", raising=False)
    guard = _LoopbackGuard(patch)

    import boto3
    from sagemaker.local import LocalSession, entities, local_session as local_session_module

    patch.setattr(entities, "get_docker_host", lambda: "127.0.0.1")
    patch.setattr(local_session_module, "get_docker_host", lambda: "127.0.0.1")
    patch.setattr(entities, "_SageMakerContainer", _NoDockerContainer)
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.config = {"local": {"serving_port": server.port}}

    # A spy on the runtime client: what the SDK sends, passed through unchanged.
    sent: list[dict] = []
    invoke = session.sagemaker_runtime_client.invoke_endpoint

    def spy(Body, EndpointName, ContentType=None, Accept=None, **kwargs):
        sent.append({"body": Body, "content_type": ContentType, "accept": Accept})
        return invoke(Body, EndpointName, ContentType, Accept, **kwargs)

    patch.setattr(session.sagemaker_runtime_client, "invoke_endpoint", spy)

    model_name = f"clip-tiny-{uuid.uuid4().hex[:8]}"
    session.sagemaker_client.create_model(
        ModelName=model_name, ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE_URI, "ModelDataUrl": f"file://{tiny_model_dir}",
                          "Environment": {"LOG_LEVEL": "info"}})
    yield SimpleNamespace(session=session, model_name=model_name, sent=sent, guard=guard)
    assert guard.attempts == [], f"the SDK tried to leave loopback: {guard.attempts}"


def run_transform(sdk, server, inputs, tmp_path, strategy: str, **job_settings):
    """create_transform_job (synchronous in local mode) in a thread, bounded by JOB_TIMEOUT_S; returns
    the job's description, the .out bytes per input file, the bodies the SDK sent and the server log lines
    of this job."""
    client = sdk.session.sagemaker_client
    output = tmp_path / "output"
    name = f"clip-transform-{strategy.lower()}-{uuid.uuid4().hex[:8]}"
    log_offset, sent_offset = len(server.log()), len(sdk.sent)
    _NoDockerContainer.calls.clear()
    failure: list[BaseException] = []

    def job():
        try:
            client.create_transform_job(
                TransformJobName=name, ModelName=sdk.model_name, BatchStrategy=strategy,
                TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                "S3Uri": f"file://{inputs.dir}"}},
                                "ContentType": JSONLINES, "SplitType": "Line"},
                TransformOutput={"S3OutputPath": f"file://{output}", "Accept": JSONLINES, "AssembleWith": "Line"},
                TransformResources={"InstanceType": "local", "InstanceCount": 1}, **job_settings)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=job, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    description = None
    while time.monotonic() < deadline:
        if failure:
            raise failure[0]
        try:
            description = client.describe_transform_job(name)
        except Exception:  # noqa: BLE001 - not registered yet
            description = None
        if description and description["TransformJobStatus"] == "Completed" and not thread.is_alive():
            break
        time.sleep(0.1)
    thread.join(timeout=1)
    if failure:
        raise failure[0]
    assert description and description["TransformJobStatus"] == "Completed", \
        f"the transform job did not complete within {JOB_TIMEOUT_S} s: {description}\n{server.log()[log_offset:]}"

    sent = sdk.sent[sent_offset:]
    # The server writes its access line after answering: give the last one a moment to land.
    logged: list[dict] = []
    for _ in range(50):
        logged = server.requests_logged(log_offset)
        if sum(r["route"] == "/invocations" for r in logged) >= len(sent):
            break
        time.sleep(0.1)
    outs = {path.name[:-len(".out")]: path.read_bytes() for path in output.glob("*.out")}
    return SimpleNamespace(description=description, outs=outs, sent=sent, log=logged)


def bodies_per_file(sent: list[dict], inputs) -> dict[str, list[str]]:
    """The SDK reads the files one after another, in its data source's order: cut its request bodies back
    into files by content. An empty body is never the end of a file here: it is sent before a file's first
    record when that record alone is over MaxPayloadInMB."""
    from sagemaker.local.data import LocalFileDataSource
    order = [Path(f).name for f in LocalFileDataSource(str(inputs.dir)).get_file_list()]
    result, pending = {}, list(sent)
    for name in order:
        text = (inputs.dir / name).read_text(encoding="utf-8")
        taken, joined = [], ""
        while pending and len(joined) < len(text):
            taken.append(pending.pop(0)["body"])
            joined += taken[-1]
        assert joined == text, f"the request bodies for {name} do not add up to the file"
        result[name] = taken
    assert not pending, f"{len(pending)} requests left over"
    return result


# ---- checking the .out files --------------------------------------------------------------------------------

def out_lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n"), data[-200:]
    return data[:-1].split(b"\n")


def expected_layout(bodies: list[str]) -> list[str]:
    """What the SDK's assembly makes of the answers: each request's answer lines and nothing else (the
    server does not end its answer with "\\n"; AssembleWith=Line adds one). Only an empty request, which
    the SDK itself sends, leaves a blank line: its empty answer plus the SDK's "\\n"."""
    layout = []
    for body in bodies:
        layout += ["answer"] * len(body.splitlines()) if body else ["blank"]
    return layout


def check_answers(answers: list[dict], entries, reference) -> None:
    assert len(answers) == len(entries)
    texts = [(i, e["text"]) for i, (_, e) in enumerate(entries) if e["kind"] == "text"]
    images = [(i, e["image"]) for i, (_, e) in enumerate(entries) if e["kind"] == "image"]
    expected = {}
    if texts:
        expected.update(zip([i for i, _ in texts], reference.texts([t for _, t in texts])))
    if images:
        expected.update(zip([i for i, _ in images], reference.images([im for _, im in images])))
    for i, (answer, (_, entry)) in enumerate(zip(answers, entries)):
        kind = entry["kind"]
        if kind in ("text", "image"):
            assert set(answer) == {"id", "embedding", *entry.get("echo", {})}, (i, answer)
            assert answer["id"] == entry["id"]
            for key, value in entry.get("echo", {}).items():
                assert answer[key] == value
            np.testing.assert_allclose(answer["embedding"], expected[i], atol=1e-4, err_msg=entry["id"])
            assert np.linalg.norm(answer["embedding"]) == pytest.approx(1.0, abs=1e-4)
        elif kind == "embed":
            np.testing.assert_allclose(answer["text_embeddings"], reference.texts(entry["texts"]), atol=1e-4)
        elif kind == "seed003":
            probabilities = reference.classify_probabilities(entry["images"], LABELS)
            assert isinstance(answer, list) and len(answer) == len(entry["images"])
            for one, p in zip(answer, probabilities):
                assert one["confidence"] == pytest.approx(p.max(), abs=1e-4)
                assert one["prompts"][1][0] == LABELS[int(np.argmax(p))]
        else:
            assert kind == "error"
            expected_keys = {"error"} | ({"id"} if entry["id"] else set())
            assert isinstance(answer, dict) and set(answer) == expected_keys, (i, answer)
            assert answer.get("id") == entry["id"]
            assert answer["error"]["code"] == entry["code"] and answer["error"]["message"], answer
    # Errors exactly on the bad records.
    failed = [i for i, a in enumerate(answers) if isinstance(a, dict) and "error" in a]
    assert failed == [i for i, (_, e) in enumerate(entries) if e["kind"] == "error"]


def check_out_file(data: bytes, bodies: list[str], entries, reference) -> list[dict]:
    lines = out_lines(data)
    assert ["blank" if line == b"" else "answer" for line in lines] == expected_layout(bodies)
    answers = [json.loads(line) for line in lines if line]
    check_answers(answers, entries, reference)
    return answers


def invocation_statuses(logged: list[dict]) -> list[str]:
    return [str(r["status"]) for r in logged if r["method"] == "POST" and r["route"] == "/invocations"]


# ---- the jobs -----------------------------------------------------------------------------------------------

def test_multi_record_transform_job_lines_up_with_its_input(sdk, server, inputs, reference, tmp_path):
    job = run_transform(sdk, server, inputs, tmp_path, "MultiRecord")

    # The SDK asked the container for its execution parameters, once, before the first invocation ...
    assert [r["status"] for r in job.log if r["route"] == "/execution-parameters"] == [200]
    first_get = next(i for i, r in enumerate(job.log) if r["route"] == "/execution-parameters")
    first_post = next(i for i, r in enumerate(job.log) if r["route"] == "/invocations")
    assert first_get < first_post
    # ... and took MaxPayloadInMB=1 from it (the job set only BatchStrategy; the SDK's default is 6 MB,
    # which would have sent the whole main file, about 2.8 MB, in one request).
    assert job.description["BatchStrategy"] == "MultiRecord"
    init, serve, stop = _NoDockerContainer.calls
    assert init == ("init", "local", 1, IMAGE_URI) and stop == ("stop_serving",)
    environment = serve[2]
    assert environment["SAGEMAKER_BATCH"] == "True" and environment["SAGEMAKER_BATCH_STRATEGY"] == "MULTI_RECORD"
    assert environment["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] == "1" and environment["LOG_LEVEL"] == "info"
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" not in environment

    assert all(r["content_type"] == JSONLINES and r["accept"] == JSONLINES for r in job.sent)
    statuses = invocation_statuses(job.log)
    assert len(statuses) == len(job.sent) and set(statuses) == {"200"}, statuses

    bodies = bodies_per_file(job.sent, inputs)
    assert set(job.outs) == set(inputs.files)

    # The main file: several records per request, several requests, each under the announced 1 MB.
    main = inputs.files["records.jsonl"]
    main_bodies = bodies["records.jsonl"]
    assert 3 <= len(main_bodies) < len(main), [len(b.splitlines()) for b in main_bodies]
    assert all(sys.getsizeof(b) < ANNOUNCED_PAYLOAD_MB * 2 ** 20 for b in main_bodies)
    assert all(len(b.splitlines()) > 1 for b in main_bodies)
    check_out_file(job.outs["records.jsonl"], main_bodies, main, reference)

    # The file whose first record is over 1 MB: the SDK first sends an EMPTY body (MultiRecordStrategy.pad
    # yields its empty buffer), then the big record on its own, then the rest together.
    big_first = inputs.files["big-first.jsonl"]
    big_bodies = bodies["big-first.jsonl"]
    assert big_bodies[0] == "" and big_bodies[1].count("\n") == 1 and '"id": "i-big"' in big_bodies[1]
    assert len(big_bodies) == 3 and len(big_bodies[2].splitlines()) == len(big_first) - 1
    assert job.outs["big-first.jsonl"].startswith(b"\n")  # the empty answer, assembled as a blank line
    check_out_file(job.outs["big-first.jsonl"], big_bodies, big_first, reference)

    # In all: fewer requests than records.
    assert len(job.sent) < sum(len(entries) for entries in inputs.files.values())


def test_single_record_transform_job_lines_up_with_its_input(sdk, server, inputs, reference, tmp_path):
    # The job's own MaxPayloadInMB (6) wins over the container's 1, so the 1.2 MB record may go alone.
    job = run_transform(sdk, server, inputs, tmp_path, "SingleRecord", MaxPayloadInMB=6)

    assert [r["status"] for r in job.log if r["route"] == "/execution-parameters"] == [200]
    assert job.description["BatchStrategy"] == "SingleRecord"
    environment = _NoDockerContainer.calls[1][2]
    assert environment["SAGEMAKER_BATCH_STRATEGY"] == "SINGLE_RECORD"
    assert environment["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "6"

    statuses = invocation_statuses(job.log)
    total = sum(len(entries) for entries in inputs.files.values())
    assert len(job.sent) == len(statuses) == total and set(statuses) == {"200"}, statuses
    assert all(r["body"].count("\n") == 1 and r["body"].endswith("\n") for r in job.sent)  # one line each

    bodies = bodies_per_file(job.sent, inputs)
    for name, entries in inputs.files.items():
        answers = check_out_file(job.outs[name], bodies[name], entries, reference)
        assert len(answers) == len(entries)
        # SingleRecord: one answer line per record, no blank lines.
        assert b"" not in out_lines(job.outs[name])


def test_server_answers_an_empty_json_lines_body_with_an_empty_200(server):
    """What the SDK's empty MultiRecord request gets: zero lines in, zero lines out."""
    response = post(server, "/invocations", b"", JSONLINES, Accept=JSONLINES, timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Type"].startswith(JSONLINES)
