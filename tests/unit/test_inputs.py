"""Image sources (base64, data: URIs) to RGB images, with errors that name the request field."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from clip_sagemaker.errors import ApiError
from clip_sagemaker.fetch import FetchPolicy
from clip_sagemaker.inputs import ImageSource, UrlReader, decode_image, image_bytes, load_image
from images import b64, data_uri, encode, pattern

FIELD = "images[3]"
URLS = UrlReader(FetchPolicy())
BIG = 10 ** 9
# 8 bytes: base64 ends in a single "=", and "\xfb\xff" puts "+" and "/" (or "-" and "_") into it.
PAYLOAD = b"\xfb\xff\xfehello"


def _bytes_of(value: str, field: str = FIELD) -> bytes:
    return image_bytes(ImageSource(value, field), URLS)


def _error(value: str, field: str = FIELD) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _bytes_of(value, field)
    return caught.value


def _decode_error(data: bytes, field: str = FIELD, max_pixels: int = BIG) -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode_image(data, field, max_pixels)
    return caught.value


# --- image_bytes --------------------------------------------------------------------------------------------

def test_raw_base64_is_decoded():
    png = encode(pattern(0))
    assert _bytes_of(base64.b64encode(png).decode()) == png


def test_base64_with_missing_padding_is_decoded():
    text = base64.b64encode(PAYLOAD).decode()
    assert text.endswith("=")
    assert _bytes_of(text.rstrip("=")) == PAYLOAD


def test_base64_missing_two_padding_characters_is_decoded():
    payload = PAYLOAD + b"!!"  # 10 bytes: two "=" of padding
    text = base64.b64encode(payload).decode()
    assert text.endswith("==")
    assert _bytes_of(text.rstrip("=")) == payload


def test_url_safe_base64_is_decoded():
    text = base64.urlsafe_b64encode(PAYLOAD).decode()
    assert "-" in text or "_" in text
    assert _bytes_of(text) == PAYLOAD
    assert _bytes_of(text.rstrip("=")) == PAYLOAD


def test_standard_base64_with_plus_and_slash_is_decoded():
    text = base64.b64encode(PAYLOAD).decode()
    assert "+" in text or "/" in text
    assert _bytes_of(text) == PAYLOAD


def test_base64_with_embedded_newlines_and_spaces_is_decoded():
    png = encode(pattern(1))
    wrapped = base64.encodebytes(png).decode()  # MIME style: 76-character lines
    assert "\n" in wrapped
    assert _bytes_of(wrapped) == png
    assert _bytes_of(wrapped.replace("\n", "\r\n")) == png
    assert _bytes_of("  " + wrapped.replace("\n", " \t")) == png


@pytest.mark.parametrize("prefix", ["data:image/png;base64,", "data:image/jpeg;base64,", "DATA:IMAGE/PNG;BASE64,",
                                    "data:application/octet-stream;base64,", "data:;base64,",
                                    "data:image/png;name=cat.png;base64,"])
def test_data_uri_is_decoded(prefix):
    png = encode(pattern(2))
    assert _bytes_of(prefix + base64.b64encode(png).decode()) == png


def test_data_uri_helper_round_trips():
    image = pattern(3)
    assert _bytes_of(data_uri(image)) == encode(image)


@pytest.mark.parametrize("mime", ["text/plain", "application/json", "video/mp4"])
def test_data_uri_with_non_image_media_type_is_invalid_image_naming_the_field(mime):
    error = _error(f"data:{mime};base64,{b64(pattern(0))}")
    assert error.code == "invalid_image"
    assert error.status == 400
    assert error.field == FIELD
    assert error.message.startswith(f"{FIELD}: ")
    assert mime in error.message


def test_data_uri_that_is_not_base64_is_invalid_image():
    error = _error("data:image/png,%89PNG")
    assert error.code == "invalid_image"
    assert error.field == FIELD
    assert "base64" in error.message


@pytest.mark.parametrize("value", ["this is not an image!", "abc$def", "héllo", "a"])
def test_non_base64_text_is_invalid_base64(value):
    error = _error(value)
    assert error.code == "invalid_base64"
    assert error.status == 400
    assert error.field == FIELD
    assert error.message.startswith(f"{FIELD}: ")


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_empty_image_value_is_invalid_image(value):
    error = _error(value)
    assert error.code == "invalid_image"
    assert error.field == FIELD


@pytest.mark.parametrize("url, status, code", [
    ("http://127.0.0.1:9/x.png", 403, "image_url_forbidden"),
    ("https://10.0.0.1/cat.jpg", 403, "image_url_forbidden"),
    ("s3:///no-bucket.png", 400, "invalid_field"),
    ("file:///etc/passwd", 400, "unsupported_url_scheme"),
])
def test_urls_go_through_the_safe_fetcher(url, status, code):
    # Only addresses the fetcher refuses before connecting: no traffic leaves the test.
    error = _error(url)
    assert (error.status, error.code, error.field) == (status, code, FIELD)


def test_error_carries_whatever_field_path_is_passed_in():
    error = _error("not base64!", field="queries[2].image")
    assert error.field == "queries[2].image"
    assert error.body() == {"error": {"code": "invalid_base64", "message": error.message,
                                      "field": "queries[2].image"}}


# --- decode_image -------------------------------------------------------------------------------------------

def test_rgb_png_decodes_to_the_same_pixels():
    image = pattern(4)
    out = decode_image(encode(image), FIELD, BIG)
    assert out.mode == "RGB"
    assert out.size == image.size
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_palette_png_comes_back_rgb():
    palette = pattern(5).convert("P")
    out = decode_image(encode(palette), FIELD, BIG)
    assert out.mode == "RGB"
    assert out.size == (96, 64)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(palette.convert("RGB")))


def test_rgba_png_comes_back_rgb_with_its_colour_channels():
    rgb = pattern(6)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.full((64, 96), 128, np.uint8), "L"))
    out = decode_image(encode(rgba), FIELD, BIG)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(rgb))


def test_greyscale_png_comes_back_rgb_with_equal_channels():
    grey = pattern(7).convert("L")
    out = np.asarray(decode_image(encode(grey), FIELD, BIG))
    assert out.shape == (64, 96, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], np.asarray(grey))


def test_16_bit_greyscale_png_comes_back_rgb_with_its_tones_scaled_to_8_bits():
    samples = np.linspace(0, 65535, 64 * 96).reshape(64, 96).astype(np.uint16)
    image = Image.fromarray(samples)
    assert image.mode == "I;16"
    out = decode_image(encode(image), FIELD, BIG)
    assert out.mode == "RGB"
    assert out.size == (96, 64)
    pixels = np.asarray(out).astype(int)
    expected = (samples >> 8).astype(int)
    for channel in range(3):
        assert np.abs(pixels[..., channel] - expected).max() <= 1
    # A dark-to-light gradient, not an image clipped to white.
    assert pixels.mean() == pytest.approx(127.5, abs=2)


def test_jpeg_with_exif_orientation_6_comes_back_rotated():
    image = pattern(8, size=(96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(image, "JPEG", quality=95, exif=exif)
    assert Image.open(io.BytesIO(data)).size == (96, 64)
    out = decode_image(data, FIELD, BIG)
    assert out.mode == "RGB"
    assert out.size == (64, 96)
    upright = np.asarray(image.transpose(Image.Transpose.ROTATE_270), dtype=float)
    wrong_way = np.asarray(image.transpose(Image.Transpose.ROTATE_90), dtype=float)
    got = np.asarray(out, dtype=float)
    assert np.abs(got - upright).mean() < 5
    assert np.abs(got - wrong_way).mean() > 20


def test_jpeg_without_exif_keeps_its_size():
    out = decode_image(encode(pattern(9), "JPEG"), FIELD, BIG)
    assert out.size == (96, 64)
    assert out.mode == "RGB"


@pytest.mark.parametrize("data", [
    encode(pattern(10))[: len(encode(pattern(10))) // 2],  # truncated PNG
    b"",
    bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)),
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
], ids=["truncated_png", "zero_bytes", "random_bytes", "png_signature_only", "gif_header_only"])
def test_undecodable_bytes_are_a_400_invalid_image_naming_the_field(data):
    error = _decode_error(data)
    assert error.status == 400
    assert error.code == "invalid_image"
    assert error.field == FIELD
    assert error.message.startswith(f"{FIELD}: ")


def test_image_over_max_pixels_is_a_413_image_too_large():
    data = encode(pattern(11))  # 96 x 64 = 6144 pixels
    error = _decode_error(data, max_pixels=6143)
    assert error.status == 413
    assert error.code == "image_too_large"
    assert error.field == FIELD
    assert "96x64" in error.message and "6143" in error.message


def test_image_exactly_at_max_pixels_is_accepted():
    assert decode_image(encode(pattern(11)), FIELD, 96 * 64).size == (96, 64)


def test_load_image_decodes_a_source_and_reports_its_field():
    image = pattern(12)
    out = load_image(ImageSource(data_uri(image), "inputs[0]"), BIG, URLS)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))
    with pytest.raises(ApiError) as caught:
        load_image(ImageSource(base64.b64encode(b"not an image").decode(), "inputs[5]"), BIG, URLS)
    assert caught.value.code == "invalid_image"
    assert caught.value.field == "inputs[5]"
    with pytest.raises(ApiError) as caught:
        load_image(ImageSource(b64(pattern(12)), "inputs[1]"), 100, URLS)
    assert caught.value.code == "image_too_large"
    assert caught.value.field == "inputs[1]"
