#!/usr/bin/env python3
"""Deploys the clip-sagemaker container to Amazon SageMaker, one explicit boto3 call at a time.

Needs `pip install boto3` (and Docker for push-image); AWS credentials and the region come from the usual
places (environment, ~/.aws, --profile / --region). Every subcommand prints what it does on stderr and its
result (a path, an S3 URL, an image URI, an endpoint or job name) on stdout.

  package-model    check a model directory and pack it as model.tar.gz (files at the top level), optionally
                   upload it to S3
  push-image       create the ECR repository if needed, log Docker in, optionally build, tag and push
  create-endpoint  CreateModel + CreateEndpointConfig + CreateEndpoint, optionally wait until InService and
                   register target-tracking autoscaling
  autoscale        register autoscaling for an endpoint that is already InService
  batch-transform  CreateTransformJob over JSON Lines files in S3, optionally wait for the result

Every other hosting mode (docs/hosting-*.md):

  create-async-endpoint        an asynchronous endpoint (AsyncInferenceConfig, ASYNC_INFERENCE=true), with
                               autoscaling on the backlog, down to zero instances
  create-serverless-endpoint   a serverless endpoint (ServerlessConfig: memory size, max concurrency)
  create-multi-model-endpoint  a multi-model endpoint (Mode MultiModel, an S3 prefix of model.tar.gz files)
  create-component-endpoint    an endpoint for inference components, then
  create-inference-component   a model on it with its cores, accelerators, memory and copy count
  invoke                       one request (TargetModel for a multi-model endpoint, or an inference component)
  invoke-async                 one queued request whose body is in S3; prints where its answer will be

A typical run:

  local_test/deploy.py package-model --model-dir model/ --out model.tar.gz \\
      --upload s3://my-bucket/clip/model.tar.gz
  local_test/deploy.py push-image --repository clip-sagemaker --tag v1 --build
  local_test/deploy.py create-endpoint --name clip --image IMAGE-URI --model-data s3://my-bucket/clip/model.tar.gz \\
      --role arn:aws:iam::123456789012:role/SageMakerRole --instance-type ml.g5.xlarge \\
      --wait --min-instances 1 --max-instances 4 --target-invocations 100
  local_test/deploy.py batch-transform --job-name clip-batch-1 --model-name clip \\
      --input s3://my-bucket/in/ --output s3://my-bucket/out/ --instance-type ml.g5.xlarge --wait
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "container"))

from clip_sagemaker.model_files import make_tarball  # noqa: E402
from clip_sagemaker.model_source import CONFIG_FILE, WEIGHT_FILES  # noqa: E402
from clip_sagemaker.settings import SAGEMAKER_PAYLOAD_LIMIT_MB as PAYLOAD_LIMIT_MB  # noqa: E402

try:  # only the AWS subcommands need boto3; --help and package-model without --upload work without it
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError
except ImportError:  # pragma: no cover - exercised only where boto3 is missing
    boto3 = None

    class BotoCoreError(Exception):
        pass

    class ClientError(Exception):
        pass

    class WaiterError(Exception):
        pass

PROG = "deploy.py"
DEFAULT_LOCAL_IMAGE = "clip-sagemaker:latest"
VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"   # asynchronous endpoints' queue, per instance
NO_CAPACITY_METRIC = "HasBacklogWithoutCapacity"       # 1 when requests wait and no instance runs
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
STARTUP_HEALTH_CHECK_TIMEOUT_S = 600  # loading big OpenCLIP models takes longer than the default 4 minutes
MODEL_DOWNLOAD_TIMEOUT_S = 1200       # multi-GB model.tar.gz files
TRANSFORM_ENV_LIMIT = 16              # CreateTransformJob's Environment holds at most 16 entries
MODEL_ENV_LIMIT = 100                 # CreateModel's Environment holds at most 100

# Patterns from the SageMaker / ECR API models.
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_RE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
_ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_ECR_REPO_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_INSTANCE_RE = re.compile(r"^ml\.[a-z0-9\-]+\.[a-z0-9]+$")
_ACCELERATED_RE = re.compile(r"^ml\.(g\d|p\d|inf\d|trn\d|dl\d)")  # GPU, Inferentia, Trainium, Gaudi
_SNS_RE = re.compile(r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+$")

Runner = Callable[..., object]


def fail(message: str) -> NoReturn:
    """Stops with a one-line message on stderr and exit status 1."""
    raise SystemExit(f"{PROG}: error: {message}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- validation ----------------------------------------------------------------------------------------------

def parse_s3_url(url: str, what: str = "S3 URL", object_key: bool = False) -> Tuple[str, str]:
    """(bucket, key) of an s3://bucket/key URL; with object_key, the key must name an object."""
    parts = urlsplit(url or "")
    if parts.scheme != "s3" or not parts.netloc:
        fail(f"{what} must look like s3://BUCKET/KEY, got {url!r}")
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        fail(f"{what} {url!r}: {bucket!r} is not a valid S3 bucket name")
    if parts.query or parts.fragment:
        fail(f"{what} {url!r} must not hold '?' or '#'")
    if object_key and (not key or key.endswith("/")):
        fail(f"{what} {url!r} must name an object (s3://BUCKET/path/model.tar.gz), not a bucket or prefix")
    return bucket, key


def parse_env(pairs: Optional[Iterable[str]], limit: int) -> Dict[str, str]:
    """KEY=VALUE strings as a dict (later keys win), checked by check_env."""
    env: Dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--env {pair!r} must be KEY=VALUE")
        env[key] = value
    return check_env(env, limit)


def check_env(env: Optional[Mapping[str, str]], limit: int) -> Dict[str, str]:
    """At most `limit` entries, with SageMaker's name syntax and value length."""
    env = dict(env or {})
    for key, value in env.items():
        if not _ENV_KEY_RE.match(key):
            fail(f"--env {key}=...: the name {key!r} must be letters, digits and _, not starting with a digit")
        if len(value) > 10240:
            fail(f"--env {key}: the value is longer than SageMaker's limit of 10240 characters")
    if len(env) > limit:
        fail(f"{len(env)} environment variables given ({', '.join(env)}); SageMaker allows at most {limit} here")
    return env


def check_name(name: str, what: str) -> str:
    if not name or not _NAME_RE.match(name):
        fail(f"{what} {name!r} must be 1-63 letters, digits and hyphens, starting and ending with a letter or digit")
    return name


def check_instance_type(instance_type: str) -> str:
    if not _INSTANCE_RE.match(instance_type or ""):
        fail(f"instance type {instance_type!r} must look like ml.g5.xlarge")
    return instance_type


def check_count(value: Optional[int], what: str, minimum: int = 1, maximum: Optional[int] = None) -> None:
    if value is None:
        return
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        fail(f"{what} must be {bounds}, got {value}")


def check_model_dir(model_dir: Path) -> Path:
    """The weights file of an open_clip model directory, after checking the config parses; fails otherwise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        fail(f"--model-dir {model_dir} is not a directory")
    config = model_dir / CONFIG_FILE
    if not config.is_file():
        fail(f"{model_dir} has no {CONFIG_FILE}; make a model directory with "
             f"`python -m clip_sagemaker.model_files` (README.md)")
    try:
        parsed = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{config} is not valid JSON: {exc}")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_cfg"), dict):
        fail(f"{config} must hold {{\"model_cfg\": {{...}}, \"preprocess_cfg\": {{...}}}} (open_clip's layout)")
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    fail(f"{model_dir} holds no weights file: expected one of {', '.join(WEIGHT_FILES)}")


# ---- package-model -------------------------------------------------------------------------------------------

def package_model(model_dir: Path, out: Path, upload: Optional[str] = None, s3=None) -> str:
    """Writes model.tar.gz (files at the top level, as SageMaker unpacks it into /opt/ml/model) and optionally
    uploads it with s3.upload_file. Returns the S3 URL when uploaded, else the local path."""
    model_dir, out = Path(model_dir), Path(out)
    weights = check_model_dir(model_dir)
    if upload is not None:
        bucket, key = parse_s3_url(upload, "--upload", object_key=True)
        if s3 is None:
            fail("an S3 client is needed to upload")
    if out.resolve().parent == model_dir.resolve():
        fail(f"--out {out} must not be inside --model-dir (the tarball would contain itself)")
    out.parent.mkdir(parents=True, exist_ok=True)
    make_tarball(model_dir, out)
    log(f"wrote {out} ({out.stat().st_size} bytes; weights {weights.name})")
    if upload is None:
        return str(out)
    log(f"uploading {out} to {upload}")
    s3.upload_file(str(out), bucket, key)
    return upload


# ---- push-image ----------------------------------------------------------------------------------------------

def default_run(cmd: Sequence[str], **kwargs):
    """subprocess.run with check=True; the tools' own output goes to stderr so stdout holds only the result."""
    try:
        kwargs.setdefault("stdout", sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return subprocess.run(list(cmd), check=True, **kwargs)


def ensure_repository(ecr, repository: str) -> str:
    """The repository's URI, creating the repository (with image scanning on push) when it does not exist."""
    try:
        found = ecr.describe_repositories(repositoryNames=[repository])
        uri = found["repositories"][0]["repositoryUri"]
        log(f"ECR repository {repository} exists: {uri}")
        return uri
    except ecr.exceptions.RepositoryNotFoundException:
        pass
    created = ecr.create_repository(repositoryName=repository,
                                    imageScanningConfiguration={"scanOnPush": True})
    uri = created["repository"]["repositoryUri"]
    log(f"created ECR repository {repository}: {uri}")
    return uri


def ecr_credentials(ecr) -> Tuple[str, str, str]:
    """(username, password, registry endpoint) from ecr.get_authorization_token."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    username, sep, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if not sep or not password:
        fail("ECR returned an authorization token that is not USER:PASSWORD")
    return username, password, data["proxyEndpoint"]


def push_image(ecr, repository: str, tag: str = "latest", local_image: str = DEFAULT_LOCAL_IMAGE,
               build: bool = False, context: Path = REPO, build_args: Sequence[str] = (),
               platform: Optional[str] = None, run: Optional[Runner] = None) -> str:
    """Ensures the ECR repository, logs Docker in (password on stdin), optionally builds, tags and pushes.
    Returns the pushed image URI, ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG. `run` runs each
    command (default: default_run, subprocess.run with check=True)."""
    run = run or default_run
    if not _ECR_REPO_RE.match(repository or "") or not 2 <= len(repository) <= 256:
        fail(f"--repository {repository!r} is not a valid ECR repository name (lowercase letters, digits, "
             f"., _, - and / separated parts)")
    if not _TAG_RE.match(tag or ""):
        fail(f"--tag {tag!r} must be up to 128 letters, digits, _, . and -, not starting with . or -")
    for arg in build_args:
        if "=" not in arg:
            fail(f"--build-arg {arg!r} must be NAME=VALUE")
    repository_uri = ensure_repository(ecr, repository)
    image_uri = f"{repository_uri}:{tag}"
    username, password, endpoint = ecr_credentials(ecr)

    log(f"docker login {endpoint}")
    run(["docker", "login", "--username", username, "--password-stdin", endpoint], input=password, text=True)
    if build:
        cmd = ["docker", "build"]
        if platform:
            cmd += ["--platform", platform]
        for arg in build_args:
            cmd += ["--build-arg", arg]
        cmd += ["-t", local_image, str(context)]
        log("DOCKER_BUILDKIT=1 " + " ".join(cmd))
        run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    for cmd in (["docker", "tag", local_image, image_uri], ["docker", "push", image_uri]):
        log(" ".join(cmd))
        run(cmd)
    return image_uri


# ---- create-endpoint / autoscale -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Autoscaling:
    min_instances: int
    max_instances: int
    target_invocations: float      # SageMakerVariantInvocationsPerInstance: invocations per instance per minute
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60

    def validate(self) -> "Autoscaling":
        check_scaling_limits(self, lowest=1, target=self.target_invocations, target_option="--target-invocations")
        return self


def check_scaling_limits(scaling, lowest: int, target: float, target_option: str) -> None:
    """The instance range, the target and the cooldowns of an autoscaling policy."""
    check_count(scaling.min_instances, "--min-instances", minimum=lowest)
    check_count(scaling.max_instances, "--max-instances")
    if scaling.min_instances > scaling.max_instances:
        fail(f"--min-instances {scaling.min_instances} is above --max-instances {scaling.max_instances}")
    if not target > 0:
        fail(f"{target_option} must be above 0, got {target}")
    check_count(scaling.scale_in_cooldown, "--scale-in-cooldown", minimum=0)
    check_count(scaling.scale_out_cooldown, "--scale-out-cooldown", minimum=0)


def register_autoscaling(aas, endpoint: str, scaling: Autoscaling, variant: str = VARIANT) -> None:
    """RegisterScalableTarget + a target-tracking PutScalingPolicy on invocations per instance."""
    scaling.validate()
    resource_id = f"endpoint/{endpoint}/variant/{variant}"
    log(f"autoscaling {resource_id}: {scaling.min_instances}-{scaling.max_instances} instances, "
        f"target {scaling.target_invocations:g} invocations per instance per minute")
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource_id,
                                 ScalableDimension=SCALABLE_DIMENSION,
                                 MinCapacity=scaling.min_instances, MaxCapacity=scaling.max_instances)
    aas.put_scaling_policy(
        PolicyName=f"{endpoint}-invocations-per-instance",
        ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
            "ScaleInCooldown": scaling.scale_in_cooldown,
            "ScaleOutCooldown": scaling.scale_out_cooldown,
        })


def wait_in_service(sm, name: str, delay: int = 30, max_attempts: int = 120) -> None:
    """Waits for EndpointStatus InService; fails with SageMaker's FailureReason otherwise."""
    log(f"waiting for endpoint {name} to be InService (checks every {delay} s)")
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name,
                                                  WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts})
    except WaiterError as exc:
        described = getattr(exc, "last_response", None) or {}
        status = described.get("EndpointStatus", "unknown")
        reason = described.get("FailureReason") or str(exc)
        fail(f"endpoint {name} is not InService (status {status}): {reason}")
    log(f"endpoint {name} is InService")


def check_model_args(name: str, image: str, model_data: str, role: str, prefix: bool = False) -> None:
    """The arguments of CreateModel: a model.tar.gz object (or, for a multi-model endpoint, an S3 prefix)."""
    check_name(name, "--name")
    if not image or any(c.isspace() for c in image):
        fail(f"--image {image!r} must be an image URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG)")
    if prefix:
        parse_s3_url(model_data, "--model-data")
        if not model_data.endswith("/"):
            fail(f"--model-data {model_data!r} must be the S3 prefix that holds the model.tar.gz files, ending in /")
    else:
        parse_s3_url(model_data, "--model-data", object_key=True)
    check_role(role)


def check_role(role: str) -> None:
    if not _ROLE_RE.match(role or ""):
        fail(f"--role {role!r} must be an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")


def check_timeouts(startup_timeout: int, download_timeout: int) -> None:
    check_count(startup_timeout, "--startup-timeout", 60, 3600)
    check_count(download_timeout, "--download-timeout", 60, 3600)


def create_model(sm, name: str, image: str, model_data: str, role: str, env: Mapping[str, str],
                 network_isolation: bool, mode: Optional[str] = None) -> None:
    """CreateModel with one container; mode "MultiModel" makes model_data a prefix of model.tar.gz files."""
    container = {"Image": image, "ModelDataUrl": model_data}
    if mode:
        container["Mode"] = mode
    if env:
        container["Environment"] = dict(env)
    log(f"creating model {name} ({image}, {model_data}{', ' + mode if mode else ''})")
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role,
                    EnableNetworkIsolation=bool(network_isolation))


def instance_variant(instance_type: str, instance_count: int, model_name: Optional[str] = None,
                     startup_timeout: Optional[int] = STARTUP_HEALTH_CHECK_TIMEOUT_S,
                     download_timeout: Optional[int] = MODEL_DOWNLOAD_TIMEOUT_S) -> dict:
    """A production variant on instances (ModelName left out for an endpoint that hosts inference components)."""
    variant = {"VariantName": VARIANT}
    if model_name:
        variant["ModelName"] = model_name
    variant.update(InitialInstanceCount=instance_count, InstanceType=instance_type)
    if startup_timeout is not None:
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = startup_timeout
    if download_timeout is not None:
        variant["ModelDataDownloadTimeoutInSeconds"] = download_timeout
    return variant


def start_endpoint(sm, name: str, variant: dict, wait: bool, **config) -> str:
    """CreateEndpointConfig (`config`: its further parameters) and CreateEndpoint, both named `name`;
    returns the endpoint ARN, with wait once the endpoint is InService."""
    where = variant.get("ServerlessConfig") or f"{variant.get('InitialInstanceCount')} x {variant.get('InstanceType')}"
    log(f"creating endpoint config {name} ({where})")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **config)
    log(f"creating endpoint {name}")
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=name)["EndpointArn"]
    if wait:
        wait_in_service(sm, name)
    else:
        log(f"endpoint {name} is being created (several minutes); "
            f"`aws sagemaker wait endpoint-in-service --endpoint-name {name}` waits for it")
    return arn


def create_endpoint(sm, name: str, image: str, model_data: str, role: str, instance_type: str,
                    instance_count: int = 1, env: Optional[Mapping[str, str]] = None,
                    network_isolation: bool = False, wait: bool = False,
                    autoscaling: Optional[Autoscaling] = None, aas=None,
                    startup_timeout: int = STARTUP_HEALTH_CHECK_TIMEOUT_S,
                    download_timeout: int = MODEL_DOWNLOAD_TIMEOUT_S) -> str:
    """A real-time endpoint: CreateModel, CreateEndpointConfig and CreateEndpoint, all named `name`; returns
    the endpoint ARN.

    Autoscaling can be registered only once the endpoint is InService, so it needs wait=True."""
    check_model_args(name, image, model_data, role)
    check_instance_type(instance_type)
    check_count(instance_count, "--instance-count")
    check_timeouts(startup_timeout, download_timeout)
    env = check_env(env, MODEL_ENV_LIMIT)
    check_scaling_args(name, autoscaling, wait, [aas])
    create_model(sm, name, image, model_data, role, env, network_isolation)
    arn = start_endpoint(sm, name, instance_variant(instance_type, instance_count, name, startup_timeout,
                                                    download_timeout), wait)
    if wait and autoscaling is not None:
        register_autoscaling(aas, name, autoscaling)
    return arn


def check_scaling_args(name: str, scaling, wait: bool, clients: Sequence[object] = ()) -> None:
    """Autoscaling, when asked for, needs wait (the endpoint must be InService) and its AWS `clients`."""
    if scaling is None:
        return
    scaling.validate()
    if not wait:
        fail("autoscaling can be registered only once the endpoint is InService: add --wait, or run "
             f"`{PROG} autoscale --name {name} ...` when it is")
    if any(c is None for c in clients):
        fail("application-autoscaling (and CloudWatch) clients are needed to register autoscaling")


def autoscale(sm, aas, name: str, scaling: Autoscaling, variant: str = VARIANT) -> None:
    """Registers autoscaling for an existing endpoint, after checking that it is InService."""
    check_name(name, "--name")
    scaling.validate()
    described = sm.describe_endpoint(EndpointName=name)
    status = described["EndpointStatus"]
    if status != "InService":
        fail(f"endpoint {name} is {status}; autoscaling can be registered only when it is InService "
             f"(`aws sagemaker wait endpoint-in-service --endpoint-name {name}`)")
    variants = [v.get("VariantName") for v in described.get("ProductionVariants") or ()]
    if variants and variant not in variants:
        fail(f"endpoint {name} has no variant {variant!r} (it has {', '.join(variants)})")
    register_autoscaling(aas, name, scaling, variant)


# ---- create-async-endpoint -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BacklogScaling:
    """Autoscaling of an asynchronous endpoint on its queue of requests, down to zero instances if asked."""
    min_instances: int
    max_instances: int
    target_backlog: float          # ApproximateBacklogSizePerInstance: queued requests per instance
    scale_in_cooldown: int = 600
    scale_out_cooldown: int = 300

    def validate(self) -> "BacklogScaling":
        check_scaling_limits(self, lowest=0, target=self.target_backlog, target_option="--target-backlog")
        return self


def _endpoint_metric(endpoint: str) -> dict:
    return {"Namespace": "AWS/SageMaker", "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
            "Statistic": "Average"}


def register_backlog_autoscaling(aas, cloudwatch, endpoint: str, scaling: BacklogScaling) -> None:
    """RegisterScalableTarget + target tracking on ApproximateBacklogSizePerInstance; with 0 instances allowed,
    also a step-scaling policy that a CloudWatch alarm on HasBacklogWithoutCapacity triggers: with no
    instance, backlog per instance is undefined, so target tracking alone never starts the first one."""
    scaling.validate()
    resource_id = f"endpoint/{endpoint}/variant/{VARIANT}"
    target = dict(ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION)
    log(f"autoscaling {resource_id}: {scaling.min_instances}-{scaling.max_instances} instances, "
        f"target {scaling.target_backlog:g} queued requests per instance")
    aas.register_scalable_target(**target, MinCapacity=scaling.min_instances, MaxCapacity=scaling.max_instances)
    aas.put_scaling_policy(
        PolicyName=f"{endpoint}-backlog-per-instance", PolicyType="TargetTrackingScaling", **target,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.target_backlog),
            "CustomizedMetricSpecification": {"MetricName": BACKLOG_METRIC, **_endpoint_metric(endpoint)},
            "ScaleInCooldown": scaling.scale_in_cooldown,
            "ScaleOutCooldown": scaling.scale_out_cooldown,
        })
    if scaling.min_instances > 0:
        return
    policy = aas.put_scaling_policy(
        PolicyName=f"{endpoint}-{NO_CAPACITY_METRIC}", PolicyType="StepScaling", **target,
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
            "Cooldown": scaling.scale_out_cooldown,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        })
    log(f"alarm {endpoint}-{NO_CAPACITY_METRIC}: starts one instance when requests wait and none runs")
    cloudwatch.put_metric_alarm(
        AlarmName=f"{endpoint}-{NO_CAPACITY_METRIC}", MetricName=NO_CAPACITY_METRIC, **_endpoint_metric(endpoint),
        AlarmDescription=f"{endpoint} has queued requests and no instance: scale out from zero",
        Period=60, EvaluationPeriods=2, DatapointsToAlarm=2, Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
        AlarmActions=[policy["PolicyARN"]])


@dataclass(frozen=True)
class AsyncOutput:
    """Where an asynchronous endpoint writes its answers (and failures), and whom it tells."""
    s3_output: str
    s3_failure: Optional[str] = None
    success_topic: Optional[str] = None
    error_topic: Optional[str] = None
    max_concurrent: Optional[int] = None   # MaxConcurrentInvocationsPerInstance

    def config(self) -> dict:
        """AsyncInferenceConfig, after checking every field."""
        parse_s3_url(self.s3_output, "--output")
        output = {"S3OutputPath": self.s3_output}
        if self.s3_failure:
            parse_s3_url(self.s3_failure, "--failure-output")
            output["S3FailurePath"] = self.s3_failure
        topics = {key: topic for key, topic in (("SuccessTopic", self.success_topic),
                                                ("ErrorTopic", self.error_topic)) if topic}
        for key, topic in topics.items():
            if not _SNS_RE.match(topic):
                fail(f"the {key} {topic!r} must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
        if topics:
            output["NotificationConfig"] = topics
        config = {"OutputConfig": output}
        if self.max_concurrent is not None:
            check_count(self.max_concurrent, "--max-concurrent-invocations", 1, 1000)
            config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": self.max_concurrent}
        return config


def create_async_endpoint(sm, name: str, image: str, model_data: str, role: str, instance_type: str,
                          output: AsyncOutput, instance_count: int = 1, env: Optional[Mapping[str, str]] = None,
                          network_isolation: bool = False, wait: bool = False,
                          scaling: Optional[BacklogScaling] = None, aas=None, cloudwatch=None,
                          startup_timeout: int = STARTUP_HEALTH_CHECK_TIMEOUT_S,
                          download_timeout: int = MODEL_DOWNLOAD_TIMEOUT_S) -> str:
    """An asynchronous endpoint: requests are S3 objects (up to 1 GB) queued by SageMaker, each may run up to
    an hour, answers go to S3. The container runs with ASYNC_INFERENCE=true (its body and time limits)."""
    check_model_args(name, image, model_data, role)
    check_instance_type(instance_type)
    check_count(instance_count, "--instance-count")
    check_timeouts(startup_timeout, download_timeout)
    env = check_env({"ASYNC_INFERENCE": "true", **(env or {})}, MODEL_ENV_LIMIT)
    config = output.config()
    check_scaling_args(name, scaling, wait, [aas, cloudwatch])
    create_model(sm, name, image, model_data, role, env, network_isolation)
    variant = instance_variant(instance_type, instance_count, name, startup_timeout, download_timeout)
    arn = start_endpoint(sm, name, variant, wait, AsyncInferenceConfig=config)
    if wait and scaling is not None:
        register_backlog_autoscaling(aas, cloudwatch, name, scaling)
    return arn


# ---- create-serverless-endpoint ------------------------------------------------------------------------------

def create_serverless_endpoint(sm, name: str, image: str, model_data: str, role: str, memory_mb: int,
                               max_concurrency: int, provisioned_concurrency: Optional[int] = None,
                               env: Optional[Mapping[str, str]] = None, wait: bool = False) -> str:
    """A serverless endpoint: CPU only, MemorySizeInMB of 1024-6144 (in 1024 MB steps), billed per request;
    the container plans its workers for that memory (its cgroup limit) and refuses a model that cannot fit."""
    check_model_args(name, image, model_data, role)
    if memory_mb not in SERVERLESS_MEMORY_MB:
        fail(f"--memory-mb must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}, got {memory_mb}")
    check_count(max_concurrency, "--max-concurrency", 1, 200)
    check_count(provisioned_concurrency, "--provisioned-concurrency", 1, max_concurrency)
    env = check_env(env, MODEL_ENV_LIMIT)
    serverless = {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency}
    if provisioned_concurrency is not None:
        serverless["ProvisionedConcurrency"] = provisioned_concurrency
    create_model(sm, name, image, model_data, role, env, network_isolation=False)
    return start_endpoint(sm, name, {"VariantName": VARIANT, "ModelName": name, "ServerlessConfig": serverless}, wait)


# ---- create-multi-model-endpoint -----------------------------------------------------------------------------

def create_multi_model_endpoint(sm, name: str, image: str, model_prefix: str, role: str, instance_type: str,
                                instance_count: int = 1, env: Optional[Mapping[str, str]] = None,
                                network_isolation: bool = False, wait: bool = False,
                                startup_timeout: int = STARTUP_HEALTH_CHECK_TIMEOUT_S) -> str:
    """A multi-model endpoint: the container (Mode MultiModel) loads each model.tar.gz under the S3 prefix on
    its first request naming it (TargetModel). Custom containers run multi-model on CPU instances only."""
    check_model_args(name, image, model_prefix, role, prefix=True)
    check_instance_type(instance_type)
    if _ACCELERATED_RE.match(instance_type):
        fail(f"--instance-type {instance_type}: multi-model endpoints run custom containers on CPU instances only "
             f"(ml.m5, ml.c5, ml.c6i, ml.r5, ...)")
    check_count(instance_count, "--instance-count")
    check_count(startup_timeout, "--startup-timeout", 60, 3600)
    env = check_env(env, MODEL_ENV_LIMIT)
    create_model(sm, name, image, model_prefix, role, env, network_isolation, mode="MultiModel")
    variant = instance_variant(instance_type, instance_count, name, startup_timeout, download_timeout=None)
    arn = start_endpoint(sm, name, variant, wait)
    log(f"invoke one of its models with: {PROG} invoke --name {name} --target-model clip-a.tar.gz --body BODY.json "
        f"(a key under {model_prefix})")
    return arn


# ---- inference components ------------------------------------------------------------------------------------

def create_component_endpoint(sm, name: str, role: str, instance_type: str, instance_count: int = 1,
                              wait: bool = False) -> str:
    """An endpoint that hosts inference components: an instance variant with no model of its own (the
    components bring theirs), and the execution role on the endpoint config."""
    check_name(name, "--name")
    check_role(role)
    check_instance_type(instance_type)
    check_count(instance_count, "--instance-count")
    variant = instance_variant(instance_type, instance_count, startup_timeout=None, download_timeout=None)
    variant["RoutingConfig"] = {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    return start_endpoint(sm, name, variant, wait, ExecutionRoleArn=role)


@dataclass(frozen=True)
class ComponentResources:
    """What each copy of an inference component reserves on the instance, and how many copies run."""
    cpu_cores: float
    memory_mb: int
    accelerators: Optional[int] = None
    copies: int = 1

    def requirements(self) -> dict:
        if not self.cpu_cores >= 0.25:
            fail(f"--cpu-cores must be at least 0.25, got {self.cpu_cores}")
        check_count(self.memory_mb, "--memory-mb", 128)
        check_count(self.accelerators, "--accelerators")
        check_count(self.copies, "--copies", 0)
        required = {"NumberOfCpuCoresRequired": float(self.cpu_cores), "MinMemoryRequiredInMb": self.memory_mb}
        if self.accelerators is not None:
            required["NumberOfAcceleratorDevicesRequired"] = float(self.accelerators)
        return required


def create_inference_component(sm, name: str, endpoint: str, image: str, model_data: str, role: str,
                               resources: ComponentResources, env: Optional[Mapping[str, str]] = None,
                               network_isolation: bool = False, wait: bool = False,
                               startup_timeout: int = STARTUP_HEALTH_CHECK_TIMEOUT_S,
                               download_timeout: int = MODEL_DOWNLOAD_TIMEOUT_S, delay: int = 30,
                               max_attempts: int = 120) -> str:
    """CreateModel + CreateInferenceComponent on an InService component endpoint. Each copy runs the container
    with its share of cores (a cgroup CPU quota, which the worker layout follows) and of the GPUs
    (CUDA_VISIBLE_DEVICES: one worker per GPU)."""
    check_model_args(name, image, model_data, role)
    check_name(endpoint, "--endpoint")
    check_timeouts(startup_timeout, download_timeout)
    requirements = resources.requirements()
    env = check_env(env, MODEL_ENV_LIMIT)
    create_model(sm, name, image, model_data, role, env, network_isolation)
    log(f"creating inference component {name} on {endpoint}: {resources.copies} x {requirements}")
    arn = sm.create_inference_component(
        InferenceComponentName=name, EndpointName=endpoint, VariantName=VARIANT,
        Specification={"ModelName": name, "ComputeResourceRequirements": requirements,
                       "StartupParameters": {"ModelDataDownloadTimeoutInSeconds": download_timeout,
                                             "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout}},
        RuntimeConfig={"CopyCount": resources.copies})["InferenceComponentArn"]
    if wait:
        wait_component_in_service(sm, name, delay, max_attempts)
    return arn


def wait_component_in_service(sm, name: str, delay: int, max_attempts: int) -> None:
    """Polls DescribeInferenceComponent (botocore has no waiter for it) until InService; fails on Failed."""
    log(f"waiting for inference component {name} to be InService (checks every {delay} s)")
    for _ in range(max_attempts):
        described = sm.describe_inference_component(InferenceComponentName=name)
        status = described["InferenceComponentStatus"]
        if status == "InService":
            log(f"inference component {name} is InService")
            return
        if status == "Failed":
            fail(f"inference component {name} failed: {described.get('FailureReason', 'no reason given')}")
        time.sleep(delay)
    fail(f"inference component {name} was not InService after {delay * max_attempts} s")


# ---- invoke / invoke-async -----------------------------------------------------------------------------------

def invoke(runtime, endpoint: str, body: bytes, content_type: str = "application/json",
           accept: str = "application/json", target_model: Optional[str] = None,
           component: Optional[str] = None) -> bytes:
    """InvokeEndpoint: a real-time, serverless or multi-model endpoint (TargetModel: the model.tar.gz key
    under the endpoint's S3 prefix), or one inference component of an endpoint; returns the answer's body."""
    check_name(endpoint, "--name")
    params = dict(EndpointName=endpoint, Body=body, ContentType=content_type, Accept=accept)
    if target_model:
        params["TargetModel"] = target_model
    if component:
        params["InferenceComponentName"] = check_name(component, "--component")
    return runtime.invoke_endpoint(**params)["Body"].read()


def invoke_async(runtime, endpoint: str, input_location: str, content_type: str = "application/jsonlines",
                 accept: str = "application/jsonlines", invocation_timeout: Optional[int] = None) -> str:
    """InvokeEndpointAsync on a request body already in S3; returns where the answer will be written."""
    check_name(endpoint, "--name")
    parse_s3_url(input_location, "--input", object_key=True)
    check_count(invocation_timeout, "--invocation-timeout", 1, 3600)
    params = dict(EndpointName=endpoint, InputLocation=input_location, ContentType=content_type, Accept=accept)
    if invocation_timeout is not None:
        params["InvocationTimeoutSeconds"] = invocation_timeout
    answer = runtime.invoke_endpoint_async(**params)
    log(f"queued as {answer.get('InferenceId')}; failures would go to {answer.get('FailureLocation', '-')}")
    return answer["OutputLocation"]


# ---- batch-transform -----------------------------------------------------------------------------------------

def batch_transform(sm, job_name: str, model_name: str, input_url: str, output_url: str, instance_type: str,
                    instance_count: int = 1, content_type: str = "application/jsonlines",
                    max_payload_mb: Optional[int] = None, max_concurrent: Optional[int] = None,
                    join_input: bool = False, env: Optional[Mapping[str, str]] = None,
                    wait: bool = False, delay: int = 60, max_attempts: int = 24 * 60) -> str:
    """CreateTransformJob: each input line is a record, many records per request (MultiRecord), one output
    line per record. Returns the job ARN; with wait, prints the final status (and failure reason) first and
    fails unless the job Completed."""
    check_name(job_name, "--job-name")
    check_name(model_name, "--model-name")
    parse_s3_url(input_url, "--input")
    parse_s3_url(output_url, "--output")
    check_instance_type(instance_type)
    check_count(instance_count, "--instance-count")
    check_count(max_payload_mb, "--max-payload-mb", 1, PAYLOAD_LIMIT_MB)
    check_count(max_concurrent, "--max-concurrent", 1, PAYLOAD_LIMIT_MB)
    if max_payload_mb is not None and max_concurrent is not None \
            and max_payload_mb * max_concurrent > PAYLOAD_LIMIT_MB:
        fail(f"--max-concurrent {max_concurrent} x --max-payload-mb {max_payload_mb} = "
             f"{max_concurrent * max_payload_mb} MB is above SageMaker's limit of {PAYLOAD_LIMIT_MB} MB")
    if (max_payload_mb is None) != (max_concurrent is None):
        log("note: the setting not given comes from the container's GET /execution-parameters; "
            f"MaxConcurrentTransforms x MaxPayloadInMB must stay <= {PAYLOAD_LIMIT_MB}, so consider giving both")
    env = check_env(env, TRANSFORM_ENV_LIMIT)
    if not content_type or "/" not in content_type:
        fail(f"--content-type {content_type!r} must be a MIME type such as application/jsonlines")

    params = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_url}},
            "ContentType": content_type,
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_url, "AssembleWith": "Line", "Accept": content_type},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }
    if max_payload_mb is not None:
        params["MaxPayloadInMB"] = max_payload_mb
    if max_concurrent is not None:
        params["MaxConcurrentTransforms"] = max_concurrent
    if join_input:
        params["DataProcessing"] = {"JoinSource": "Input"}
    if env:
        params["Environment"] = env
    log(f"creating transform job {job_name} (model {model_name}, {input_url} -> {output_url})")
    arn = sm.create_transform_job(**params)["TransformJobArn"]
    if not wait:
        log(f"`aws sagemaker wait transform-job-completed-or-stopped --transform-job-name {job_name}` waits for it")
        return arn
    log(f"waiting for transform job {job_name} (checks every {delay} s)")
    try:
        sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=job_name, WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts})
    except WaiterError:
        pass  # the status and failure reason are reported below
    described = sm.describe_transform_job(TransformJobName=job_name)
    status = described["TransformJobStatus"]
    reason = described.get("FailureReason")
    print(f"TransformJobStatus: {status}" + (f"\nFailureReason: {reason}" if reason else ""), flush=True)
    if status != "Completed":
        fail(f"transform job {job_name} did not complete: {status}" + (f": {reason}" if reason else ""))
    log(f"results are in {output_url} (one <input file>.out per input file)")
    return arn


# ---- command line --------------------------------------------------------------------------------------------

def make_session(region: Optional[str] = None, profile: Optional[str] = None):
    """A boto3 session with a region (from --region, else the profile / AWS_REGION / AWS_DEFAULT_REGION)."""
    if boto3 is None:
        fail("this command needs boto3: pip install boto3")
    session = boto3.Session(profile_name=profile, region_name=region)
    if not session.region_name:
        fail("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a profile's region")
    return session


def _autoscaling_from(args, required: bool) -> Optional[Autoscaling]:
    given = [args.min_instances, args.max_instances, args.target_invocations]
    if not required and all(v is None for v in given):
        return None
    if args.max_instances is None:
        fail("autoscaling needs --max-instances")
    return Autoscaling(min_instances=1 if args.min_instances is None else args.min_instances,
                       max_instances=args.max_instances,
                       target_invocations=100.0 if args.target_invocations is None else args.target_invocations,
                       scale_in_cooldown=args.scale_in_cooldown, scale_out_cooldown=args.scale_out_cooldown)


def _add_autoscaling_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group(
        "autoscaling", "target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per "
                       "minute); the endpoint must be InService" + ("" if required else
                       ", so these need --wait (or use the autoscale subcommand later)"))
    group.add_argument("--min-instances", "--min", dest="min_instances", type=int, metavar="N",
                       help="fewest instances (default 1)")
    group.add_argument("--max-instances", "--max", dest="max_instances", type=int, metavar="N",
                       required=required, help="most instances" + (" (enables autoscaling)" if not required else ""))
    group.add_argument("--target-invocations", "--target", dest="target_invocations", type=float, metavar="N",
                       help="invocations per instance per minute to aim for (default 100); measure what one "
                            "instance sustains with your payloads and take a fraction of it")
    group.add_argument("--scale-in-cooldown", type=int, default=300, metavar="S",
                       help="seconds between scale-in steps (default 300)")
    group.add_argument("--scale-out-cooldown", type=int, default=60, metavar="S",
                       help="seconds between scale-out steps (default 60)")


def _model_args(network_isolation: bool = True, model_data_help: str = "s3://.../model.tar.gz",
                timeouts: bool = True) -> argparse.ArgumentParser:
    """The arguments of CreateModel (and of the variant's start-up), shared by every create-* subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--name", required=True, help="name of the model, endpoint config and endpoint")
    parent.add_argument("--image", required=True, metavar="URI", help="image URI (printed by push-image)")
    parent.add_argument("--model-data", required=True, metavar="S3_URL", help=model_data_help)
    parent.add_argument("--role", required=True, metavar="ARN", help="SageMaker execution role ARN")
    parent.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="container environment variable (repeatable), e.g. LOG_LEVEL=debug")
    if network_isolation:
        parent.add_argument("--network-isolation", action="store_true",
                            help="no network for the container: the weights must be in model.tar.gz (or the image)")
    if timeouts:
        parent.add_argument("--startup-timeout", type=int, default=STARTUP_HEALTH_CHECK_TIMEOUT_S, metavar="S",
                            help=f"ContainerStartupHealthCheckTimeoutInSeconds, 60-3600 (default "
                                 f"{STARTUP_HEALTH_CHECK_TIMEOUT_S})")
        parent.add_argument("--download-timeout", type=int, default=MODEL_DOWNLOAD_TIMEOUT_S, metavar="S",
                            help=f"ModelDataDownloadTimeoutInSeconds, 60-3600 (default {MODEL_DOWNLOAD_TIMEOUT_S})")
    parent.add_argument("--wait", action="store_true", help="wait until it is InService")
    return parent


def _instance_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance-type", required=True, help="e.g. ml.g5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1, metavar="N", help="initial instances (default 1)")


def _add_package_model(sub, aws) -> None:
    p = sub.add_parser("package-model", parents=[aws], help="pack a model directory as model.tar.gz",
                       description="Checks that DIR holds an open_clip model (open_clip_config.json and one of "
                                   + ", ".join(WEIGHT_FILES) + "), writes model.tar.gz with the files at its "
                                   "top level (SageMaker unpacks it into /opt/ml/model) and optionally "
                                   "uploads it to S3.")
    p.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                   help="the model directory (make one with `python -m clip_sagemaker.model_files`)")
    p.add_argument("--out", type=Path, default=Path("model.tar.gz"), metavar="FILE",
                   help="the tarball to write (default model.tar.gz), outside DIR")
    p.add_argument("--upload", metavar="S3_URL", help="also upload it, e.g. s3://my-bucket/clip/model.tar.gz")


def _add_push_image(sub, aws) -> None:
    p = sub.add_parser("push-image", parents=[aws], help="push the container image to ECR",
                       description="Creates the ECR repository if it does not exist (scan on push), logs Docker "
                                   "in with a token from ecr:GetAuthorizationToken (password on stdin), "
                                   "optionally builds the image (DOCKER_BUILDKIT=1 docker build -t LOCAL_IMAGE "
                                   "CONTEXT), then tags and pushes it. Prints the image URI.")
    p.add_argument("--repository", required=True, metavar="NAME", help="ECR repository name, e.g. clip-sagemaker")
    p.add_argument("--tag", default="latest", help="image tag in ECR (default latest)")
    p.add_argument("--local-image", default=DEFAULT_LOCAL_IMAGE,
                   help=f"the local image to push (default {DEFAULT_LOCAL_IMAGE})")
    p.add_argument("--build", action="store_true", help="build the local image first")
    p.add_argument("--context", type=Path, default=REPO, help="build context with the Dockerfile (default: the repo)")
    p.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="passed to docker build, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu "
                        "(repeatable)")
    p.add_argument("--platform", help="docker build --platform, e.g. linux/amd64 when building on an ARM machine "
                                      "for x86/GPU instances")


def _add_create_endpoint(sub, aws) -> None:
    p = sub.add_parser("create-endpoint", parents=[aws, _model_args()],
                       help="create a real-time endpoint (model, endpoint config, endpoint)",
                       description="CreateModel, CreateEndpointConfig (variant AllTraffic, health-check timeout "
                                   f"{STARTUP_HEALTH_CHECK_TIMEOUT_S} s, model download timeout "
                                   f"{MODEL_DOWNLOAD_TIMEOUT_S} s) and CreateEndpoint, all named NAME. With "
                                   "--wait, waits until InService and then registers autoscaling if asked.")
    _instance_args(p)
    _add_autoscaling_args(p, required=False)


def _add_autoscale(sub, aws) -> None:
    p = sub.add_parser("autoscale", parents=[aws], help="register autoscaling for an InService endpoint",
                       description="Registers the endpoint's variant as a scalable target and puts a target "
                                   "tracking policy on invocations per instance. Safe to run again to change "
                                   "the limits.")
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--variant", default=VARIANT, help=f"production variant (default {VARIANT})")
    _add_autoscaling_args(p, required=True)


def _add_create_async_endpoint(sub, aws) -> None:
    p = sub.add_parser("create-async-endpoint", parents=[aws, _model_args()],
                       help="create an asynchronous endpoint (requests from S3, answers to S3, scale to zero)",
                       description="Like create-endpoint, with an AsyncInferenceConfig (answers to --output, "
                                   "optional SNS topics, MaxConcurrentInvocationsPerInstance) and the container's "
                                   "ASYNC_INFERENCE=true (1 GB bodies, an hour per request). With --wait and "
                                   "--max-instances, autoscaling on the backlog: target tracking on "
                                   f"{BACKLOG_METRIC}, and with --min-instances 0 a step-scaling policy on a "
                                   f"CloudWatch alarm on {NO_CAPACITY_METRIC}, which starts the first instance.")
    _instance_args(p)
    p.add_argument("--output", required=True, metavar="S3_URL", help="S3OutputPath: where answers are written")
    p.add_argument("--failure-output", metavar="S3_URL", help="S3FailurePath: where failed requests' errors go")
    p.add_argument("--success-topic", metavar="ARN", help="SNS topic told of each answer")
    p.add_argument("--error-topic", metavar="ARN", help="SNS topic told of each failure")
    p.add_argument("--max-concurrent-invocations", type=int, metavar="N",
                   help="MaxConcurrentInvocationsPerInstance, 1-1000 (default: SageMaker's choice)")
    group = p.add_argument_group("autoscaling on the backlog (needs --wait)")
    group.add_argument("--min-instances", type=int, default=0, metavar="N",
                       help="fewest instances; 0 (the default) scales to zero when the queue is empty")
    group.add_argument("--max-instances", type=int, metavar="N", help="most instances (enables autoscaling)")
    group.add_argument("--target-backlog", type=float, default=5.0, metavar="N",
                       help="queued requests per instance to aim for (default 5)")
    group.add_argument("--scale-in-cooldown", type=int, default=600, metavar="S", help="default 600")
    group.add_argument("--scale-out-cooldown", type=int, default=300, metavar="S", help="default 300")


def _add_create_serverless_endpoint(sub, aws) -> None:
    p = sub.add_parser("create-serverless-endpoint", parents=[aws, _model_args(network_isolation=False,
                                                                               timeouts=False)],
                       help="create a serverless endpoint (CPU, 1-6 GB, billed per request)",
                       description="CreateModel, CreateEndpointConfig with a ServerlessConfig and CreateEndpoint. "
                                   "The container plans its workers for MemorySizeInMB (its cgroup limit) and "
                                   "refuses at start-up a model that cannot fit.")
    p.add_argument("--memory-mb", type=int, required=True, metavar="MB", choices=SERVERLESS_MEMORY_MB,
                   help="MemorySizeInMB: " + ", ".join(map(str, SERVERLESS_MEMORY_MB)))
    p.add_argument("--max-concurrency", type=int, default=5, metavar="N", help="MaxConcurrency, 1-200 (default 5)")
    p.add_argument("--provisioned-concurrency", type=int, metavar="N",
                   help="ProvisionedConcurrency: instances kept warm (no cold start), billed while idle")


def _add_create_multi_model_endpoint(sub, aws) -> None:
    p = sub.add_parser("create-multi-model-endpoint",
                       parents=[aws, _model_args(model_data_help="the S3 prefix of the models' tar.gz files, "
                                                                 "ending in /", timeouts=False)],
                       help="create a multi-model endpoint (one endpoint, many models loaded on demand)",
                       description="CreateModel with Mode MultiModel and ModelDataUrl an S3 prefix, "
                                   "CreateEndpointConfig on CPU instances and CreateEndpoint. Each request names "
                                   "its model with TargetModel (see the invoke subcommand).")
    _instance_args(p)
    p.add_argument("--startup-timeout", type=int, default=STARTUP_HEALTH_CHECK_TIMEOUT_S, metavar="S",
                   help=f"ContainerStartupHealthCheckTimeoutInSeconds (default {STARTUP_HEALTH_CHECK_TIMEOUT_S})")


def _add_inference_component_parsers(sub, aws) -> None:
    p = sub.add_parser("create-component-endpoint", parents=[aws],
                       help="create an endpoint that hosts inference components",
                       description="CreateEndpointConfig (an instance variant without a model, the execution "
                                   "role on the config) and CreateEndpoint. Add models with "
                                   "create-inference-component once it is InService.")
    p.add_argument("--name", required=True, help="name of the endpoint config and endpoint")
    p.add_argument("--role", required=True, metavar="ARN", help="SageMaker execution role ARN")
    _instance_args(p)
    p.add_argument("--wait", action="store_true", help="wait until it is InService")
    p = sub.add_parser("create-inference-component", parents=[aws, _model_args()],
                       help="add a model to a component endpoint, with its cores, GPUs, memory and copies",
                       description="CreateModel and CreateInferenceComponent (ComputeResourceRequirements, "
                                   "RuntimeConfig CopyCount) on an InService component endpoint. Each copy's "
                                   "container lays its workers out on the cores and GPUs it is given.")
    p.add_argument("--endpoint", required=True, help="the component endpoint (create-component-endpoint)")
    p.add_argument("--cpu-cores", type=float, required=True, metavar="N",
                   help="NumberOfCpuCoresRequired per copy (at least 0.25)")
    p.add_argument("--memory-mb", type=int, required=True, metavar="MB", help="MinMemoryRequiredInMb per copy")
    p.add_argument("--accelerators", type=int, metavar="N", help="NumberOfAcceleratorDevicesRequired per copy")
    p.add_argument("--copies", type=int, default=1, metavar="N", help="CopyCount (default 1)")


def _add_invoke_parsers(sub, aws) -> None:
    p = sub.add_parser("invoke", parents=[aws], help="send one request to an endpoint and print the answer",
                       description="InvokeEndpoint with a request body from a file: a real-time or serverless "
                                   "endpoint, a model of a multi-model endpoint (--target-model) or an inference "
                                   "component (--component).")
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--body", type=Path, required=True, metavar="FILE", help="the request body")
    p.add_argument("--content-type", default="application/json", help="default application/json")
    p.add_argument("--accept", default="application/json", help="default application/json")
    p.add_argument("--target-model", metavar="KEY", help="TargetModel: a tar.gz key under the multi-model prefix")
    p.add_argument("--component", metavar="NAME", help="InferenceComponentName")
    p = sub.add_parser("invoke-async", parents=[aws], help="queue a request in S3 on an asynchronous endpoint",
                       description="InvokeEndpointAsync on a request body already in S3; prints where the "
                                   "answer will appear (the endpoint's --output).")
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--input", required=True, metavar="S3_URL", help="the request body in S3")
    p.add_argument("--content-type", default="application/jsonlines", help="default application/jsonlines")
    p.add_argument("--accept", default="application/jsonlines", help="default application/jsonlines")
    p.add_argument("--invocation-timeout", type=int, metavar="S",
                   help="InvocationTimeoutSeconds, 1-3600 (SageMaker's default 900)")


def _add_batch_transform(sub, aws) -> None:
    p = sub.add_parser("batch-transform", parents=[aws], help="run a Batch Transform job over S3 files",
                       description="CreateTransformJob over every file under the input prefix: each line is one "
                                   "record (SplitType Line), many records per request (BatchStrategy "
                                   "MultiRecord), one output line per record in <file>.out (AssembleWith "
                                   "Line). MODEL is a SageMaker model, e.g. the one create-endpoint made "
                                   "(named like the endpoint).")
    p.add_argument("--job-name", required=True, help="transform job name (unique in the account and region)")
    p.add_argument("--model-name", required=True, metavar="MODEL", help="SageMaker model name")
    p.add_argument("--input", required=True, metavar="S3_URL", help="input prefix, e.g. s3://my-bucket/in/")
    p.add_argument("--output", required=True, metavar="S3_URL", help="output prefix, e.g. s3://my-bucket/out/")
    p.add_argument("--instance-type", required=True, help="e.g. ml.g5.xlarge")
    p.add_argument("--instance-count", type=int, default=1, metavar="N", help="instances (default 1)")
    p.add_argument("--content-type", default="application/jsonlines",
                   help="ContentType of the input and Accept of the output (default application/jsonlines)")
    p.add_argument("--max-payload-mb", type=int, metavar="MB",
                   help="MaxPayloadInMB, 1-100; left out, the container's GET /execution-parameters answer is "
                        "used (6 MB on CPU, 16 MB on GPU unless BATCH_MAX_PAYLOAD_MB says otherwise)")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="MaxConcurrentTransforms per instance; left out, the container's GET "
                        "/execution-parameters answer is used. N x MaxPayloadInMB must be <= 100")
    p.add_argument("--join-input", action="store_true",
                   help="DataProcessing JoinSource=Input: join each output line to its input record")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help=f"container environment variable for the job (repeatable, at most {TRANSFORM_ENV_LIMIT})")
    p.add_argument("--wait", action="store_true",
                   help="wait for the job to end and print its status and failure reason")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--region", help="AWS region (default: the profile's, AWS_REGION or AWS_DEFAULT_REGION)")
    aws.add_argument("--profile", help="AWS profile from ~/.aws (default: the default credential chain)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_package_model, _add_push_image, _add_create_endpoint, _add_autoscale,
                _add_create_async_endpoint, _add_create_serverless_endpoint, _add_create_multi_model_endpoint,
                _add_inference_component_parsers, _add_invoke_parsers, _add_batch_transform):
        add(sub, aws)
    return parser


# Each subcommand: validate what needs no AWS, make the clients, call, print the result on stdout.

def _run_package_model(args) -> None:
    s3 = make_session(args.region, args.profile).client("s3") if args.upload else None
    print(package_model(args.model_dir, args.out, args.upload, s3=s3))


def _run_push_image(args) -> None:
    session = make_session(args.region, args.profile)
    try:
        print(push_image(session.client("ecr"), args.repository, args.tag, args.local_image, args.build,
                         args.context, args.build_arg, args.platform))
    except FileNotFoundError as exc:
        fail(f"{exc.filename or exc}: not found (is Docker installed and on PATH?)")


def _run_create_endpoint(args) -> None:
    env = parse_env(args.env, MODEL_ENV_LIMIT)
    scaling = _autoscaling_from(args, required=False)
    check_scaling_args(args.name, scaling, args.wait)
    session = make_session(args.region, args.profile)
    aas = session.client("application-autoscaling") if scaling is not None else None
    print(create_endpoint(session.client("sagemaker"), args.name, args.image, args.model_data, args.role,
                          args.instance_type, args.instance_count, env, args.network_isolation, args.wait,
                          scaling, aas, args.startup_timeout, args.download_timeout))


def _run_autoscale(args) -> None:
    session = make_session(args.region, args.profile)
    autoscale(session.client("sagemaker"), session.client("application-autoscaling"), args.name,
              _autoscaling_from(args, required=True), args.variant)
    print(args.name)


def _run_create_async_endpoint(args) -> None:
    env = parse_env(args.env, MODEL_ENV_LIMIT)
    scaling = None if args.max_instances is None else BacklogScaling(
        args.min_instances, args.max_instances, args.target_backlog, args.scale_in_cooldown, args.scale_out_cooldown)
    check_scaling_args(args.name, scaling, args.wait)
    output = AsyncOutput(args.output, args.failure_output, args.success_topic, args.error_topic,
                         args.max_concurrent_invocations)
    session = make_session(args.region, args.profile)
    aas, cloudwatch = (None, None) if scaling is None else (session.client("application-autoscaling"),
                                                            session.client("cloudwatch"))
    print(create_async_endpoint(session.client("sagemaker"), args.name, args.image, args.model_data, args.role,
                                args.instance_type, output, args.instance_count, env, args.network_isolation,
                                args.wait, scaling, aas, cloudwatch, args.startup_timeout, args.download_timeout))


def _run_create_serverless_endpoint(args) -> None:
    env = parse_env(args.env, MODEL_ENV_LIMIT)
    session = make_session(args.region, args.profile)
    print(create_serverless_endpoint(session.client("sagemaker"), args.name, args.image, args.model_data, args.role,
                                     args.memory_mb, args.max_concurrency, args.provisioned_concurrency, env,
                                     args.wait))


def _run_create_multi_model_endpoint(args) -> None:
    env = parse_env(args.env, MODEL_ENV_LIMIT)
    session = make_session(args.region, args.profile)
    print(create_multi_model_endpoint(session.client("sagemaker"), args.name, args.image, args.model_data,
                                      args.role, args.instance_type, args.instance_count, env,
                                      args.network_isolation, args.wait, args.startup_timeout))


def _run_create_component_endpoint(args) -> None:
    session = make_session(args.region, args.profile)
    print(create_component_endpoint(session.client("sagemaker"), args.name, args.role, args.instance_type,
                                    args.instance_count, args.wait))


def _run_create_inference_component(args) -> None:
    env = parse_env(args.env, MODEL_ENV_LIMIT)
    resources = ComponentResources(args.cpu_cores, args.memory_mb, args.accelerators, args.copies)
    session = make_session(args.region, args.profile)
    print(create_inference_component(session.client("sagemaker"), args.name, args.endpoint, args.image,
                                     args.model_data, args.role, resources, env, args.network_isolation, args.wait,
                                     args.startup_timeout, args.download_timeout))


def _run_invoke(args) -> None:
    try:
        body = args.body.read_bytes()
    except OSError as exc:
        fail(f"--body {args.body}: {exc.strerror or exc}")
    session = make_session(args.region, args.profile)
    answer = invoke(session.client("sagemaker-runtime"), args.name, body, args.content_type, args.accept,
                    args.target_model, args.component)
    sys.stdout.buffer.write(answer + b"\n")


def _run_invoke_async(args) -> None:
    session = make_session(args.region, args.profile)
    print(invoke_async(session.client("sagemaker-runtime"), args.name, args.input, args.content_type, args.accept,
                       args.invocation_timeout))


def _run_batch_transform(args) -> None:
    env = parse_env(args.env, TRANSFORM_ENV_LIMIT)
    session = make_session(args.region, args.profile)
    arn = batch_transform(session.client("sagemaker"), args.job_name, args.model_name, args.input,
                          args.output, args.instance_type, args.instance_count, args.content_type,
                          args.max_payload_mb, args.max_concurrent, args.join_input, env, args.wait)
    if not args.wait:
        print(arn)


COMMANDS = {
    "package-model": _run_package_model, "push-image": _run_push_image, "create-endpoint": _run_create_endpoint,
    "autoscale": _run_autoscale, "create-async-endpoint": _run_create_async_endpoint,
    "create-serverless-endpoint": _run_create_serverless_endpoint,
    "create-multi-model-endpoint": _run_create_multi_model_endpoint,
    "create-component-endpoint": _run_create_component_endpoint,
    "create-inference-component": _run_create_inference_component,
    "invoke": _run_invoke, "invoke-async": _run_invoke_async, "batch-transform": _run_batch_transform,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except ClientError as exc:
        fail(f"AWS refused {exc.operation_name}: {exc}")
    except BotoCoreError as exc:
        fail(f"AWS: {exc}")
    except subprocess.CalledProcessError as exc:
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(exc.cmd)
        fail(f"`{cmd}` failed with exit status {exc.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
