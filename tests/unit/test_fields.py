"""protocols/fields.py: request field validation, each error naming its field path."""
from __future__ import annotations

import pytest

from clip_sagemaker.errors import ApiError
from clip_sagemaker.inputs import ImageSource
from clip_sagemaker.protocols import fields


def L(max_items: int) -> fields.Limits:
    return fields.Limits(max_items=max_items)


def _error(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- classes ------------------------------------------------------------------------------------------------

def test_labelled_pairs_give_labels_and_class_ids():
    labels, ids = fields.classes({"classes": [["cat", 1], ["dog", 0], ["boat", "vehicle"], ["tree", True]]}, L(10))
    assert labels == ("cat", "dog", "boat", "tree")
    assert ids == (1, 0, "vehicle", True)


def test_plain_strings_give_labels_and_no_class_ids():
    labels, ids = fields.classes({"classes": ["cat", "dog"]}, L(10))
    assert labels == ("cat", "dog")
    assert ids is None


def test_null_class_id_is_kept():
    assert fields.classes({"classes": [["cat", None], ["dog", 1.5]]}, L(10)) == (("cat", "dog"), (None, 1.5))


def test_plain_string_after_pairs_is_an_error_naming_its_index():
    error = _error(fields.classes, {"classes": [["cat", 1], "dog"]}, L(10))
    assert error.field == "classes[1]"
    assert error.status == 400
    assert "[label, class_id]" in error.message


def test_pair_after_plain_strings_is_a_mixing_error_naming_its_index():
    error = _error(fields.classes, {"classes": ["cat", "dog", ["boat", 1]]}, L(10))
    assert error.field == "classes[2]"
    assert "mixes" in error.message


@pytest.mark.parametrize("bad", [["cat"], ["cat", 1, 2], []])
def test_pair_of_the_wrong_length_is_an_error_naming_its_index(bad):
    error = _error(fields.classes, {"classes": [["dog", 0], bad]}, L(10))
    assert error.field == "classes[1]"
    assert error.code == "invalid_field"


@pytest.mark.parametrize("class_id", [[1], {"id": 1}])
def test_class_id_that_is_a_list_or_object_is_an_error_naming_it(class_id):
    error = _error(fields.classes, {"classes": [["cat", 0], ["dog", class_id]]}, L(10))
    assert error.field == "classes[1][1]"


@pytest.mark.parametrize("body, field", [
    ({"classes": [["cat", 0], ["", 1]]}, "classes[1][0]"),
    ({"classes": [["cat", 0], ["  ", 1]]}, "classes[1][0]"),
    ({"classes": ["cat", ""]}, "classes[1]"),
    ({"classes": ["\t"]}, "classes[0]"),
])
def test_empty_label_is_an_empty_text_error(body, field):
    error = _error(fields.classes, body, L(10))
    assert error.code == "empty_text"
    assert error.field == field
    assert error.message.startswith(f"{field}: ")


def test_label_that_is_not_a_string_is_an_error_naming_it():
    error = _error(fields.classes, {"classes": [[5, 0]]}, L(10))
    assert error.field == "classes[0][0]"
    assert "a number" in error.message
    error = _error(fields.classes, {"classes": ["cat", 3]}, L(10))
    assert error.field == "classes[1]"


def test_missing_or_empty_classes_are_refused():
    assert _error(fields.classes, {}, L(10)).code == "missing_field"
    assert _error(fields.classes, {"classes": []}, L(10)).code == "empty_list"
    assert _error(fields.classes, {"classes": "cat"}, L(10)).code == "invalid_field"


def test_too_many_classes_is_a_413():
    error = _error(fields.classes, {"classes": ["a", "b", "c"]}, L(2))
    assert error.status == 413
    assert error.code == "too_many_items"


# --- items_list / texts / images ----------------------------------------------------------------------------

def test_items_list_returns_the_list_within_the_limit():
    assert fields.items_list({"texts": ["a", "b"]}, "texts", L(2)) == ["a", "b"]


def test_items_list_over_the_limit_is_a_413_too_many_items():
    error = _error(fields.items_list, {"texts": ["a", "b", "c"]}, "texts", L(2))
    assert error.status == 413
    assert error.code == "too_many_items"
    assert error.field == "texts"
    assert "3 items" in error.message and "2" in error.message and "MAX_ITEMS" in error.message


def test_list_limit_applies_to_optional_lists_and_names_the_field():
    error = _error(fields.as_list, ["x"] * 5, "inputs.images", L(4), required=False)
    assert error.status == 413
    assert error.field == "inputs.images"


def test_items_list_missing_required_field():
    error = _error(fields.items_list, {}, "texts", L(5))
    assert error.code == "missing_field"
    assert error.field == "texts"
    error = _error(fields.items_list, {"texts": None}, "texts", L(5))
    assert error.code == "missing_field"


def test_items_list_optional_missing_field_is_empty():
    assert fields.items_list({}, "images", L(5), required=False) == []
    assert fields.items_list({"images": None}, "images", L(5), required=False) == []
    assert fields.items_list({"images": []}, "images", L(5), required=False) == []


def test_items_list_rejects_a_non_list_and_an_empty_required_list():
    error = _error(fields.items_list, {"texts": "a cat"}, "texts", L(5))
    assert error.field == "texts"
    assert "a string" in error.message
    assert _error(fields.items_list, {"texts": []}, "texts", L(5)).code == "empty_list"


def test_texts_names_each_bad_item_by_index():
    assert fields.texts({"texts": ["a", "b"]}, "texts", L(5)) == ("a", "b")
    error = _error(fields.texts, {"texts": ["a", "b", 3]}, "texts", L(5))
    assert error.field == "texts[2]"
    assert _error(fields.texts, {"texts": ["a", " "]}, "texts", L(5)).code == "empty_text"


def test_images_become_sources_carrying_their_field_paths():
    sources = fields.images({"images": ["AAAA", "data:image/png;base64,BBBB"]}, "images", L(5))
    assert sources == (ImageSource("AAAA", "images[0]"), ImageSource("data:image/png;base64,BBBB", "images[1]"))
    error = _error(fields.images, {"images": ["AAAA", {"url": "x"}]}, "images", L(5))
    assert error.field == "images[1]"
    assert "an object" in error.message


# --- scalars ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, False])
def test_integer_rejects_booleans(value):
    error = _error(fields.integer, {"top_k": value}, "top_k", 3, 1)
    assert error.field == "top_k"
    assert "a boolean" in error.message


@pytest.mark.parametrize("value", [2.0, "3"])
def test_integer_rejects_non_integers(value):
    assert _error(fields.integer, {"top_k": value}, "top_k", 3, 1).field == "top_k"


def test_null_options_mean_their_defaults():
    assert fields.integer({"top_k": None}, "top_k", 3, 1) == 3
    assert fields.boolean({"normalize": None}, "normalize", True) is True
    assert fields.prompt_template({"prompt_template": None}, "prompt_template", "a {}") == "a {}"


def test_integer_default_value_and_minimum():
    assert fields.integer({}, "top_k", 3, 1) == 3
    assert fields.integer({"top_k": 7}, "top_k", 3, 1) == 7
    error = _error(fields.integer, {"top_k": 0}, "top_k", 3, 1)
    assert "at least 1" in error.message


def test_number_accepts_ints_and_floats_in_range_and_rejects_booleans():
    assert fields.number({"margin": 1}, "margin", 0.02, 0.0, 1.0) == 1.0
    assert fields.number({}, "margin", 0.02, 0.0, 1.0) == 0.02
    assert fields.number({"margin": None}, "margin", None, 0.0, 1.0) is None
    assert _error(fields.number, {"margin": True}, "margin", 0.02, 0.0, 1.0).field == "margin"
    error = _error(fields.number, {"margin": 1.5}, "margin", 0.02, 0.0, 1.0)
    assert "between 0 and 1" in error.message


def test_boolean_accepts_only_booleans():
    assert fields.boolean({}, "normalize", True) is True
    assert fields.boolean({"normalize": False}, "normalize", True) is False
    error = _error(fields.boolean, {"normalize": 1}, "normalize", True)
    assert error.field == "normalize"
    assert "a number" in error.message


# --- prompt_template ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["a photo of a {label}", "a photo of a {}", "{label}", "{} and {label}"])
def test_prompt_template_with_a_placeholder_is_accepted(template):
    assert fields.prompt_template({"prompt_template": template}, "prompt_template", "x {label}") == template


def test_prompt_template_default_is_used_when_absent():
    assert fields.prompt_template({}, "prompt_template", "a photo of a {label}") == "a photo of a {label}"


def test_prompt_template_without_placeholder_is_an_error():
    error = _error(fields.prompt_template, {"prompt_template": "a photo"}, "prompt_template", "{label}")
    assert error.field == "prompt_template"
    assert "{label}" in error.message and "{}" in error.message


@pytest.mark.parametrize("template", ["a photo of a {name}", "a {1}", "a {label", "a photo of a {label!z}",
                                      "a {label.upper.x}", "a {label.foo}", "a {0[x]}", "a {label:d}"])
def test_malformed_prompt_template_is_an_error_not_a_crash(template):
    error = _error(fields.prompt_template, {"prompt_template": template}, "prompt_template", "{label}")
    assert error.field == "prompt_template"
    assert error.status == 400


def test_prompt_template_must_be_a_string():
    error = _error(fields.prompt_template, {"prompt_template": 3}, "prompt_template", "{label}")
    assert "a number" in error.message


# --- objects ------------------------------------------------------------------------------------------------

def test_reject_unknown_names_the_field():
    error = _error(fields.reject_unknown, {"texts": [], "imagez": [], "topk": 3}, {"texts", "images"}, "embed")
    assert error.code == "unknown_field"
    assert error.field == "imagez"  # the first unknown field, alphabetically
    assert "imagez" in error.message and "topk" in error.message
    assert "allowed: images, texts" in error.message
    assert "embed" in error.message
    assert "'imagez': did you mean 'images'?" in error.message


def test_reject_unknown_accepts_known_fields():
    fields.reject_unknown({"texts": [], "images": []}, {"texts", "images"}, "embed")
    fields.reject_unknown({}, {"texts"}, "embed")


@pytest.mark.parametrize("body, kind", [([1], "a list"), ("x", "a string"), (None, "null"), (3, "a number")])
def test_require_object_names_what_was_sent(body, kind):
    error = _error(fields.require_object, body, "classify")
    assert error.code == "invalid_request"
    assert kind in error.message and "classify" in error.message


def test_require_object_returns_the_dict():
    body = {"a": 1}
    assert fields.require_object(body, "x") is body


@pytest.mark.parametrize("value, name", [(None, "null"), (True, "a boolean"), (1, "a number"), (1.5, "a number"),
                                         ("s", "a string"), ([], "a list"), ({}, "an object"),
                                         ((1,), "tuple")])
def test_type_name_describes_json_values(value, name):
    assert fields.type_name(value) == name


def test_a_text_over_the_character_limit_is_413_naming_it():
    limits = fields.Limits(max_items=5, max_text_chars=10)
    assert fields.text("short", "texts[0]", limits) == "short"
    error = _error(fields.text, "x" * 11, "texts[1]", limits)
    assert (error.status, error.code, error.field) == (413, "text_too_long", "texts[1]")
    assert "MAX_TEXT_CHARS" in error.message
