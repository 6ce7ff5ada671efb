"""Image sources in requests (raw base64, `data:` URIs, http(s) and s3 URLs, raw bytes) → RGB PIL images.

http(s) URLs go through fetch.py, which refuses internal addresses; s3:// through s3_images.py; decoding
enforces the pixel limit.

Every failure is an ApiError naming the request field the image came from, so one bad image fails only
its own request (or its own record) with a 400, never the worker.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Optional, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ApiError, invalid
from .fetch import FetchPolicy, fetch_image, is_url
from .s3_images import S3ImageReader

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# The formats people send photos in; Pillow's other decoders (EPS via Ghostscript, DDS, ICNS, ...) are
# attack surface that no client needs.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO
Image.init()  # registers every plugin now, so that Image.open can look the allowed ones up
# Decompression-bomb checks are ours (a 400 naming the limit), so Pillow's own warning is noise.
Image.MAX_IMAGE_PIXELS = None
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageSource:
    """One image as the client sent it (a string, or the raw bytes of an image body), and where it was."""
    value: Union[str, bytes]
    field: str


def _decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    if text and len(text) // 4 * 3 <= max_bytes:
        try:
            # The common case, plain standard base64, in C; the regex below costs more than the decoding.
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise invalid(field, "the image is empty", code="invalid_image")
    if len(compact) // 4 * 3 > max_bytes:
        raise ApiError(f"{field}: the image is larger than {max_bytes} bytes (MAX_IMAGE_MB)",
                       code="image_too_large", field=field, status=413)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    # Clients often drop the trailing '=' padding; it carries no information, so restore it.
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not valid base64 (nor a data: URI)", code="invalid_base64") from None


class UrlReader:
    """Reads images given by URL: http(s) through fetch.py's guarded fetcher, s3:// through boto3."""

    def __init__(self, policy: FetchPolicy, s3_buckets: tuple[str, ...] = ()):
        self.policy = policy
        self._s3 = S3ImageReader(policy, s3_buckets)

    def read(self, url: str, field: str) -> bytes:
        if url[:5].lower() == "s3://":
            return self._s3.read(url, field)
        return fetch_image(url, field, self.policy)


def source_kind(source: ImageSource) -> str:
    """Where an image comes from, in the metrics' words: body (a raw image body), s3, url or inline."""
    if isinstance(source.value, bytes):
        return "body"
    if source.value[:5].lower() == "s3://":
        return "s3"
    return "url" if is_url(source.value) else "inline"


def image_bytes(source: ImageSource, urls: UrlReader) -> bytes:
    value = source.value
    if isinstance(value, bytes):
        return value
    match = _DATA_URI.match(value)
    if match:
        mime = (match.group("mime") or "").lower()
        if mime and not (mime.startswith("image/") or mime == "application/octet-stream"):
            raise invalid(source.field, f"data URI has media type {mime!r}, expected image/*",
                          code="invalid_image")
        if not match.group("b64"):
            raise invalid(source.field, "data URI must be base64-encoded (data:image/...;base64,...)",
                          code="invalid_image")
        return _decode_base64(value[match.end():], source.field, urls.policy.max_bytes)
    if is_url(value):
        return urls.read(value, source.field)
    return _decode_base64(value, source.field, urls.policy.max_bytes)


def decode_image(data: bytes, field: str, max_pixels: int, draft_size: Optional[int] = None) -> Image.Image:
    """Bytes → an RGB image with its EXIF orientation applied; a 400 for anything that is not one."""
    if not data:
        raise invalid(field, "the image is empty", code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(f"{field}: the image is {width}x{height} pixels, above the limit of {max_pixels} "
                               f"(MAX_IMAGE_PIXELS)",
                               code="image_too_large", field=field, status=413)
            if draft_size and image.format == "JPEG":
                # Decoding at 1/2, 1/4 or 1/8 scale (still >= the model's input size) is several times faster.
                image.draft("RGB", (draft_size, draft_size))
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)  # a copy: only when there is something to turn
            if image.mode.startswith("I;16"):
                # Pillow clips 16-bit samples to 8 bits instead of scaling them: a 16-bit greyscale PNG would
                # come back almost entirely white. Scale to 8 bits first.
                image = image.convert("I").point(lambda v: v / 256).convert("L")
            if image.mode == "RGB":
                image.load()  # decode now: errors belong here, and convert would have made a copy
                return image
            return image.convert("RGB")
    except ApiError:
        raise
    except UnidentifiedImageError:
        # Pillow's own message holds the repr of its buffer (<_io.BytesIO object at 0x...>): useless to a client.
        hint = "; it looks like JSON: send it with Content-Type: application/json" if _looks_like_json(data) else ""
        raise invalid(field, f"is not an image in a format that decodes ({', '.join(DECODABLE_FORMATS)}){hint}",
                      code="invalid_image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types (DDS: NotImplementedError)
        raise invalid(field, f"could not be decoded as an image ({type(exc).__name__}: {exc})",
                      code="invalid_image") from None


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def load_image(source: ImageSource, max_pixels: int, urls: UrlReader,
               draft_size: Optional[int] = None) -> Image.Image:
    return decode_image(image_bytes(source, urls), source.field, max_pixels, draft_size)
