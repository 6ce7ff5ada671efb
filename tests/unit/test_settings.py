"""Settings.from_env: defaults, every variable parsed, batch-mode defaults, and clear errors."""
from __future__ import annotations

import pytest

from clip_sagemaker.settings import (DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME, DEFAULT_MODEL_PRETRAINED, MB, Settings,
                                     SettingsError)


def test_empty_environment_gives_documented_defaults():
    s = Settings.from_env({})
    assert s == Settings()
    assert s.model_dir == DEFAULT_MODEL_DIR == "/opt/ml/model"
    assert s.model_dir_explicit is False
    assert s.model_name == DEFAULT_MODEL_NAME == "ViT-B-32"
    assert s.model_pretrained == DEFAULT_MODEL_PRETRAINED == "laion2b_s34b_b79k"
    assert s.device is None and s.precision is None and s.torch_threads is None
    assert s.port == 8080
    assert s.workers is None
    assert s.http_threads == 32
    assert s.timeout_s == 60.0
    assert s.batch_mode is False
    assert s.log_level == "info"
    assert s.max_batch_size is None
    assert s.max_queue == 1024
    assert s.max_body_bytes == 6 * MB
    assert s.max_items == 256
    assert s.max_image_pixels == 40_000_000


def test_blank_values_count_as_unset():
    env = {name: "   " for name in ("MODEL_DIR", "MODEL_NAME", "PRECISION", "TORCH_NUM_THREADS", "MAX_BODY_MB",
                                   "SAGEMAKER_BATCH", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "LOG_LEVEL")}
    assert Settings.from_env(env) == Settings()


def test_every_variable_is_parsed_into_its_field():
    env = {
        "MODEL_DIR": " /models/mine ",
        "MODEL_NAME": "ViT-L-14",
        "MODEL_PRETRAINED": "openai",
        "DEVICE": "cuda:1",
        "PRECISION": "BF16",
        "TORCH_NUM_THREADS": "3",
        "SAGEMAKER_BIND_TO_PORT": "9090",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "4",
        "SERVER_THREADS": "16",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "12.5",
        "SAGEMAKER_BATCH": "false",
        "LOG_LEVEL": "DEBUG",
        "MAX_BATCH_SIZE": "64",
        "MAX_QUEUE": "10",
        "MAX_BODY_MB": "20",
        "MAX_ITEMS": "7",
        "MAX_IMAGE_PIXELS": "1000000",
    }
    s = Settings.from_env(env)
    assert s.model_dir == "/models/mine"
    assert s.model_dir_explicit is True
    assert s.model_name == "ViT-L-14"
    assert s.model_pretrained == "openai"
    assert s.device == "cuda:1"
    assert s.precision == "bf16"
    assert s.torch_threads == 3
    assert s.port == 9090
    assert s.workers == 4
    assert s.http_threads == 16
    assert s.timeout_s == 12.5
    assert s.batch_mode is False
    assert s.log_level == "debug"
    assert s.max_batch_size == 64
    assert s.max_queue == 10
    assert s.max_body_bytes == 20 * MB
    assert s.max_items == 7
    assert s.max_image_pixels == 1_000_000


@pytest.mark.parametrize("value", ["fp32", "fp16", "bf16", "FP16"])
def test_precision_accepts_each_supported_choice(value):
    assert Settings.from_env({"PRECISION": value}).precision == value.lower()


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on"])
def test_batch_mode_raises_the_timeout_default(value):
    s = Settings.from_env({"SAGEMAKER_BATCH": value})
    assert s.batch_mode is True
    assert s.timeout_s == 600.0
    assert s.max_body_bytes == 6 * MB  # batch requests get the announced MaxPayloadInMB instead (batch.py)


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "Off"])
def test_batch_mode_off_keeps_real_time_defaults(value):
    s = Settings.from_env({"SAGEMAKER_BATCH": value})
    assert s.batch_mode is False
    assert s.timeout_s == 60.0
    assert s.max_body_bytes == 6 * MB


def test_batch_mode_defaults_yield_to_explicit_values():
    s = Settings.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90",
                           "MAX_BODY_MB": "8"})
    assert s.timeout_s == 90.0
    assert s.max_body_bytes == 8 * MB


def test_async_inference_allows_a_1_gb_body_and_an_hour_per_request():
    s = Settings.from_env({"ASYNC_INFERENCE": "true"})
    assert s.async_mode is True
    assert (s.max_body_bytes, s.timeout_s) == (1024 * MB, 3600.0)
    assert Settings.from_env({"ASYNC_INFERENCE": "false"}) == Settings()


def test_async_inference_defaults_yield_to_explicit_values():
    s = Settings.from_env({"ASYNC_INFERENCE": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "900", "MAX_BODY_MB": "200"})
    assert (s.max_body_bytes, s.timeout_s) == (200 * MB, 900.0)


def test_model_dir_set_marks_it_explicit_and_unset_does_not():
    assert Settings.from_env({"MODEL_DIR": "/opt/ml/model"}).model_dir_explicit is True
    assert Settings.from_env({"MODEL_DIR": "/opt/ml/model"}).model_dir == "/opt/ml/model"
    assert Settings.from_env({}).model_dir_explicit is False


@pytest.mark.parametrize("name, value", [
    ("TORCH_NUM_THREADS", "two"),
    ("TORCH_NUM_THREADS", "0"),
    ("SAGEMAKER_BIND_TO_PORT", "80a"),
    ("SAGEMAKER_BIND_TO_PORT", "0"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "1.5"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "-1"),
    ("SERVER_THREADS", "many"),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "soon"),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "0.5"),
    ("SAGEMAKER_BATCH", "maybe"),
    ("PRECISION", "int8"),
    ("MAX_BATCH_SIZE", "0"),
    ("MAX_QUEUE", "x"),
    ("MAX_BODY_MB", "6MB"),
    ("MAX_ITEMS", "0"),
    ("MAX_IMAGE_PIXELS", "1e6"),
])
def test_bad_value_raises_settings_error_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert name in message
    assert repr(value) in message


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_replace_returns_a_changed_copy():
    s = Settings()
    t = s.replace(max_items=3)
    assert t.max_items == 3
    assert s.max_items == 256


def test_device_is_case_insensitive():
    from clip_sagemaker.settings import Settings
    assert Settings.from_env({"DEVICE": "CPU"}).device == "cpu"


def test_an_unknown_log_level_is_a_settings_error():
    import pytest
    from clip_sagemaker.settings import Settings, SettingsError
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "verbose"})
    assert Settings.from_env({"LOG_LEVEL": "DEBUG"}).log_level == "debug"


def test_image_url_settings_build_the_fetch_policy():
    import pytest
    from clip_sagemaker.fetch import FetchPolicy
    from clip_sagemaker.settings import MB, Settings, SettingsError
    settings = Settings.from_env({"IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1, images.internal 10.0.0.0/8",
                                  "MAX_IMAGE_MB": "3", "IMAGE_FETCH_TIMEOUT": "5"})
    policy = FetchPolicy.from_settings(settings)
    assert policy.max_bytes == 3 * MB and policy.total_timeout_s == 5.0 and policy.read_timeout_s == 5.0
    assert "images.internal" in policy._allowed_names
    with pytest.raises(SettingsError, match="IMAGE_URL_ALLOWED_HOSTS"):
        FetchPolicy.from_settings(Settings.from_env({"IMAGE_URL_ALLOWED_HOSTS": "10.0.0.0/33"}))


def test_the_jobs_batch_settings_win_over_the_containers():
    from clip_sagemaker.settings import Settings
    s = Settings.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "BATCH_MAX_PAYLOAD_MB": "8",
                           "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3", "BATCH_MAX_CONCURRENT_TRANSFORMS": "9"})
    assert (s.batch_max_payload_mb, s.batch_max_concurrent) == (20, 3)
    s = Settings.from_env({"BATCH_MAX_PAYLOAD_MB": "8", "BATCH_MAX_CONCURRENT_TRANSFORMS": "9"})
    assert (s.batch_max_payload_mb, s.batch_max_concurrent) == (8, 9)


def test_a_payload_above_batch_transforms_limit_is_refused():
    import pytest
    from clip_sagemaker.settings import Settings, SettingsError
    with pytest.raises(SettingsError, match="100"):
        Settings.from_env({"BATCH_MAX_PAYLOAD_MB": "101"})


def test_from_env_reads_only_declared_variables_and_every_declared_one():
    from clip_sagemaker.settings import ENVIRONMENT, Settings

    class Recording(dict):
        def __init__(self):
            super().__init__()
            self.read = set()

        def get(self, key, default=None):
            self.read.add(key)
            return default

    env = Recording()
    Settings.from_env(env)
    assert env.read == set(ENVIRONMENT)
    assert len(ENVIRONMENT) == len(set(ENVIRONMENT))


def test_the_docs_configuration_table_lists_exactly_the_declared_variables():
    import re
    from pathlib import Path
    from clip_sagemaker.settings import ENVIRONMENT

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = [name for row in section.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])]
    assert sorted(documented) == sorted(ENVIRONMENT)


def test_multi_model_settings_are_read_and_a_memory_factor_below_one_is_refused():
    import pytest
    from clip_sagemaker.settings import Settings, SettingsError

    s = Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "MULTI_MODEL_MEMORY_MB": "2048",
                           "MULTI_MODEL_MEMORY_FACTOR": "2.5"})
    assert (s.multi_model, s.multi_model_memory_mb, s.multi_model_memory_factor) == (True, 2048, 2.5)
    assert Settings.from_env({}).multi_model is False
    with pytest.raises(SettingsError, match="MULTI_MODEL_MEMORY_FACTOR"):
        Settings.from_env({"MULTI_MODEL_MEMORY_FACTOR": "0.5"})
