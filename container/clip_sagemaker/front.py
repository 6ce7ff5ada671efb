"""The buffering front: nginx on the serving port, handing whole requests to gunicorn on a unix socket.

gunicorn's gthread workers give each connection a thread while they read it, so a few dozen clients that
trickle or stall their headers or bodies hold every thread and /ping stops answering (gunicorn's own docs:
run it behind a buffering proxy). nginx reads requests with an event loop and passes only complete ones
on, and buffers answers for slow readers, so no client holds an app thread for longer than its request
runs. The configuration is rendered here from Settings at every start, so that its body limit, timeouts
and error bodies cannot disagree with the app's. No torch; runs in the launcher.
"""
from __future__ import annotations

import json
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ApiError, Unavailable
from .payload_limits import BodyLimit, body_limit, execution_parameters
from .settings import Settings, SettingsError
from .worker_layout import Layout

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
# gunicorn's keep-alive before the front existed; SageMaker's own front keeps connections for 60 s.
KEEPALIVE_S = 75
# Requests bodies up to this stay in nginx's memory; larger ones go to a file under the run directory.
BODY_BUFFER = "1m"
# Answers larger than nginx's memory buffers spill to a file, up to this; beyond it nginx passes the rest
# on as the client reads it (holding that one request's app thread, never others).
ANSWER_SPILL_LIMIT = "256m"
# nginx's own answers (internal locations: a client cannot ask for them).
ERROR_PREFIX = "/.front-error/"
# Between nginx and gunicorn: a few seconds of slack on top of the app's own deadline, as gunicorn has.
UPSTREAM_SLACK_S = 30


def nginx_binary() -> Optional[str]:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def front_wanted(settings: Settings) -> Optional[str]:
    """The nginx to run in front, or None to let gunicorn take the port itself."""
    if settings.front == "off":
        return None
    binary = nginx_binary()
    if binary is None and settings.front == "on":
        raise SettingsError("FRONT=on but nginx is not installed (apt-get install nginx-light), or use FRONT=off "
                            "to serve without the front (slow clients can then hold every HTTP thread)")
    return binary


@dataclass(frozen=True)
class FrontFiles:
    """Where one start's front keeps its files: all under one run directory in /tmp."""
    run_dir: Path

    @classmethod
    def create(cls) -> "FrontFiles":
        run_dir = Path(tempfile.mkdtemp(prefix="clip-sagemaker-"))
        # Started as root, nginx runs its workers as nobody: they must reach the socket through this folder.
        run_dir.chmod(0o711)
        return cls(run_dir)

    @property
    def socket(self) -> Path:
        return self.run_dir / "gunicorn.sock"

    @property
    def config(self) -> Path:
        return self.run_dir / "nginx.conf"


def _quoted(payload: dict) -> str:
    """A JSON body as an nginx string literal (single-quoted; nginx unescapes backslash escapes)."""
    text = json.dumps(payload, separators=(",", ":"))
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error_locations(settings: Settings, too_large: BodyLimit) -> list[tuple[str, ApiError]]:
    """(location name, error) for each answer nginx gives itself, in the app's error format and status."""
    return [("body_too_large", too_large.refuse()),
            ("bad_request", ApiError("the request could not be read as HTTP (malformed request line or headers)",
                                     code="bad_request")),
            ("client_timeout", ApiError(f"the client sent nothing for {settings.client_timeout_s:g} s "
                                        f"(CLIENT_TIMEOUT)", code="client_timeout", status=408)),
            ("header_too_large", ApiError("the request line or a header is longer than 16 KB",
                                          code="header_too_large")),
            ("not_ready", Unavailable("the server is starting or restarting; retry when GET /ping answers 200",
                                      code="not_ready"))]


def _connections() -> tuple[int, int]:
    """(open files, connections per worker): as many as this process may open; each proxied request uses
    two connections and a file for a spilled body."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    return files, max(512, files // 3)


def render_config(settings: Settings, layout: Layout, files: FrontFiles) -> str:
    run = files.run_dir
    nofile, connections = _connections()
    upstream_s = int(settings.timeout_s) + UPSTREAM_SLACK_S
    client_s = f"{round(settings.client_timeout_s * 1000)}ms"  # nginx takes no fractions of a second
    largest = body_limit(settings, execution_parameters(settings, layout), batch_request=True)
    # An asynchronous endpoint's bodies (up to 1 GB) come from SageMaker's own service reading S3, never from
    # a slow client: streamed to the app, which spools them once, instead of a second copy under /tmp.
    request_buffering = "off" if settings.async_mode else "on"
    # Internal URIs, not named locations: a request whose line could not be parsed has no URI to redirect from.
    error_pages = "\n".join(f"        location = {ERROR_PREFIX}{name} {{ internal; default_type application/json; "
                            f"return {error.status} {_quoted(error.body())}; }}"
                            for name, error in _error_locations(settings, largest))
    return f"""# Rendered by clip_sagemaker.front at start from the settings; edits here are lost at the next start.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {run}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections {connections};
}}

http {{
    access_log off;                 # the app logs one JSON line per request
    server_tokens off;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;

    client_header_timeout {client_s};
    client_body_timeout {client_s};
    send_timeout {client_s};
    reset_timedout_connection on;
    keepalive_timeout {KEEPALIVE_S}s;
    client_max_body_size {largest.bytes};
    client_body_buffer_size {BODY_BUFFER};
    large_client_header_buffers 4 16k;
    underscores_in_headers on;      # every header reaches the app as it did without the front

    upstream app {{
        server unix:{files.socket} fail_timeout=0;
        keepalive 32;
    }}

    server {{
        listen 0.0.0.0:{settings.port} default_server;

        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            proxy_send_timeout {upstream_s}s;
            proxy_read_timeout {upstream_s}s;
            proxy_next_upstream off;    # never send a request to the app twice
            proxy_request_buffering {request_buffering};
            proxy_redirect off;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size {ANSWER_SPILL_LIMIT};
        }}

        error_page 413 {ERROR_PREFIX}body_too_large;
        error_page 400 {ERROR_PREFIX}bad_request;
        error_page 408 {ERROR_PREFIX}client_timeout;
        error_page 414 494 =400 {ERROR_PREFIX}header_too_large;
        error_page 502 504 =503 {ERROR_PREFIX}not_ready;
{error_pages}
    }}
}}
"""


def write_config(settings: Settings, layout: Layout, files: FrontFiles) -> None:
    files.config.write_text(render_config(settings, layout, files), encoding="utf-8")


def nginx_command(binary: str, files: FrontFiles) -> list[str]:
    # -e: nginx opens its compiled-in error log before reading the config, which a read-only image refuses.
    return [binary, "-e", "stderr", "-p", str(files.run_dir), "-c", str(files.config)]
