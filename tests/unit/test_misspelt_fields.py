"""The misspelling rule of /invocations: a body no format matches, or a field close to one a format knows,
is a 400 that says what was probably meant; other unknown fields keep the leniency of each format's
original, and the earlier systems' own routes behave as their originals did."""
from __future__ import annotations

import numpy as np
import pytest

from http_helper import post
from images import b64, pattern

TEXTS = ["a photo of a dog", "a red car"]


def error_of(response, status=400) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


@pytest.mark.parametrize("body, field, meant", [
    ({"taks": "embed", "texts": TEXTS}, "taks", "task"),  # was read as OpenCLIP as a Service's /embed
    ({"Task": "embed", "texts": TEXTS, "normalize": False}, "Task", "task"),  # and answered un-normalised
    ({"texts": TEXTS, "normalise": False}, "normalise", "normalize"),  # was ignored: normalised anyway
    ({"task": "embed", "texts": TEXTS, "normalise": False}, "normalise", "normalize"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}], "top_K": 1}, "top_K", "top_k"),
    ({"images": [b64(pattern(1))], "clases": ["cat", "dog"]}, "clases", "classes"),
    ({"text": "red sofa", "Image": b64(pattern(1))}, "Image", "image"),
])
def test_a_misspelt_field_on_invocations_is_a_400_naming_what_it_probably_meant(client, body, field, meant):
    error = error_of(post(client, "/invocations", body))
    assert error["code"] == "unknown_field"
    assert error["field"] == field
    assert f"did you mean '{meant}'?" in error["message"]


def test_a_body_no_format_matches_is_a_400_naming_every_format(client):
    error = error_of(post(client, "/invocations", {"hello": "world"}))
    assert error["code"] == "unknown_format"
    for shape in ('"task": "embed" | "rank" | "classify"', '{"queries", "candidates"}', '{"images", "classes"}',
                  '{"texts"}', '{"text" and/or "image"}', "a list of items"):
        assert shape in error["message"]
    assert "keys: hello" in error["message"]


def test_the_task_format_refuses_an_unknown_field_even_when_it_is_not_close_to_any(client):
    error = error_of(post(client, "/invocations", {"task": "embed", "texts": TEXTS, "colour": "red"}))
    assert error["code"] == "unknown_field" and error["field"] == "colour"


def test_seed003_extras_its_original_ignored_are_still_ignored_on_invocations(client):
    body = {"images": [b64(pattern(2))], "classes": [["cat", 1], ["dog", 0]]}
    plain = post(client, "/invocations", body)
    extra = post(client, "/invocations", {**body, "request_id": "abc-1", "source": "camera 3"})
    assert plain.status_code == extra.status_code == 200
    assert extra.get_json() == plain.get_json()


def test_the_earlier_systems_own_routes_ignore_unknown_fields_as_their_originals_did(client, reference):
    # OpenCLIP as a Service's /embed never knew `normalise`: it answered normalised vectors, and still does.
    answer = post(client, "/embed", {"texts": TEXTS, "normalise": False})
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.get_json()["embeddings"], reference.texts(TEXTS), atol=1e-5)
