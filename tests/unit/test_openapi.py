"""The OpenAPI document (container/clip_sagemaker/openapi.json): valid OpenAPI 3.1, covering exactly the
routes the app serves, served at GET /openapi.json, and true to the code: its examples get the documented
answers, its schemas accept what the code accepts, and it lists every error code the code can produce."""
from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from http_helper import post
from static_server import serve_files

PACKAGE = Path(__file__).resolve().parents[2] / "container" / "clip_sagemaker"
DOC = json.loads((PACKAGE / "openapi.json").read_text(encoding="utf-8"))
SCHEMAS = DOC["components"]["schemas"]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}  # Flask adds these to every route by itself
PRODUCIBLE = ("application/json", "application/jsonlines", "application/x-npy")
URL_MARK = "x-requires-url-fetch"


def deref(ref: str) -> Any:
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]  # JSON Pointer escapes
    return node


def follow(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = deref(node["$ref"])
    return node


def reachable_refs(node: Any, seen: set[str] | None = None) -> set[str]:
    """Every component a schema refers to, directly or through other components."""
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and value not in seen:
                seen.add(value)
                reachable_refs(deref(value), seen)
            else:
                reachable_refs(value, seen)
    elif isinstance(node, list):
        for value in node:
            reachable_refs(value, seen)
    return seen


def validator(schema: dict) -> Draft202012Validator:
    """OpenAPI 3.1 schemas are JSON Schema 2020-12 (`discriminator` is only a hint beside `oneOf`). The
    schema's "#/components/..." references resolve against a root that holds the document's components."""
    return Draft202012Validator({**schema, "components": DOC["components"]})


def assert_valid(instance: Any, schema: dict, what: str) -> None:
    errors = sorted(validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{what}: " + "; ".join(f"{list(e.path)}: {e.message[:300]}" for e in errors)


def operations(multi_model: bool = True) -> Iterator[tuple[str, str, dict]]:
    """Every operation; with `multi_model=False`, only those an endpoint of one model serves (the others
    are marked `x-multi-model`: SAGEMAKER_MULTI_MODEL=true adds them)."""
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and (multi_model or not operation.get("x-multi-model")):
                yield path, method, operation


def request_examples() -> Iterator[tuple[str, str, str, dict]]:
    for path, method, operation in operations(multi_model=False):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            for name, example in media.get("examples", {}).items():
                yield path, media_type, name, example


def example_params():
    return [pytest.param(path, media_type, example, id=f"{path} {media_type} {name}")
            for path, media_type, name, example in request_examples()]


def response_schema(path: str, status: str = "200", media_type: str = "application/json") -> dict:
    response = follow(DOC["paths"][path]["post"]["responses"][status])
    return response["content"][media_type]["schema"]


RECORD_TYPES = ("application/jsonlines", "text/csv")  # one request per line; answered one line per line


def encoded(media_type: str, value: Any) -> bytes:
    return value.encode() if media_type in RECORD_TYPES else json.dumps(value).encode()


def assert_keys_match(body: Any, schema_ref: str) -> None:
    """An object answer has exactly the documented required properties (all of them always present)."""
    schema = deref(schema_ref)
    if schema.get("type") == "object":
        assert isinstance(body, dict), body
        assert set(body) == set(schema["required"]), (schema_ref, sorted(body))
        assert set(schema["required"]) <= set(schema["properties"]), schema_ref


# ---- the document itself ----------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1():
    assert DOC["openapi"].startswith("3.1.")
    validate(DOC)


def served_routes(app) -> set[tuple[str, str]]:
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(path, method.lower()) for method in rule.methods - UNDOCUMENTED_METHODS}
    return served


def test_the_document_covers_exactly_the_routes_the_app_serves(app, settings):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    served = served_routes(app)
    assert {(path, method) for path, method, _ in operations(multi_model=False)} == served
    assert len(served) >= 9
    multi_model_app = create_app(settings.replace(multi_model=True), EngineSlot())
    assert {(path, method) for path, method, _ in operations()} == served_routes(multi_model_app)


def test_get_openapi_json_serves_the_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json() == DOC
    assert response.headers["X-Request-Id"]


def test_every_operation_documents_the_request_id_header_on_every_response():
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in follow(response).get("headers", {}), (path, method, status)


def test_every_example_in_the_document_fits_its_schema():
    checked = 0
    for path, method, operation in operations():
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(f"response {s}", follow(r)) for s, r in operation["responses"].items()]
        for where, body in bodies:
            for media_type, media in body.get("content", {}).items():
                if not media_type.endswith("json"):
                    continue
                for name, example in media.get("examples", {}).items():
                    assert_valid(example["value"], media["schema"], f"{method} {path} {where} {name}")
                    if "x-response-schema" in example:
                        assert deref(example["x-response-schema"])
                    checked += 1
    for name, schema in SCHEMAS.items():
        for i, value in enumerate(schema.get("examples", [])):
            assert_valid(value, {"$ref": f"#/components/schemas/{name}"}, f"schema {name} example {i}")
            checked += 1
    assert checked > 30


def test_documented_defaults_and_names_are_the_codes():
    from clip_sagemaker import app, pipeline, tasks

    for name in ("ClassifyRequest", "LabelledClassesRequest"):
        properties = SCHEMAS[name]["properties"]
        assert properties["prompt_template"]["default"] == tasks.DEFAULT_PROMPT_TEMPLATE
        assert properties["top_k"]["default"] == tasks.DEFAULT_TOP_K
        assert properties["margin"]["default"] == tasks.DEFAULT_MARGIN
        assert properties["logit_scale"]["default"] == tasks.DEFAULT_CLASSIFY_SCALE
    assert SCHEMAS["EmbedRequest"]["properties"]["normalize"]["default"] is True
    assert SCHEMAS["Seed000EmbedRequest"]["properties"]["normalize"]["default"] is True
    assert SCHEMAS["Seed001EmbeddingsRequest"]["properties"]["normalize"]["default"] is False
    parameters = DOC["components"]["parameters"]
    assert parameters["CustomAttributes"]["name"] == pipeline.CUSTOM_ATTRIBUTES_HEADER
    assert parameters["RequestId"]["name"] == app.REQUEST_ID_HEADER
    assert parameters["RequestId"]["schema"]["pattern"] == f"^{app._SAFE_REQUEST_ID.pattern}$"


# ---- the examples, through the app --------------------------------------------------------------------------

@contextlib.contextmanager
def sent(client, url_client, path, media_type, example):
    """Posts an example; its image URLs are answered by a server on 127.0.0.1 instead of the internet."""
    data = encoded(media_type, example["value"])
    if not example.get(URL_MARK):
        yield post(client, path, data, media_type)
        return
    urls = sorted(set(re.findall(rb"https?://[^\"\s]+", data)))
    files = {urlsplit(u.decode()).path: _image_example_bytes() for u in urls}
    with serve_files(files) as base:
        for url in urls:
            parts = urlsplit(url.decode())
            data = data.replace(url, f"{base}{parts.path}".encode())
        yield post(url_client, path, data, media_type)


@pytest.mark.parametrize("path, media_type, example", example_params())
def test_every_request_example_gets_the_documented_answer(client, url_client, path, media_type, example):
    with sent(client, url_client, path, media_type, example) as response:
        pass
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    if media_type in RECORD_TYPES:
        assert response.content_type == "application/jsonlines"
        lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
        assert len(lines) == len(example["value"].splitlines())
        for line in lines:
            assert "error" not in line, line
            line_schema = DOC["paths"][path]["post"]["responses"]["200"]["content"]["application/jsonlines"]["schema"]
            assert_valid(line, line_schema["x-line-schema"], "answer line")
        return
    assert response.content_type == "application/json"
    body = response.get_json()
    documented = response_schema(path)
    if "$ref" in documented:
        answer_ref = example.get("x-response-schema", documented["$ref"])
        assert answer_ref == documented["$ref"], "the example names another answer than the route's"
    else:
        answer_ref = example["x-response-schema"]  # a union answer: the example says which alternative
        assert answer_ref in reachable_refs(documented), f"{answer_ref} is not among {path}'s answers"
    assert_valid(body, {"$ref": answer_ref}, f"answer to {path} {example['summary']}")
    assert_valid(body, documented, f"answer to {path} {example['summary']} (route schema)")
    assert_keys_match(body, answer_ref)


@pytest.mark.parametrize("path, media_type, example", [
    p for p in example_params() if p.values[1] == "application/json" and isinstance(p.values[2]["value"], dict)])
def test_unknown_fields_are_refused_exactly_where_the_schema_says(client, url_client, path, media_type, example):
    body = {**copy.deepcopy(example["value"]), "not_a_field": 1}
    schema = DOC["paths"][path]["post"]["requestBody"]["content"][media_type]["schema"]
    schema_accepts = not list(validator(schema).iter_errors(body))
    with sent(client, url_client, path, media_type, {**example, "value": body}) as response:
        pass
    if schema_accepts:
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
    else:
        assert response.status_code == 400
        error = response.get_json()["error"]
        if isinstance(error, str):  # Weaviate's shape: the message alone
            assert error.startswith("unknown field(s) not_a_field"), error
            return
        extra = {"type": "invalid_request_error", "param": "not_a_field"} if "type" in error else {}  # OpenAI's
        assert error == {"code": "unknown_field", "field": "not_a_field", "message": error["message"], **extra}


def _image_example_bytes() -> bytes:
    return base64.b64decode(SCHEMAS["ImageInput"]["examples"][0])


@pytest.mark.parametrize("media_type", [
    t for t, m in DOC["paths"]["/invocations"]["post"]["requestBody"]["content"].items()
    if m["schema"] == {"$ref": "#/components/schemas/BinaryImage"}])
def test_documented_raw_image_content_types_are_embedded(client, media_type):
    response = post(client, "/invocations", _image_example_bytes(), media_type)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert_valid(response.get_json(), {"$ref": "#/components/schemas/EmbedResponse"}, media_type)
    assert len(response.get_json()["image_embeddings"]) == 1


@pytest.mark.parametrize("path", sorted(p for p, m, _ in operations(multi_model=False) if m == "post"))
def test_each_route_answers_exactly_the_documented_response_types(client, path):
    documented = set(follow(DOC["paths"][path]["post"]["responses"]["200"])["content"])
    media_type, example = next((t, e) for p, t, _, e in request_examples()
                               if p == path and t == "application/json" and not e.get(URL_MARK))
    for accept in PRODUCIBLE:
        response = post(client, path, encoded(media_type, example["value"]), media_type, Accept=accept)
        if accept in documented:
            assert response.status_code == 200, (accept, response.get_data(as_text=True)[:300])
            assert response.content_type == accept
            if accept == "application/x-npy":
                assert np.load(io.BytesIO(response.data)).dtype == np.float32
        else:
            assert response.status_code == 406, accept
            error = response.get_json()["error"]
            assert error["code"] == "not_acceptable" if isinstance(error, dict) else "Accept" in error  # Weaviate's


# ---- errors ---------------------------------------------------------------------------------------------------

_CODE_PATTERNS = (
    re.compile(r'\bcode\s*=\s*"([a-z0-9_]+)"'),           # ApiError(..., code="x"), invalid(..., code="x")
    re.compile(r'\b[1-5]\d\d:\s*"([a-z0-9_]+)"'),          # {404: "not_found", ...}: HTTP status → code
    re.compile(r'\.get\(error\.code,\s*"([a-z0-9_]+)"\)'),  # the fallback code of other HTTP errors
)


def produced_error_codes() -> set[str]:
    codes = set()
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for pattern in _CODE_PATTERNS:
            codes |= set(pattern.findall(text))
    # Defaults of the error helpers, which call sites rely on without naming them.
    from clip_sagemaker.errors import ApiError, invalid
    codes |= {ApiError("m").code, invalid("f", "m").code}
    return codes


def test_every_error_code_the_code_produces_is_documented():
    produced = produced_error_codes()
    assert {"invalid_request", "invalid_field", "not_found", "internal_error", "not_ready"} <= produced
    documented_code = SCHEMAS["Error"]["properties"]["error"]["properties"]["code"]
    missing = {c for c in produced
               if c not in documented_code.get("enum", []) and f"`{c}`" not in documented_code["description"]}
    assert not missing, f"error codes missing from the Error schema: {sorted(missing)}"
    stale = set(documented_code["enum"]) - produced
    assert not stale, f"the Error schema lists codes the code no longer produces: {sorted(stale)}"


def test_an_error_answer_fits_the_error_schema(client):
    response = post(client, "/invocations", b'{"task": "embed", "texts": ["ok"], "normalise": false}',
                    "application/json")
    assert response.status_code == 400
    assert_valid(response.get_json(), {"$ref": "#/components/schemas/Error"}, "an error answer")
    response = client.get("/nope")
    assert_valid(response.get_json(), {"$ref": "#/components/schemas/Error"}, "a 404 answer")
