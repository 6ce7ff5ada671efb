"""The front's nginx configuration is rendered from the settings: its body limit is the app's largest, its
timeouts follow SAGEMAKER_MODEL_SERVER_TIMEOUT and CLIENT_TIMEOUT, its own errors are the app's JSON, and
nginx itself accepts it (`nginx -t`, where nginx is installed)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from clip_sagemaker import front
from clip_sagemaker.front import FrontFiles, front_wanted, render_config
from clip_sagemaker.settings import MB, Settings, SettingsError
from clip_sagemaker.worker_layout import Layout

CPU = Layout(workers=1, torch_threads=2, gpus=0)


def _directive(config: str, name: str) -> str:
    match = re.search(rf"^\s*{name} ([^;]+);", config, re.MULTILINE)
    assert match, f"no {name} in the config"
    return match.group(1)


def _render(tmp_path, **changes) -> str:
    return render_config(Settings(**changes), CPU, FrontFiles(tmp_path))


def test_the_body_limit_is_the_largest_the_app_takes(tmp_path):
    assert int(_directive(_render(tmp_path), "client_max_body_size")) == 6 * MB
    assert int(_directive(_render(tmp_path, max_body_bytes=20 * MB), "client_max_body_size")) == 20 * MB
    # Batch requests may be as large as the announced MaxPayloadInMB.
    assert int(_directive(_render(tmp_path, batch_max_payload_mb=50), "client_max_body_size")) == 50 * MB


def test_an_async_endpoint_s_bodies_stream_to_the_app_up_to_its_limit(tmp_path):
    config = render_config(Settings.from_env({"ASYNC_INFERENCE": "true"}), CPU, FrontFiles(tmp_path))
    assert int(_directive(config, "client_max_body_size")) == 1024 * MB
    assert _directive(config, "proxy_request_buffering") == "off"
    assert _directive(config, "proxy_read_timeout") == f"{3600 + front.UPSTREAM_SLACK_S}s"
    assert _directive(_render(tmp_path), "proxy_request_buffering") == "on"


def test_timeouts_follow_the_settings(tmp_path):
    config = _render(tmp_path, timeout_s=600.0, client_timeout_s=7.5)
    assert _directive(config, "proxy_read_timeout") == f"{600 + front.UPSTREAM_SLACK_S}s"
    assert _directive(config, "client_body_timeout") == _directive(config, "client_header_timeout") == "7500ms"
    assert int(_directive(config, "keepalive_timeout").rstrip("s")) >= 75


def test_gunicorn_is_reached_on_the_socket_and_the_port_is_nginx_s(tmp_path):
    config = _render(tmp_path, port=9123)
    assert f"server unix:{tmp_path / 'gunicorn.sock'}" in config
    assert _directive(config, "listen") == "0.0.0.0:9123 default_server"
    # Everything nginx writes stays under the run directory (the image is read-only but for /tmp).
    for name in ("pid", "client_body_temp_path", "proxy_temp_path"):
        assert _directive(config, name).startswith(str(tmp_path))


def test_nginx_own_errors_are_the_app_s_json_body(tmp_path):
    config = _render(tmp_path, max_body_bytes=8 * MB)
    body = re.search(r"return 413 '([^']*)'", config).group(1)
    assert json.loads(body) == {"error": {"code": "body_too_large",
                                          "message": "the request body is larger than 8 MB, the limit of MAX_BODY_MB"}}
    for status in ("400", "408", "414 494 =400", "502 504 =503"):
        assert re.search(rf"error_page {status} {re.escape(front.ERROR_PREFIX)}\w+;", config)


def test_front_setting_on_off_auto(monkeypatch):
    assert Settings.from_env({}).front == "auto"
    assert Settings.from_env({"FRONT": "true"}).front == "on"
    assert Settings.from_env({"FRONT": "0"}).front == "off"
    with pytest.raises(SettingsError, match="FRONT='sometimes' must be auto, on or off"):
        Settings.from_env({"FRONT": "sometimes"})
    monkeypatch.setattr(front, "NGINX_CANDIDATES", ("/nonexistent/nginx",))
    assert front_wanted(Settings(front="auto")) is None
    assert front_wanted(Settings(front="off")) is None
    with pytest.raises(SettingsError, match="FRONT=on but nginx is not installed"):
        front_wanted(Settings(front="on"))


@pytest.mark.skipif(shutil.which("nginx") is None and shutil.which("/usr/sbin/nginx") is None,
                    reason="nginx is not installed")
@pytest.mark.parametrize("changes", [{}, {"batch_mode": True, "timeout_s": 3600.0, "batch_max_payload_mb": 100},
                                     {"async_mode": True, "timeout_s": 3600.0, "max_body_bytes": 1024 * MB},
                                     {"client_timeout_s": 2.5}])
def test_nginx_accepts_the_rendered_config(tmp_path, changes):
    files = FrontFiles(tmp_path)
    front.write_config(Settings(**changes), CPU, files)
    command = front.nginx_command(front.nginx_binary(), files) + ["-t", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
