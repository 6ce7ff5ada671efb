"""Images given as `s3://bucket/key`, read through boto3 with the instance's own credentials.

Batch Transform inputs usually name their images in S3. The client is created on first use (boto3 is not
imported otherwise) with short timeouts and a connection pool sized for the image threads that call it
concurrently; the same byte cap as URL fetches applies while streaming. botocore's own settings apply, so
`AWS_ENDPOINT_URL_S3` points it at an S3-compatible store. `IMAGE_S3_BUCKETS`, when set, limits which
buckets a request may name: the credentials are the instance's, not the caller's.
"""
from __future__ import annotations

import threading
from typing import Optional
from urllib.parse import unquote, urlsplit

from .errors import ApiError, invalid
from .fetch import FetchPolicy

_CHUNK = 1 << 16
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def parse_s3_url(url: str, field: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if parts.scheme.lower() != "s3" or not bucket or not key:
        raise invalid(field, "an S3 image must be given as s3://bucket/key")
    return bucket, key


class S3ImageReader:
    def __init__(self, policy: FetchPolicy, allowed_buckets: tuple[str, ...] = ()):
        self._policy = policy
        self._allowed = set(allowed_buckets)
        self._client = None
        self._lock = threading.Lock()

    def _s3(self):
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client("s3", config=Config(
                    connect_timeout=self._policy.connect_timeout_s, read_timeout=self._policy.read_timeout_s,
                    retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32))
            return self._client

    def read(self, url: str, field: str) -> bytes:
        bucket, key = parse_s3_url(url, field)
        if self._allowed and bucket not in self._allowed:
            raise ApiError(f"{field}: bucket {bucket!r} is not one this endpoint reads images from "
                           f"(IMAGE_S3_BUCKETS)", code="image_url_forbidden", field=field, status=403)
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

        try:
            response = self._s3().get_object(Bucket=bucket, Key=key)
            size: Optional[int] = response.get("ContentLength")
            if size is not None and size > self._policy.max_bytes:
                raise self._too_large(field)
            body = response["Body"]
            try:
                data = bytearray()
                while chunk := body.read(_CHUNK):
                    data += chunk
                    if len(data) > self._policy.max_bytes:
                        raise self._too_large(field)
                return bytes(data)
            finally:
                body.close()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                reason = f"s3://{bucket}/{key} does not exist"
            elif code in _DENIED:
                reason = f"access to s3://{bucket}/{key} is denied to this endpoint's credentials"
            else:
                reason = f"S3 answered {code or 'an error'}"
            raise invalid(field, reason, code="image_fetch_failed") from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise invalid(field, "reading the image from S3 timed out", code="image_fetch_timeout") from None
        except BotoCoreError as exc:  # no credentials, no endpoint, a broken connection
            raise invalid(field, f"could not read the image from S3 ({type(exc).__name__})",
                          code="image_fetch_failed") from None

    def _too_large(self, field: str) -> ApiError:
        return ApiError(f"{field}: the image is larger than {self._policy.max_bytes} bytes (MAX_IMAGE_MB)",
                        code="image_too_large", field=field, status=413)
