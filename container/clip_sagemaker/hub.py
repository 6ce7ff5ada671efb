"""The Hugging Face Hub at start-up: whether the model needs it, and one short probe of whether it answers.

Without network, huggingface_hub retries each file five times with backoff (about 25 s per file, two files
per pretrained tag) before open_clip gives up. `serve` probes the Hub once instead, and when nothing
answers it sets the Hub's own switch, HF_HUB_OFFLINE=1, for the workers: weights already in the Hugging
Face cache still load, and anything else fails at once. Torch-free: the launcher runs it in gunicorn's
master.
"""
from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.request
from typing import MutableMapping, Optional

from .model_source import ModelSource

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 5.0
OFFLINE_VARIABLE = "HF_HUB_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


def _probe(url: str, timeout: float) -> Optional[str]:
    """None when something answers at `url` (any HTTP status will do), else why not."""
    outcome: dict[str, Optional[str]] = {}

    def attempt() -> None:
        try:
            # urllib honours HTTPS_PROXY / NO_PROXY as the Hub's own client does.
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome["error"] = None
        except urllib.error.HTTPError:
            outcome["error"] = None  # it answered
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            # A TLS failure means something answered: a proxy's CA may be one urllib lacks and the Hub's client has.
            answered = isinstance(reason, ssl.SSLError)
            named = f"{type(reason).__name__}: {reason}" if isinstance(reason, Exception) else str(reason)
            outcome["error"] = None if answered else named

    # A name lookup has no timeout of its own: wait for the attempt in a thread, and stop waiting.
    thread = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("error", f"no answer within {timeout:g} s")


def offline_when_unreachable(source: ModelSource, environ: MutableMapping[str, str],
                             timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """When `source` downloads from the Hub, the Hub is not switched off already and does not answer: sets
    HF_HUB_OFFLINE=1 in `environ` and returns a line saying so; else None."""
    if not source.from_hub or environ.get(OFFLINE_VARIABLE, "").strip().lower() in _TRUE:
        return None
    endpoint = environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    problem = _probe(endpoint, timeout)
    if problem is None:
        return None
    environ[OFFLINE_VARIABLE] = "1"
    return (f"the Hugging Face Hub ({endpoint}) cannot be reached ({problem}): loading the weights from the "
            f"local Hugging Face cache only ({OFFLINE_VARIABLE}=1)")
