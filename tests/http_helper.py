"""The one way tests send HTTP requests to the app: to a Flask test client, or to a running ./serve."""
from __future__ import annotations

import json
from typing import Any

import requests


def post(target, path: str, body: Any, content_type: str = "application/json", *, timeout: float = 30,
         **headers: str):
    """POSTs `body` to `path` and returns the response: a Flask test response when `target` is a test
    client, a requests.Response when it is a running Server (anything with a `url`).

    `body`: bytes are sent as they are, anything else as JSON. `headers`: extra request headers, such as
    Accept="application/x-npy" or **{"X-Request-Id": "abc"}; those given as None are left out.
    """
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {name: value for name, value in headers.items() if value is not None}
    url = getattr(target, "url", None)
    if url is not None:
        return requests.post(f"{url}{path}", data=data, headers={"Content-Type": content_type, **headers},
                             timeout=timeout)
    return target.post(path, data=data, content_type=content_type, headers=headers)


def get(target, path: str, *, timeout: float = 10, **headers: str):
    """GETs `path`, from a Flask test client or a running Server, as `post` does."""
    url = getattr(target, "url", None)
    if url is not None:
        return requests.get(f"{url}{path}", headers=headers, timeout=timeout)
    return target.get(path, headers=headers)
