"""Property-based (Hypothesis): whatever a client sends, the answer is a clear one.

Bodies are built from the real request formats' keys with values that are sometimes plausible and sometimes
any JSON at all; next to them, any JSON document, and any bytes under each Content-Type the server takes.
For every one of them, through the Flask test client on the tiny model:

- no 5xx (a 503 would be allowed only as not_ready / overloaded / timeout, which cannot happen here);
- every 4xx carries `{"error": {"code": str, "message": str, ...}}` as JSON (on OpenAI's routes with `type` and
  `param` too; on Weaviate's `/vectorize`, the shape its module reads, `{"error": "<message>"}`);
- every 200 has a content type the OpenAPI document lists for that route, and a body of that type; JSON Lines
  and CSV requests get exactly one answer per input line.

Derandomized and without an example database, so a CI run is the same run every time.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import string
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

from http_helper import post
from images import encode, pattern

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "container/clip_sagemaker/openapi.json").read_text())
DOCUMENTED_200 = {route: set(paths["post"]["responses"]["200"]["content"])
                  for route, paths in OPENAPI["paths"].items()
                  if "post" in paths and not paths["post"].get("x-multi-model")}
UNAVAILABLE_CODES = {"not_ready", "overloaded", "timeout"}
SEED_ROUTES = ["/embed", "/embeddings", "/rank", "/encode"]
OPENAI_ROUTES = ["/v1/embeddings"]  # /embeddings answers OpenAI's errors only for bodies with `input`
WEAVIATE_ROUTES = ["/vectorize"]


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ---- strategies -------------------------------------------------------------------------------------------

PNG = encode(pattern(60, size=(20, 16)))
VALID_IMAGES = [base64.b64encode(PNG).decode(), base64.b64encode(encode(pattern(61, size=(16, 24)))).decode(),
                "data:image/png;base64," + base64.b64encode(PNG).decode()]

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["a photo of a cat", "", "   ", "\x00", "🐱 émoji", "x" * 10_001, "{label}", "<|endoftext|>"]),
)
# Mostly strings that are not images (fast to refuse), now and then a small valid PNG. Nothing that looks like
# a URL: those would leave the machine (and s3:// ones would wait for AWS).
images = st.one_of(
    st.sampled_from(["", "AAAA", "////", "not base64!", "aGVsbG8gd29ybGQ=", "iVBORw0KGgo=", "data:image/png,raw",
                     "data:text/plain;base64,aGk=", "data:image/png;base64,!!", "data:;base64,AAAA"]),
    st.text(string.ascii_letters + string.digits + "+/=-_ \n", max_size=40),
    st.text(max_size=12).filter(lambda s: "://" not in s),
    st.sampled_from(VALID_IMAGES),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def either(plausible, odds: int = 3):
    """Mostly a plausible value for the field (`odds` to one), else any JSON value at all."""
    return st.one_of(*[plausible] * odds, json_values)


items = st.one_of(
    st.fixed_dictionaries({"text": texts}), st.fixed_dictionaries({"image": images}),
    st.fixed_dictionaries({}, optional={"text": either(texts), "image": either(images), "img_uri": either(images),
                                        "img_blob": either(images)}),
)
class_ids = st.one_of(st.integers(0, 1), st.booleans(), st.none(), st.text(max_size=3))
FIELDS = {
    "task": st.sampled_from(["embed", "rank", "classify", "translate", "EMBED"]),
    "texts": st.lists(either(texts, 8), max_size=4),
    "images": st.lists(either(images, 8), max_size=3),
    "normalize": st.booleans(),
    "queries": st.lists(either(items, 8), max_size=3),
    "candidates": st.lists(either(items, 8), max_size=3),
    "top_k": st.one_of(st.integers(-2, 8), st.sampled_from([2 ** 63, 2 ** 64 - 1])),
    "classes": st.one_of(st.lists(either(texts, 8), max_size=4),
                         st.lists(st.tuples(either(texts, 8), class_ids).map(list), max_size=4)),
    "prompt_template": st.one_of(st.sampled_from(["a photo of a {label}", "{}", "{0}", "{label}{label}", "{label:>5}",
                                                  "{label!r}", "{", "}", "{{label}}", "no placeholder"]),
                                 st.text(max_size=20)),
    "prompt_templates": st.one_of(st.sampled_from(["simple_imagenet", "openai_imagenet", "imagenet", "", " "]),
                                  st.lists(st.sampled_from(["a photo of a {label}", "{}", "{label:>5}", "no label",
                                                            "{"]), max_size=3)),
    "margin": st.floats(-1, 2, allow_nan=False),
    "logit_scale": st.floats(-10, 2000, allow_nan=False),
    "text": texts,
    "image": images,
    # OpenAI's embeddings API; token ids ([int], [[int]]) among the inputs.
    "input": st.one_of(texts, images, st.lists(either(st.one_of(
        texts, images, items, st.integers(-1, 50_000), st.lists(st.integers(0, 50_000), max_size=3)), 8), max_size=4)),
    "model": texts,
    "encoding_format": st.sampled_from(["float", "base64", "int8", "FLOAT"]),
    "modality": st.sampled_from(["text", "image", "audio", "Image"]),
    "dimensions": st.one_of(st.integers(-2, 64), st.just(32), st.just(2 ** 64)),
    "user": texts,
    # Misspelt or unknown keys.
    "normalise": st.booleans(),
    "extra": json_values,
}


def body_of(required: tuple[str, ...], optional: tuple[str, ...]):
    known = st.fixed_dictionaries({k: either(FIELDS[k]) for k in required},
                                  optional={k: either(FIELDS[k]) for k in optional})
    with_unknown = st.fixed_dictionaries({k: either(FIELDS[k]) for k in required},
                                         optional={k: either(FIELDS[k]) for k in optional + ("extra", "normalise")})
    return st.one_of(known, known, known, with_unknown)


# Valid requests of every format, then perhaps one field replaced by any JSON, dropped, or an unknown one added:
# these get past validation into the model and the answer's rendering.
good_texts = st.one_of(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(str.strip),
                       st.sampled_from(["a photo of a cat", "🐱 émoji", "x" * 300]))
good_images = st.sampled_from(VALID_IMAGES)
good_items = st.one_of(good_texts.map(lambda t: {"text": t}), good_images.map(lambda i: {"image": i}))
good_seed002_items = st.one_of(good_texts.map(lambda t: {"text": t}), good_images.map(lambda i: {"img_blob": i}))
good_classes = st.one_of(st.lists(good_texts, min_size=1, max_size=4),
                         st.lists(st.tuples(good_texts, class_ids).map(list), min_size=1, max_size=4))
classify_options = {
    "prompt_template": st.sampled_from(["a photo of a {label}", "{}", "{label}, a {label}", "{{x}} {0}"]),
    "prompt_templates": st.one_of(st.just("simple_imagenet"),
                                  st.lists(st.sampled_from(["a photo of a {label}", "{}", "{{x}} {0}"]), min_size=1,
                                           max_size=3)),
    "top_k": st.one_of(st.integers(1, 6), st.just(2 ** 63)), "margin": st.floats(0, 1),
    "logit_scale": st.floats(0, 1000)}
SEED_BODIES = {  # each earlier system's route, its own valid bodies
    "/embed": st.fixed_dictionaries({"texts": st.lists(good_texts, min_size=1, max_size=3)},
                                    optional={"normalize": st.booleans()}),
    "/embeddings": st.one_of(
        st.fixed_dictionaries({"text": good_texts}, optional={"image": good_images, "normalize": st.booleans()}),
        st.fixed_dictionaries({"image": good_images}, optional={"text": good_texts, "normalize": st.booleans()})),
    "/rank": st.fixed_dictionaries({"queries": st.lists(good_seed002_items, min_size=1, max_size=2),
                                    "candidates": st.lists(good_seed002_items, min_size=1, max_size=3)}),
    "/encode": st.lists(good_seed002_items, min_size=1, max_size=3),
}
openai_options = {"model": good_texts, "encoding_format": st.sampled_from(["float", "base64"]),
                  "dimensions": st.just(32), "user": good_texts}
openai_bodies = st.one_of(
    st.fixed_dictionaries({"input": st.one_of(good_texts, st.lists(good_texts, min_size=1, max_size=3),
                                              st.lists(good_items, min_size=1, max_size=3))}, optional=openai_options),
    st.fixed_dictionaries({"input": st.lists(good_images, min_size=1, max_size=2), "modality": st.just("image")},
                          optional=openai_options))
ROUTE_BODIES = {**SEED_BODIES,  # each earlier system's and integration's route, its own valid bodies
    "/v1/embeddings": openai_bodies,
    "/embeddings": st.one_of(SEED_BODIES["/embeddings"], openai_bodies),
    "/vectorize": st.fixed_dictionaries({}, optional={"texts": st.lists(texts.filter(lambda t: len(t) <= 10_000),
                                                                        max_size=3),
                                                      "images": st.lists(good_images, max_size=2)}),
}
valid_bodies = st.one_of(
    st.fixed_dictionaries({"task": st.just("embed"), "texts": st.lists(good_texts, min_size=1, max_size=3)},
                          optional={"images": st.lists(good_images, max_size=2), "normalize": st.booleans()}),
    st.fixed_dictionaries({"task": st.just("embed"), "images": st.lists(good_images, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"task": st.just("rank"), "queries": st.lists(good_items, min_size=1, max_size=2),
                           "candidates": st.lists(good_items, min_size=1, max_size=3)},
                          optional={"top_k": classify_options["top_k"]}),
    st.fixed_dictionaries({"task": st.just("classify"), "images": st.lists(good_images, min_size=1, max_size=2),
                           "classes": good_classes}, optional=classify_options),
    st.fixed_dictionaries({"images": st.lists(good_images, min_size=1, max_size=2), "classes": good_classes},
                          optional=classify_options),
    *SEED_BODIES.values(),
    openai_bodies,
)


def perturbed(body):
    """The body as it is (mostly), or with one field replaced by any JSON, one dropped, or an unknown one added."""
    if not isinstance(body, dict) or not body:
        return st.just(body)
    keys = sorted(body)
    return st.one_of(
        st.just(body), st.just(body), st.just(body),
        st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**body, kv[0]: kv[1]}),
        st.sampled_from(keys).map(lambda gone: {k: v for k, v in body.items() if k != gone}),
        st.tuples(st.sampled_from(["normalise", "extra", "Task"]), json_values).map(lambda kv: {**body, kv[0]: kv[1]}),
    )


OPTIONS = ("normalize", "top_k", "classes", "prompt_template", "prompt_templates", "margin", "logit_scale")
bodies = st.one_of(
    valid_bodies.flatmap(perturbed), valid_bodies.flatmap(perturbed), valid_bodies.flatmap(perturbed),
    body_of(("task",), ("texts", "images", "queries", "candidates") + OPTIONS),  # general: any task's keys
    body_of((), ("texts", "images", "normalize")).map(lambda b: {"task": "embed", **b}),  # each task's own keys
    body_of((), ("queries", "candidates", "top_k")).map(lambda b: {"task": "rank", **b}),
    body_of((), ("images", "classes", "prompt_template", "prompt_templates", "top_k", "margin", "logit_scale")).map(
        lambda b: {"task": "classify", **b}),
    body_of(("images", "classes"), ("prompt_template", "prompt_templates", "top_k", "margin", "logit_scale")),  # 003
    body_of(("texts",), ("normalize",)),  # seed 000
    body_of((), ("text", "image", "normalize")),  # seed 001
    body_of(("queries", "candidates"), ()),  # seed 002 /rank
    body_of(("input",), ("model", "encoding_format", "modality", "dimensions", "user")),  # OpenAI's
    body_of((), ("texts", "images")),  # Weaviate's /vectorize
    st.lists(either(items), max_size=4),  # seed 002 /encode
    json_values,  # anything at all
)
item_records = st.fixed_dictionaries({"id": json_values}, optional={"text": either(texts), "image": either(images),
                                                                    "normalize": either(FIELDS["normalize"])})
accepts = st.one_of(st.none(), st.none(), st.none(), st.sampled_from([
    "application/json", "application/jsonlines", "application/x-npy", "text/csv", "*/*", "text/html",
    "application/json;q=0, application/x-npy;q=0.5", "image/*"]))
attribute_values = st.text(string.ascii_letters + string.digits + "{}.-_:! ", max_size=8)
custom_attributes = st.one_of(
    st.none(),
    st.lists(st.tuples(st.sampled_from(OPTIONS + ("x",)), attribute_values), max_size=3).map(
        lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
)


def mutated(data: bytes):
    """Bytes of a valid image with a few of them overwritten, or cut short."""
    def damage(edits, cut):
        out = bytearray(data)
        for position, value in edits:
            out[position % len(out)] = value
        return bytes(out[:max(1, cut)]) if cut is not None else bytes(out)
    return st.builds(damage, st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=6),
                     st.one_of(st.none(), st.integers(1, len(data))))


IMAGE_BYTES = [PNG, encode(pattern(62, size=(20, 16)), "JPEG"), encode(pattern(63, size=(20, 16)), "GIF"),
               encode(pattern(64, size=(20, 16)), "TIFF"), encode(pattern(65, size=(20, 16)), "BMP"),
               encode(pattern(66, size=(20, 16)), "WEBP")]
raw_bytes = st.one_of(st.binary(max_size=300), st.sampled_from(IMAGE_BYTES).flatmap(mutated),
                      st.text(max_size=60).map(str.encode))


# ---- the properties ---------------------------------------------------------------------------------------

def expected_lines(body: bytes) -> int:
    """How many records a JSON Lines or CSV body holds: one per line, a final newline adding none."""
    lines = body.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    return len(lines)


def check(response, route: str, lines_sent=None) -> None:
    status, text = response.status_code, response.get_data().decode("utf-8", "replace")
    event(f"status {status}")  # pytest --hypothesis-show-statistics shows how often each status came
    assert status < 500 or status == 503, f"{status}: {text[:500]}"
    if status != 200:
        assert response.mimetype == "application/json", f"{status} {response.mimetype}: {text[:300]}"
        error = response.get_json()["error"]
        if route in WEAVIATE_ROUTES:
            assert isinstance(error, str) and error, text[:300]
            event(f"error {error[:20]}")
            return
        if route in OPENAI_ROUTES:
            assert error["type"] in ("invalid_request_error", "server_error") and "param" in error, text[:300]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), text[:300]
        assert isinstance(error.get("field", ""), str)
        if status == 503:
            assert error["code"] in UNAVAILABLE_CODES, text[:300]
        event(f"error {error['code']}")
        return
    assert response.mimetype in DOCUMENTED_200[route], response.mimetype
    data = response.get_data()
    if response.mimetype == "application/x-npy":
        assert np.load(io.BytesIO(data), allow_pickle=False).dtype == np.float32
        return
    if response.mimetype == "application/json":
        answers = json.loads(data)
    elif response.mimetype == "application/jsonlines":
        answers = [json.loads(line) for line in data.split(b"\n")] if data else []
    else:
        answers = list(csv.reader(io.StringIO(text))) if text else []
    if lines_sent is not None:
        assert isinstance(answers, list) and len(answers) == lines_sent, (lines_sent, text[:500])
        for answer in answers:
            if isinstance(answer, dict) and "error" in answer:
                assert isinstance(answer["error"]["code"], str) and isinstance(answer["error"]["message"], str)


def sent(app, route, data: bytes, content_type, accept=None, attributes=None):
    """The answer to `data` on `route`, with the Accept and custom attributes headers when not None."""
    return post(app.test_client(), route, data, content_type, Accept=accept,
                **{"X-Amzn-SageMaker-Custom-Attributes": attributes})


@fuzz(500)
@given(body=bodies, accept=accepts, attributes=custom_attributes)
def test_any_request_body_on_invocations_gets_a_clear_answer(app, body, accept, attributes):
    response = sent(app, "/invocations", json.dumps(body).encode(), "application/json", accept, attributes)
    check(response, "/invocations")


@fuzz(450)
@given(route_and_body=st.tuples(st.sampled_from(sorted(ROUTE_BODIES)), st.booleans()).flatmap(lambda pick: st.tuples(
           st.just(pick[0]), ROUTE_BODIES[pick[0]].flatmap(perturbed) if pick[1] else bodies)),
       accept=accepts, attributes=custom_attributes)
def test_any_request_body_on_the_seed_and_integration_routes_gets_a_clear_answer(app, route_and_body, accept,
                                                                                 attributes):
    route, body = route_and_body
    check(sent(app, route, json.dumps(body).encode(), "application/json", accept, attributes), route)


@fuzz(300)
@given(content_type=st.sampled_from(["application/json", "application/jsonlines", "text/csv", "image/png",
                                     "application/json; charset=utf-16", "application/json; charset=utf-7"]),
       data=raw_bytes, route=st.sampled_from(["/invocations"] * 3 + SEED_ROUTES + OPENAI_ROUTES + WEAVIATE_ROUTES))
def test_any_bytes_under_every_content_type_get_a_clear_answer(app, content_type, data, route):
    records = content_type in ("application/jsonlines", "text/csv") and route == "/invocations"
    check(sent(app, route, data, content_type), route, expected_lines(data) if records else None)


@fuzz(150)
@given(lines=st.lists(st.one_of(bodies.map(lambda b: json.dumps(b).encode()),
                                item_records.map(lambda r: json.dumps(r).encode()),
                                st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" "))), max_size=5),
       trailing_newline=st.booleans(), accept=accepts, attributes=custom_attributes)
def test_json_lines_get_one_answer_per_line(app, lines, trailing_newline, accept, attributes):
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    response = sent(app, "/invocations", data, "application/jsonlines", accept, attributes)
    check(response, "/invocations", expected_lines(data))


@fuzz(120)
@given(lines=st.lists(st.one_of(texts, images.filter(lambda s: "\n" not in s),
                                st.sampled_from(VALID_IMAGES[2:]), st.just('"quoted, with a comma"')), max_size=5),
       accept=accepts, attributes=custom_attributes)
def test_csv_gets_one_answer_per_line(app, lines, accept, attributes):
    data = "\n".join(line.replace("\n", " ") for line in lines).encode()
    check(sent(app, "/invocations", data, "text/csv", accept, attributes), "/invocations", expected_lines(data))
