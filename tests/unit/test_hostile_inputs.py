"""Hostile and broken input through the Flask test client on the tiny model: every image format that should
decode gives open_clip's own embedding, everything else a clear 4xx naming the item (on the integrations'
routes too, in their clients' error shapes), and the worker is fine after all of it. The corpus is generated
here; no binary fixtures.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from http_helper import post
from images import encode, pattern

IMAGE = pattern(40, size=(96, 64))  # JPEGs of it decode in draft mode at 48x32 (>= the model's 32)
OTHER = pattern(41, size=(96, 64))
DRAFT = 32  # the tiny model's input size: the server decodes JPEGs in draft mode at it
MAX_IMAGE_BYTES = 200_000  # the hostile app's MAX_IMAGE_MB, in bytes (the setting's MiB unit is too big to test)


@pytest.fixture(scope="module")
def hostile(settings, engine):
    """A client of an app over the tiny model whose base64 images may be at most MAX_IMAGE_BYTES."""
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import Engine
    from clip_sagemaker.readiness import EngineSlot

    small = settings.replace(max_image_bytes=MAX_IMAGE_BYTES)
    small_engine = Engine(engine.model, small)
    yield create_app(small, EngineSlot(small_engine)).test_client()
    small_engine.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.content_type == "application/json"
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    return error


def embedding_of(response) -> np.ndarray:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return np.asarray(response.get_json()["image_embeddings"][0])


# ---- the corpus: images that decode ---------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _draft_decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (DRAFT, DRAFT))
    return image


def jpeg_exif_orientation_6() -> tuple[bytes, Image.Image]:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(IMAGE, "JPEG", quality=95, exif=exif)
    # Independently of the server's code: the stored pixels, turned a quarter clockwise.
    return data, _draft_decoded(data).convert("RGB").transpose(Image.Transpose.ROTATE_270)


def png_16_bit_greyscale() -> tuple[bytes, Image.Image]:
    tones = np.asarray(IMAGE.convert("L")).astype(np.uint16)
    image = Image.fromarray(tones * 256)  # multiples of 256: scaling to 8 bits is exact
    assert image.mode == "I;16"
    return encode(image), Image.fromarray(tones.astype(np.uint8), "L").convert("RGB")


def png_palette_with_transparency() -> bytes:
    palette = IMAGE.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(palette, transparency=0)


def rgba() -> bytes:
    image = IMAGE.copy()
    image.putalpha(Image.linear_gradient("L").resize(IMAGE.size))
    return encode(image)


def animated_gif() -> bytes:
    return encode(IMAGE, "GIF", save_all=True, append_images=[OTHER], duration=100, loop=0)


# id -> (bytes, the image the server must see, or None: the bytes decoded the plain way, JPEGs in draft mode)
DECODABLE = {
    "jpeg_baseline": (encode(IMAGE, "JPEG", quality=90), None),
    "jpeg_progressive": (encode(IMAGE, "JPEG", quality=90, progressive=True), None),
    "jpeg_cmyk": (encode(IMAGE.convert("CMYK"), "JPEG", quality=90), None),
    "jpeg_exif_orientation_6": jpeg_exif_orientation_6(),
    "png_rgb": (encode(IMAGE), None),
    "png_palette": (encode(IMAGE.convert("P")), None),
    "png_palette_transparency": (png_palette_with_transparency(), None),
    "png_rgba": (rgba(), None),
    "png_16_bit_greyscale": png_16_bit_greyscale(),
    "png_greyscale": (encode(IMAGE.convert("L")), None),
    "png_1_bit": (encode(IMAGE.convert("1")), None),
    "webp_lossy": (encode(IMAGE, "WEBP", quality=80), None),
    "webp_lossless": (encode(IMAGE, "WEBP", lossless=True), None),
    "gif_animated": (animated_gif(), None),
    "bmp": (encode(IMAGE, "BMP"), None),
    "tiff": (encode(IMAGE, "TIFF"), None),
    "tiff_lzw": (encode(IMAGE, "TIFF", compression="tiff_lzw"), None),
}


def _expected(reference, case: str) -> np.ndarray:
    data, seen = DECODABLE[case]
    return reference.images([seen if seen is not None else data], draft_size=DRAFT)[0]


@pytest.mark.parametrize("case", sorted(DECODABLE))
def test_every_supported_format_decodes_to_open_clips_embedding_as_base64(hostile, reference, case):
    data, _ = DECODABLE[case]
    response = post(hostile, "/invocations", {"task": "embed", "images": [b64(data)]})
    np.testing.assert_allclose(embedding_of(response), _expected(reference, case), atol=1e-4)


@pytest.mark.parametrize("case", sorted(DECODABLE))
def test_every_supported_format_decodes_to_open_clips_embedding_as_a_raw_body(hostile, reference, case):
    data, _ = DECODABLE[case]
    response = post(hostile, "/invocations", data, "application/octet-stream")
    np.testing.assert_allclose(embedding_of(response), _expected(reference, case), atol=1e-4)


def test_exif_orientation_is_applied_not_ignored(hostile, reference):
    data, _ = DECODABLE["jpeg_exif_orientation_6"]
    got = embedding_of(post(hostile, "/invocations", data, "image/jpeg"))
    as_stored = reference.images([data], draft_size=DRAFT)[0]
    assert np.abs(got - as_stored).max() > 1e-3  # the rotation changed the embedding, and the server applied it


def test_an_animated_gif_is_embedded_by_its_first_frame(hostile, reference):
    data, _ = DECODABLE["gif_animated"]
    got = embedding_of(post(hostile, "/invocations", data, "image/gif"))
    frames = Image.open(io.BytesIO(data))
    assert frames.n_frames == 2
    first = reference.images([frames.convert("RGB")])[0]
    frames.seek(1)
    second = reference.images([frames.convert("RGB")])[0]
    np.testing.assert_allclose(got, first, atol=1e-4)
    assert np.abs(got - second).max() > 1e-3


# ---- the corpus: bytes that must fail cleanly -----------------------------------------------------------

def png_decompression_bomb() -> bytes:
    """A valid 30000 x 30000 1-bit PNG of zeros: about 110 KB on disk, 900 million pixels decoded."""
    rows = zlib.compressobj(9)
    idat = b"".join(rows.compress(b"\x00" * 3751 * 1000) for _ in range(30)) + rows.flush()
    header = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_text_bomb() -> bytes:
    """A small PNG carrying a zTXt chunk that inflates to 50 MB."""
    png = encode(IMAGE)
    bomb = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * 50_000_000, 9))
    return png[:33] + bomb + png[33:]  # right after IHDR


def dds_with_an_unknown_pixel_format() -> bytes:
    data = bytearray(encode(IMAGE.convert("RGBA"), "DDS"))
    data[80:84] = (3).to_bytes(4, "little")  # pixel format flags Pillow does not implement
    return bytes(data)


JPEG = encode(IMAGE, "JPEG", quality=90)
PNG = encode(IMAGE)
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
       b'<rect width="100%" height="100%" fill="red"/></svg>')
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)>not an image</body></html>"

# id -> (the value: bytes, base64-encoded in JSON, or a string sent as it is; status; code in JSON; in a raw body)
FAILING = {
    "truncated_jpeg": (JPEG[:len(JPEG) // 2], 400, "invalid_image", "invalid_image"),
    "truncated_png": (PNG[:len(PNG) // 2], 400, "invalid_image", "invalid_image"),
    "zero_bytes": (b"", 400, "invalid_image", "invalid_image"),
    "random_bytes": (bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)), 400,
                     "invalid_image", "invalid_image"),
    "text_not_base64": ("this is not base64, it is a sentence!", 400, "invalid_base64", "invalid_image"),
    "data_uri_of_text": ("data:text/plain;base64," + b64(b"hello"), 400, "invalid_image", "invalid_image"),
    "data_uri_of_html": ("data:text/html;base64," + b64(HTML), 400, "invalid_image", "invalid_image"),
    "svg_document": (SVG, 400, "invalid_image", "invalid_image"),
    "html_document": (HTML, 400, "invalid_image", "invalid_image"),
    "png_text_chunk_bomb": (png_text_bomb(), 400, "invalid_image", "invalid_image"),
    "dds_unknown_pixel_format": (dds_with_an_unknown_pixel_format(), 400, "invalid_image", "invalid_image"),
    "png_decompression_bomb": (png_decompression_bomb(), 413, "image_too_large", "image_too_large"),
}


def _as_json_value(value) -> str:
    return b64(value) if isinstance(value, bytes) else value


@pytest.mark.parametrize("case", sorted(FAILING))
def test_undecodable_images_fail_cleanly_naming_the_item(hostile, case):
    value, status, code, _ = FAILING[case]
    response = post(hostile, "/invocations", {"task": "embed", "images": [b64(PNG), _as_json_value(value)]})
    error = error_of(response, status)
    assert (error["code"], error["field"]) == (code, "images[1]")
    assert error["message"].startswith("images[1]: ")


@pytest.mark.parametrize("case", sorted(FAILING))
def test_undecodable_raw_bodies_fail_cleanly_naming_the_body(hostile, case):
    value, status, _, code = FAILING[case]
    data = value if isinstance(value, bytes) else value.encode()
    error = error_of(post(hostile, "/invocations", data, "image/png"), status)
    assert (error["code"], error["field"]) == (code, "body")


@pytest.mark.parametrize("case", sorted(FAILING))
def test_a_bad_image_in_a_seed003_request_names_its_index(hostile, case):
    value, status, code, _ = FAILING[case]
    response = post(hostile, "/invocations", {"images": [b64(JPEG), b64(PNG), _as_json_value(value)],
                                              "classes": ["cat", "dog"]})
    assert error_of(response, status)["field"] == "images[2]"


@pytest.mark.parametrize("case", sorted(FAILING))
def test_a_bad_image_on_the_integration_routes_fails_in_their_clients_shape(hostile, case):
    value, status, code, _ = FAILING[case]
    images = [b64(PNG), _as_json_value(value)]
    error = error_of(post(hostile, "/v1/embeddings", {"input": images, "modality": "image"}), status)
    assert (error["code"], error["param"], error["type"]) == (code, "input[1]", "invalid_request_error")
    response = post(hostile, "/vectorize", {"texts": ["a cat"], "images": images})
    assert response.status_code == status
    assert response.get_json()["error"].startswith("images[1]: ")  # Weaviate reads the message alone


def test_300_items_on_the_integration_routes_are_413_naming_the_setting(hostile):
    error = error_of(post(hostile, "/v1/embeddings", {"input": ["a cat"] * 300}), 413)
    assert (error["code"], error["param"]) == ("too_many_items", "input")
    for body in ({"texts": ["a cat"] * 300}, {"texts": ["a"] * 200, "images": [b64(PNG)] * 100}):
        response = post(hostile, "/vectorize", body)
        assert response.status_code == 413 and "MAX_ITEMS" in response.get_json()["error"]


def test_a_decompression_bomb_is_refused_from_its_header_at_once(hostile):
    bomb = FAILING["png_decompression_bomb"][0]
    assert len(bomb) < 200_000  # tiny on disk; 900 million pixels (2.7 GB as RGB) if decoded
    for send in (lambda: post(hostile, "/invocations", bomb, "image/png"),
                 lambda: post(hostile, "/invocations", {"task": "embed", "images": [b64(bomb)]})):
        started = time.monotonic()
        error = error_of(send(), 413)
        assert time.monotonic() - started < 2.0  # decoding it would take many seconds
        assert error["code"] == "image_too_large" and "30000x30000" in error["message"]


@pytest.mark.parametrize("value", [
    b64(bytes(MAX_IMAGE_BYTES + 3)),
    "data:image/png;base64," + b64(bytes(MAX_IMAGE_BYTES + 3)),
    base64.encodebytes(bytes(MAX_IMAGE_BYTES + 3)).decode(),  # MIME line breaks do not count
], ids=["base64", "data_uri", "base64_with_newlines"])
def test_base64_over_max_image_mb_is_413_before_decoding(hostile, value):
    error = error_of(post(hostile, "/invocations", {"task": "embed", "texts": ["a cat"], "images": [value]}), 413)
    assert (error["code"], error["field"]) == ("image_too_large", "images[0]")
    assert "MAX_IMAGE_MB" in error["message"]


def test_a_raw_body_over_max_body_mb_is_413_naming_the_setting(hostile):
    error = error_of(post(hostile, "/invocations", b"\x89PNG" + bytes(6 * 1024 * 1024), "image/png"), 413)
    assert error["code"] == "body_too_large" and "MAX_BODY_MB" in error["message"]


# ---- JSON hostility ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"task": "embed", "texts": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"task": "embed", "texts": ["a"], "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    b"[" * 100_000,
], ids=["lists_5000_deep", "objects_5000_deep", "unclosed_100000_deep"])
def test_json_nested_thousands_deep_is_a_400_not_a_crash(hostile, body):
    assert error_of(post(hostile, "/invocations", body), 400)["code"] == "malformed_json"


def test_json_nested_within_the_parsers_limit_fails_validation_instead(hostile):
    body = b'{"task": "embed", "texts": [' + b"[" * 1000 + b"]" * 1000 + b"]}"
    error = error_of(post(hostile, "/invocations", body), 400)
    assert (error["code"], error["field"]) == ("invalid_field", "texts[0]")


def test_a_30000_character_text_is_413_text_too_long(hostile):
    error = error_of(post(hostile, "/invocations", {"task": "embed", "texts": ["fine", "x" * 30_000]}), 413)
    assert (error["code"], error["field"]) == ("text_too_long", "texts[1]")
    assert "MAX_TEXT_CHARS" in error["message"]


@pytest.mark.parametrize("body, field", [
    ({"task": "embed", "texts": ["a cat"] * 300}, "texts"),
    ({"task": "embed", "texts": ["a"] * 200, "images": [b64(PNG)] * 100}, None),  # together over MAX_ITEMS
    ({"texts": ["a cat"] * 300}, "texts"),
    ({"images": [b64(PNG)], "classes": ["cat"] * 300}, "classes"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}] * 300}, "candidates"),
    ([{"text": "a"}] * 300, "body"),
], ids=["texts", "texts_and_images", "seed000", "seed003_classes", "rank_candidates", "seed002_encode"])
def test_300_items_are_413_too_many_items(hostile, body, field):
    error = error_of(post(hostile, "/invocations", body), 413)
    assert error["code"] == "too_many_items" and error.get("field") == field


@pytest.mark.parametrize("body, code, field", [
    ({"task": ["embed"], "texts": ["a"]}, "unknown_task", "task"),
    ({"task": {"name": "embed"}, "texts": ["a"]}, "unknown_task", "task"),
    ({"task": None, "texts": ["a"]}, "unknown_task", "task"),
    ({"task": 1, "texts": ["a"]}, "unknown_task", "task"),
    ({"task": "embed", "texts": {"0": "a"}}, "invalid_field", "texts"),
    ({"task": "embed", "texts": [["a"]]}, "invalid_field", "texts[0]"),
    ({"task": "embed", "texts": [None]}, "invalid_field", "texts[0]"),
    ({"task": "embed", "texts": [True]}, "invalid_field", "texts[0]"),
    ({"task": "embed", "images": [{"b64": "x"}]}, "invalid_field", "images[0]"),
    ({"task": "embed", "images": [12345]}, "invalid_field", "images[0]"),
    ({"task": "embed", "images": "aGVsbG8="}, "invalid_field", "images"),
    ({"task": "embed", "texts": ["a"], "normalize": "false"}, "invalid_field", "normalize"),
    ({"task": "embed", "texts": ["a"], "normalize": 0}, "invalid_field", "normalize"),
    ({"task": "rank", "queries": [["a"]], "candidates": [{"text": "b"}]}, "invalid_field", "queries[0]"),
    ({"task": "rank", "queries": [{"text": "a", "image": "b"}], "candidates": [{"text": "b"}]}, "invalid_field",
     "queries[0]"),
    ({"task": "rank", "queries": [{"text": 5}], "candidates": [{"text": "b"}]}, "invalid_field", "queries[0].text"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}], "top_k": "3"}, "invalid_field",
     "top_k"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}], "top_k": 2.5}, "invalid_field",
     "top_k"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}], "top_k": True}, "invalid_field",
     "top_k"),
    ({"task": "classify", "images": [b64(PNG)], "classes": [["a", [1]]]}, "invalid_field", "classes[0][1]"),
    ({"task": "classify", "images": [b64(PNG)], "classes": [["a", {"id": 1}]]}, "invalid_field", "classes[0][1]"),
    ({"task": "classify", "images": [b64(PNG)], "classes": [[1, 1]]}, "invalid_field", "classes[0][0]"),
    ({"task": "classify", "images": [b64(PNG)], "classes": [{"label": "a"}]}, "invalid_field", "classes[0]"),
    ({"task": "classify", "images": [b64(PNG)], "classes": ["a"], "prompt_template": ["{label}"]}, "invalid_field",
     "prompt_template"),
    ({"task": "classify", "images": [b64(PNG)], "classes": ["a"], "logit_scale": "100"}, "invalid_field",
     "logit_scale"),
    ({"images": b64(PNG), "classes": ["a"]}, "invalid_field", "images"),
    ({"images": [b64(PNG)], "classes": "a, b"}, "invalid_field", "classes"),
    ({"texts": [1, 2]}, "invalid_field", "texts[0]"),
    ({"texts": ["a"], "normalize": "yes"}, "invalid_field", "normalize"),
    ({"text": ["a"]}, "invalid_field", "text"),
    ({"text": "a", "image": 5}, "invalid_field", "image"),
    ({"queries": {"text": "a"}, "candidates": [{"text": "b"}]}, "invalid_field", "queries"),
    ({"queries": [{"img_blob": 5}], "candidates": [{"text": "b"}]}, "invalid_field", "queries[0].img_blob"),
    ([{"text": ["a"]}], "invalid_field", "[0].text"),
    (["a"], "invalid_field", "[0]"),
    ([], "empty_list", "body"),
    ("a string", "unknown_format", None),
    (None, "unknown_format", None),
    (3.5, "unknown_format", None),
])
def test_wrong_types_everywhere_are_400_naming_the_field(hostile, body, code, field):
    error = error_of(post(hostile, "/invocations", body), 400)
    assert (error["code"], error.get("field")) == (code, field)


@pytest.mark.parametrize("body", [
    b'{"task": "embed", "texts": ["a"], "normalize": NaN}',
    b'{"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}], "top_k": Infinity}',
    b'{"images": ["x"], "classes": ["a"], "margin": -Infinity}',
    b'{"task": "classify", "images": ["x"], "classes": ["a"], "logit_scale": 1e400}',
    b'[NaN]',
], ids=["nan", "infinity", "minus_infinity", "overflowing_number", "bare_nan"])
def test_nan_and_infinity_literals_are_malformed_json(hostile, body):
    assert error_of(post(hostile, "/invocations", body), 400)["code"] == "malformed_json"


def test_duplicate_keys_take_the_last_value(hostile, reference):
    response = post(hostile, "/invocations",
                    b'{"task": "translate", "task": "embed", "texts": [5], "texts": ["a cat"]}')
    assert response.status_code == 200
    np.testing.assert_allclose(response.get_json()["text_embeddings"], reference.texts(["a cat"]), atol=1e-4)
    error = error_of(post(hostile, "/invocations", b'{"task": "embed", "texts": ["a cat"], "texts": [5]}'), 400)
    assert error["field"] == "texts[0]"


@pytest.mark.parametrize("body, content_type", [
    (b'{"task": "embed", "texts": ["\xff\xfe caf\xe9"]}', "application/json"),
    (b'{"task": "embed", "texts": ["\xed\xa0\x80"]}', "application/json"),  # an encoded lone surrogate
    (b'{"task": "embed", "texts": ["\xc3"]}', "application/json; charset=utf-8"),
    (b'{"task": "embed", "texts": ["+2D8-"]}', "application/json; charset=utf-7"),  # decodes to a lone surrogate
    (b'{"task": "embed", "texts": ["a"]}', "application/json; charset=rot13"),  # not a text encoding
    (b'{"task": "embed", "texts": ["a"]}', "application/json; charset=no-such-charset"),
    (b'\x00{"task": "embed"', "application/json; charset=utf-16"),
], ids=["latin1_bytes", "encoded_surrogate", "truncated_sequence", "utf7_lone_surrogate", "rot13", "unknown",
        "odd_utf16"])
def test_invalid_utf8_and_charsets_are_malformed_json(hostile, body, content_type):
    response = hostile.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert error_of(response, 400)["code"] == "malformed_json"


def test_a_byte_order_mark_is_accepted(hostile, reference):
    response = post(hostile, "/invocations",
                    b"\xef\xbb\xbf" + json.dumps({"task": "embed", "texts": ["a cat"]}).encode())
    assert response.status_code == 200
    np.testing.assert_allclose(response.get_json()["text_embeddings"], reference.texts(["a cat"]), atol=1e-4)


@pytest.mark.parametrize("top_k", [2 ** 63, 2 ** 64 - 1])
def test_huge_whole_numbers_for_top_k_mean_every_class(hostile, top_k):
    classify = {"task": "classify", "images": [b64(PNG)], "classes": ["cat", "dog", "car"], "top_k": top_k}
    response = post(hostile, "/invocations", classify)
    assert response.status_code == 200 and len(response.get_json()["results"][0]["prompts"][0]) == 3
    rank = {"task": "rank", "queries": [{"text": "a"}], "candidates": [{"text": "b"}, {"text": "c"}], "top_k": top_k}
    response = post(hostile, "/invocations", rank)
    assert response.status_code == 200 and sorted(response.get_json()["rankings"][0]) == [0, 1]


@pytest.mark.parametrize("raw", [b"1" + b"0" * 30, b"1e300", b"-5", b"0"])
def test_top_k_that_is_not_a_positive_whole_number_is_400(hostile, raw):
    body = b'{"task": "classify", "images": ["' + b64(PNG).encode() + b'"], "classes": ["a"], "top_k": ' + raw + b"}"
    error = error_of(post(hostile, "/invocations", body), 400)
    assert (error["code"], error["field"]) == ("invalid_field", "top_k")


@pytest.mark.parametrize("key, value", [("margin", -0.01), ("margin", -1e308), ("margin", 1.5),
                                        ("logit_scale", -1), ("logit_scale", 1e308)])
def test_out_of_range_numbers_are_400(hostile, key, value):
    for body in ({"images": [b64(PNG)], "classes": ["a", "b"], key: value},
                 {"task": "classify", "images": [b64(PNG)], "classes": ["a", "b"], key: value}):
        error = error_of(post(hostile, "/invocations", body), 400)
        assert (error["code"], error["field"]) == ("invalid_field", key)


@pytest.mark.parametrize("template", ["{label:>999999999}", "{label:>9999999999999}", "{0:{0}}", "{label!r:>99}",
                                      "{label.__class__}", "{label[0]}"],
                         ids=["width", "huge_width", "nested_spec", "conversion", "attribute", "index"])
def test_prompt_templates_with_format_specs_are_refused_at_once(hostile, template):
    # A width would make every prompt a gigabyte: refused before anything is rendered.
    started = time.monotonic()
    error = error_of(post(hostile, "/invocations", {"images": [b64(PNG)], "classes": ["cat"] * 200,
                                         "prompt_template": template}), 400)
    assert time.monotonic() - started < 2.0
    assert (error["code"], error["field"]) == ("invalid_field", "prompt_template")


@pytest.mark.parametrize("template, label", [("{label}" * 2000, "a cat and a dog"), ("a photo of a {}", "x" * 9990),
                                             ("x" * 20_000 + "{label}", "cat")],
                         ids=["many_placeholders", "long_label", "long_template"])
def test_prompts_longer_than_max_text_chars_are_413(hostile, template, label):
    error = error_of(post(hostile, "/invocations", {"images": [b64(PNG)], "classes": [label, "dog"],
                                         "prompt_template": template}), 413)
    assert (error["code"], error["field"]) == ("text_too_long", "prompt_template")


def test_json_lines_records_nested_too_deep_to_echo_fail_alone(hostile, reference):
    deep, too_deep = ("[" * 250 + "]" * 250), ("[" * 251 + "]" * 251)
    lines = [f'{{"id": {deep}, "text": "a cat"}}', f'{{"id": {too_deep}, "text": "a cat"}}',
             '{"id": "plain", "text": "a dog"}']
    for accept in ("application/jsonlines", "application/json"):
        response = hostile.post("/invocations", data="\n".join(lines).encode(),
                                headers={"Content-Type": "application/jsonlines", "Accept": accept})
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        text = response.get_data(as_text=True)
        answers = json.loads(text) if accept == "application/json" else [json.loads(l) for l in text.split("\n")]
        assert len(answers) == 3
        np.testing.assert_allclose(answers[0]["embedding"], reference.texts(["a cat"])[0], atol=1e-4)
        assert answers[1] == {"error": answers[1]["error"]} and answers[1]["error"]["field"] == "id"
        assert answers[2]["id"] == "plain"
        np.testing.assert_allclose(answers[2]["embedding"], reference.texts(["a dog"])[0], atol=1e-4)


def test_garbage_json_lines_records_each_get_an_error_line(hostile):
    lines = [b"\xff\xfe", b"[" * 5000, b"NaN", b'{"task": ["embed"]}', b"   ", b'{"text": "ok", "normalize": "x"}',
             b'"just a string"']
    response = hostile.post("/invocations", data=b"\n".join(lines), headers={"Content-Type": "application/jsonlines"})
    assert response.status_code == 200
    answers = [json.loads(line) for line in response.get_data().split(b"\n")]
    assert len(answers) == len(lines)
    assert all(set(a["error"]) >= {"code", "message"} for a in answers)


# ---- after all of it ----------------------------------------------------------------------------------------

def test_after_all_of_it_the_worker_answers_normally(hostile, client, reference):
    body = {"task": "embed", "texts": ["a photo of a cat"], "images": [b64(PNG), b64(JPEG)]}
    for each in (hostile, client):
        response = post(each, "/invocations", body)
        assert response.status_code == 200
        answer = response.get_json()
        np.testing.assert_allclose(answer["text_embeddings"], reference.texts(["a photo of a cat"]), atol=1e-4)
        np.testing.assert_allclose(answer["image_embeddings"], reference.images([PNG, JPEG], draft_size=DRAFT),
                                   atol=1e-4)
        assert each.get("/ping").status_code == 200


def test_formats_outside_the_photo_formats_are_refused(client):
    import base64
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, "PCX")  # Pillow reads it, no client needs it
    response = client.post("/invocations", json={"task": "embed", "images": [base64.b64encode(buffer.getvalue()).decode()]})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_image" and response.get_json()["error"]["field"] == "images[0]"
