"""Request decoding by Content-Type, response type negotiation by Accept, and JSON encoding."""
from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

from clip_sagemaker.codecs import (CSV, JSON, JSONLINES, choose_response_type, decode_request, encode_answer_stream,
                                   encode_csv_embeddings, encode_json, encode_json_lines, encode_npy, iter_lines,
                                   media_type, parse_custom_attributes, request_kind)
from clip_sagemaker.errors import ApiError

# --- media_type ---------------------------------------------------------------------------------------------


def test_media_type_splits_type_and_parameters():
    assert media_type("application/json; charset=utf-8") == ("application/json", {"charset": "utf-8"})


def test_media_type_lowercases_type_and_parameter_names_and_unquotes_values():
    assert media_type('Application/JSON ; Charset="UTF-16" ;q=0.5') == (
        "application/json", {"charset": "UTF-16", "q": "0.5"})


def test_media_type_without_parameters():
    assert media_type("text/json") == ("text/json", {})


@pytest.mark.parametrize("header", [None, ""])
def test_media_type_of_missing_header_is_empty(header):
    assert media_type(header) == ("", {})


def test_media_type_ignores_parameters_without_a_value():
    assert media_type("application/json; foo; a=b") == ("application/json", {"a": "b"})


# --- decode_request -----------------------------------------------------------------------------------------

DOC = {"inputs": ["a cat", "ünïcödé"], "n": 2}


def test_json_without_charset_is_decoded():
    assert decode_request(orjson.dumps(DOC), "application/json") == DOC


def test_json_with_utf8_charset_is_decoded():
    assert decode_request(orjson.dumps(DOC), "application/json; charset=UTF-8") == DOC


@pytest.mark.parametrize("content_type", ["text/json", "application/vnd.api+json"])
def test_other_json_media_types_are_decoded(content_type):
    assert decode_request(orjson.dumps(DOC), content_type) == DOC


@pytest.mark.parametrize("content_type", [None, ""])
def test_missing_content_type_is_treated_as_json(content_type):
    assert decode_request(orjson.dumps(DOC), content_type) == DOC


def test_form_urlencoded_is_treated_as_json():
    # curl -d sends this Content-Type by default; the body is still the JSON the user typed.
    assert decode_request(orjson.dumps(DOC), "application/x-www-form-urlencoded") == DOC


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", "latin-1"])
def test_body_in_another_charset_is_transcoded(charset):
    codec = charset.lower()
    doc = {"text": "café"}
    body = '{"text": "café"}'.encode(codec)
    assert decode_request(body, f"application/json; charset={charset}") == doc


def test_unknown_charset_is_a_malformed_json_error():
    with pytest.raises(ApiError) as caught:
        decode_request(b'{"a": 1}', "application/json; charset=klingon")
    assert caught.value.code == "malformed_json"
    assert caught.value.status == 400
    assert "klingon" in caught.value.message


@pytest.mark.parametrize("body", [b"", b"   \n\t"])
def test_empty_body_is_an_empty_body_error(body):
    with pytest.raises(ApiError) as caught:
        decode_request(body, "application/json")
    assert caught.value.code == "empty_body"
    assert caught.value.status == 400


@pytest.mark.parametrize("body", [b"{", b'{"a": }', b"not json", b"{'a': 1}", b'{"a": 1} trailing'])
def test_malformed_json_is_a_400_malformed_json_error(body):
    with pytest.raises(ApiError) as caught:
        decode_request(body, "application/json")
    assert caught.value.code == "malformed_json"
    assert caught.value.status == 400
    assert caught.value.message.startswith("the body is not valid JSON")


@pytest.mark.parametrize("content_type", ["text/html", "application/x-npy", "text/plain; charset=utf-8"])
def test_unsupported_content_type_is_a_415(content_type):
    with pytest.raises(ApiError) as caught:
        request_kind(content_type)
    assert caught.value.status == 415
    assert caught.value.code == "unsupported_media_type"
    assert content_type in caught.value.message
    assert JSON in caught.value.message


# --- choose_response_type -----------------------------------------------------------------------------------

@pytest.mark.parametrize("accept", [None, "", "  ", "*/*", "application/*", "application/json",
                                    "application/json; charset=utf-8", "text/html, */*;q=0.1",
                                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"])
def test_json_is_chosen_for_missing_wildcard_or_json_accept(accept):
    assert choose_response_type(accept) == "application/json"


def test_higher_q_value_wins_over_earlier_position():
    producible = ("application/json", "text/csv")
    assert choose_response_type("application/json;q=0.5, text/csv", producible) == "text/csv"
    assert choose_response_type("text/csv;q=0.2, application/json;q=0.9", producible) == "application/json"


def test_equal_q_values_keep_the_clients_order():
    producible = ("application/json", "text/csv")
    assert choose_response_type("text/csv, application/json", producible) == "text/csv"
    assert choose_response_type("application/json, text/csv", producible) == "application/json"


def test_wildcard_picks_our_first_producible_type():
    producible = ("application/json", "text/csv")
    assert choose_response_type("text/html, */*;q=0.1", producible) == "application/json"


@pytest.mark.parametrize("accept", ["application/json;q=0", "*/*;q=0", "text/html, application/json;q=0.0",
                                    "application/json;q=0, text/csv"])
def test_q_zero_excludes_a_type(accept):
    with pytest.raises(ApiError) as caught:
        choose_response_type(accept)
    assert caught.value.status == 406
    assert caught.value.code == "not_acceptable"


def test_q_zero_excluded_type_lets_a_lower_one_win():
    producible = ("application/json", "text/csv")
    assert choose_response_type("application/json;q=0, text/csv;q=0.1", producible) == "text/csv"


def test_a_more_specific_range_refusing_a_type_wins_over_a_wildcard():
    # The client refuses JSON by name and takes anything else: JSON must not be the answer.
    assert choose_response_type("application/json;q=0, */*") == "application/jsonlines"
    assert choose_response_type("*/*, application/json;q=0, application/jsonlines;q=0") == "application/x-npy"
    assert choose_response_type("application/*;q=0.5, application/x-npy") == "application/x-npy"


def test_a_type_wildcard_matches_the_type_we_produce_under_it():
    producible = ("application/jsonlines", "application/json", "text/csv")
    assert choose_response_type("text/*", producible) == "text/csv"
    assert choose_response_type("text/*;q=0.4, application/json;q=0.5", producible) == "application/json"


def test_a_json_lines_alias_is_answered_as_json_lines():
    assert choose_response_type("application/x-ndjson;q=0.9, application/json;q=0.8") == "application/jsonlines"
    assert choose_response_type("application/jsonlines;q=0, application/json") == "application/json"


@pytest.mark.parametrize("accept", ["text/csv", "text/html", "text/*", "image/png, application/xml"])
def test_unsupported_accept_is_a_406_not_acceptable(accept):
    with pytest.raises(ApiError) as caught:
        choose_response_type(accept)
    assert caught.value.status == 406
    assert caught.value.code == "not_acceptable"
    assert accept in caught.value.message
    assert "application/json" in caught.value.message


# --- encode_json --------------------------------------------------------------------------------------------

def test_encode_json_serialises_numpy_float32_arrays():
    vectors = np.array([[0.5, -1.25, 3.0], [0.0, 2.5, -0.125]], dtype=np.float32)
    encoded = encode_json({"embeddings": vectors, "model": "tiny"})
    assert isinstance(encoded, bytes)
    decoded = orjson.loads(encoded)
    assert decoded == {"embeddings": [[0.5, -1.25, 3.0], [0.0, 2.5, -0.125]], "model": "tiny"}


def test_encode_json_float32_values_round_trip_to_the_same_float32():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4, 16)).astype(np.float32)
    decoded = np.array(orjson.loads(encode_json(vectors)), dtype=np.float32)
    np.testing.assert_array_equal(decoded, vectors)


def test_encode_json_serialises_numpy_scalars_and_plain_values():
    payload = {"p": np.float32(0.25), "n": np.int64(7), "ok": True, "none": None, "s": "é"}
    assert orjson.loads(encode_json(payload)) == {"p": 0.25, "n": 7, "ok": True, "none": None, "s": "é"}


def test_encode_json_serialises_non_contiguous_arrays():
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert not matrix.T.flags["C_CONTIGUOUS"]
    assert orjson.loads(encode_json({"t": matrix.T, "col": matrix[:, 1]})) == {
        "t": [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], "col": [1.0, 4.0]}


def test_encode_json_refuses_values_json_cannot_hold():
    with pytest.raises(TypeError):
        encode_json({"x": object()})


def test_json_with_a_utf8_byte_order_mark_is_accepted():
    from clip_sagemaker.codecs import decode_request
    assert decode_request(b'\xef\xbb\xbf{"task": "embed"}', "application/json") == {"task": "embed"}


@pytest.mark.parametrize("content_type, kind", [
    ("application/json", "json"), ("application/json; charset=utf-8", "json"), (None, "json"),
    ("application/jsonlines", "jsonlines"), ("application/x-jsonlines", "jsonlines"),
    ("application/jsonl", "jsonlines"), ("image/jpeg", "image"), ("image/png", "image"),
    ("image/webp", "image"), ("application/x-image", "image"),
])
def test_request_kind_follows_the_content_type(content_type, kind):
    assert request_kind(content_type) == kind


def split_lines(body: bytes, block_bytes: int = 1 << 20) -> list[bytes]:
    return list(iter_lines(io.BytesIO(body).read, block_bytes))


@pytest.mark.parametrize("block_bytes", [1, 3, 1 << 20])
def test_json_lines_split_into_records_without_a_phantom_last_line(block_bytes):
    assert split_lines(b'{"a": 1}\n{"b": 2}\n', block_bytes) == [b'{"a": 1}', b'{"b": 2}']
    assert split_lines(b'{"a": 1}\r\n\n{"b": 2}', block_bytes) == [b'{"a": 1}', b"", b'{"b": 2}']
    assert split_lines(b'{"a": 1}\n\n', block_bytes) == [b'{"a": 1}', b""]
    assert split_lines(b'{"a": 1}\n  ', block_bytes) == [b'{"a": 1}']
    assert split_lines(b"", block_bytes) == []


@pytest.mark.parametrize("accept, whole", [
    (JSONLINES, encode_json_lines), (JSON, encode_json),
    (CSV, encode_csv_embeddings),
])
def test_answers_streamed_in_chunks_are_the_bytes_of_the_whole_list(accept, whole):
    answers = [{"id": i, "embedding": np.arange(3, dtype=np.float32) + i} for i in range(7)]
    answers[4] = {"id": 4, "error": {"code": "empty_text", "message": "the text is empty"}}
    chunks = [answers[:3], [], answers[3:4], answers[4:]]
    assert b"".join(encode_answer_stream(chunks, accept)) == whole(answers)
    assert b"".join(encode_answer_stream([], accept)) == whole([])


def test_custom_attributes_become_typed_options():
    assert parse_custom_attributes("normalize=false, top_k=5;margin=0.1,prompt_template=a {label}") == {
        "normalize": False, "top_k": 5, "margin": 0.1, "prompt_template": "a {label}"}
    assert parse_custom_attributes("trace-id-123,c000b4f9-1") == {}
    assert parse_custom_attributes(None) == {}


def test_accept_jsonlines_and_npy_are_producible():
    assert choose_response_type("application/jsonlines") == "application/jsonlines"
    assert choose_response_type("application/x-jsonlines") == "application/jsonlines"
    assert choose_response_type("application/x-npy") == "application/x-npy"


def test_npy_encoding_round_trips_through_numpy_load():
    import io
    import numpy as np
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(np.load(io.BytesIO(encode_npy(array))), array)
