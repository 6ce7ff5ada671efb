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
        check_count(self.min_instances, "--min-instances")
        check_count(self.max_instances, "--max-instances")
        if self.min_instances > self.max_instances:
            fail(f"--min-instances {self.min_instances} is above --max-instances {self.max_instances}")
        if not self.target_invocations > 0:
            fail(f"--target-invocations must be above 0, got {self.target_invocations}")
        check_count(self.scale_in_cooldown, "--scale-in-cooldown", minimum=0)
        check_count(self.scale_out_cooldown, "--scale-out-cooldown", minimum=0)
        return self


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


def create_endpoint(sm, name: str, image: str, model_data: str, role: str, instance_type: str,
                    instance_count: int = 1, env: Optional[Mapping[str, str]] = None,
                    network_isolation: bool = False, wait: bool = False,
                    autoscaling: Optional[Autoscaling] = None, aas=None,
                    startup_timeout: int = STARTUP_HEALTH_CHECK_TIMEOUT_S,
                    download_timeout: int = MODEL_DOWNLOAD_TIMEOUT_S) -> str:
    """CreateModel, CreateEndpointConfig and CreateEndpoint, all named `name`; returns the endpoint ARN.

    Autoscaling can be registered only once the endpoint is InService, so it needs wait=True."""
    check_name(name, "--name")
    if not image or any(c.isspace() for c in image):
        fail(f"--image {image!r} must be an image URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG)")
    parse_s3_url(model_data, "--model-data", object_key=True)
    if not _ROLE_RE.match(role or ""):
        fail(f"--role {role!r} must be an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
    check_instance_type(instance_type)
    check_count(instance_count, "--instance-count")
    check_count(startup_timeout, "--startup-timeout", 60, 3600)
    check_count(download_timeout, "--download-timeout", 60, 3600)
    env = check_env(env, MODEL_ENV_LIMIT)
    if autoscaling is not None:
        autoscaling.validate()
        if not wait:
            fail("autoscaling can be registered only once the endpoint is InService: add --wait, or run "
                 f"`{PROG} autoscale --name {name} ...` when it is")
        if aas is None:
            fail("an application-autoscaling client is needed to register autoscaling")

    container = {"Image": image, "ModelDataUrl": model_data}
    if env:
        container["Environment"] = env
    log(f"creating model {name} ({image}, {model_data})")
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role,
                    EnableNetworkIsolation=bool(network_isolation))
    log(f"creating endpoint config {name} ({instance_count} x {instance_type})")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": VARIANT,
        "ModelName": name,
        "InitialInstanceCount": instance_count,
        "InstanceType": instance_type,
        "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout,
        "ModelDataDownloadTimeoutInSeconds": download_timeout,
    }])
    log(f"creating endpoint {name}")
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=name)["EndpointArn"]
    if wait:
        wait_in_service(sm, name)
        if autoscaling is not None:
            register_autoscaling(aas, name, autoscaling)
    else:
        log(f"endpoint {name} is being created (several minutes); "
            f"`aws sagemaker wait endpoint-in-service --endpoint-name {name}` waits for it")
    return arn


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--region", help="AWS region (default: the profile's, AWS_REGION or AWS_DEFAULT_REGION)")
    aws.add_argument("--profile", help="AWS profile from ~/.aws (default: the default credential chain)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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

    p = sub.add_parser("create-endpoint", parents=[aws], help="create a model, endpoint config and endpoint",
                       description="CreateModel, CreateEndpointConfig (variant AllTraffic, health-check timeout "
                                   f"{STARTUP_HEALTH_CHECK_TIMEOUT_S} s, model download timeout "
                                   f"{MODEL_DOWNLOAD_TIMEOUT_S} s) and CreateEndpoint, all named NAME. With "
                                   "--wait, waits until InService and then registers autoscaling if asked.")
    p.add_argument("--name", required=True, help="name of the model, endpoint config and endpoint")
    p.add_argument("--image", required=True, metavar="URI", help="image URI (printed by push-image)")
    p.add_argument("--model-data", required=True, metavar="S3_URL", help="s3://.../model.tar.gz")
    p.add_argument("--role", required=True, metavar="ARN", help="SageMaker execution role ARN")
    p.add_argument("--instance-type", required=True, help="e.g. ml.g5.xlarge")
    p.add_argument("--instance-count", type=int, default=1, metavar="N", help="initial instances (default 1)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="container environment variable (repeatable), e.g. LOG_LEVEL=debug")
    p.add_argument("--network-isolation", action="store_true",
                   help="no network for the container: the weights must be in model.tar.gz (or the image)")
    p.add_argument("--startup-timeout", type=int, default=STARTUP_HEALTH_CHECK_TIMEOUT_S, metavar="S",
                   help=f"ContainerStartupHealthCheckTimeoutInSeconds, 60-3600 (default "
                        f"{STARTUP_HEALTH_CHECK_TIMEOUT_S})")
    p.add_argument("--download-timeout", type=int, default=MODEL_DOWNLOAD_TIMEOUT_S, metavar="S",
                   help=f"ModelDataDownloadTimeoutInSeconds, 60-3600 (default {MODEL_DOWNLOAD_TIMEOUT_S})")
    p.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    _add_autoscaling_args(p, required=False)

    p = sub.add_parser("autoscale", parents=[aws], help="register autoscaling for an InService endpoint",
                       description="Registers the endpoint's variant as a scalable target and puts a target "
                                   "tracking policy on invocations per instance. Safe to run again to change "
                                   "the limits.")
    p.add_argument("--name", required=True, help="endpoint name")
    p.add_argument("--variant", default=VARIANT, help=f"production variant (default {VARIANT})")
    _add_autoscaling_args(p, required=True)

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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "package-model":
            s3 = make_session(args.region, args.profile).client("s3") if args.upload else None
            print(package_model(args.model_dir, args.out, args.upload, s3=s3))
        elif args.command == "push-image":
            session = make_session(args.region, args.profile)
            try:
                print(push_image(session.client("ecr"), args.repository, args.tag, args.local_image, args.build,
                                 args.context, args.build_arg, args.platform))
            except FileNotFoundError as exc:
                fail(f"{exc.filename or exc}: not found (is Docker installed and on PATH?)")
        elif args.command == "create-endpoint":
            env = parse_env(args.env, MODEL_ENV_LIMIT)
            scaling = _autoscaling_from(args, required=False)
            if scaling is not None and not args.wait:
                fail("autoscaling can be registered only once the endpoint is InService: add --wait, or run "
                     f"`{PROG} autoscale --name {args.name} ...` when it is")
            session = make_session(args.region, args.profile)
            aas = session.client("application-autoscaling") if scaling is not None else None
            arn = create_endpoint(session.client("sagemaker"), args.name, args.image, args.model_data, args.role,
                                  args.instance_type, args.instance_count, env, args.network_isolation, args.wait,
                                  scaling, aas, args.startup_timeout, args.download_timeout)
            print(arn)
        elif args.command == "autoscale":
            session = make_session(args.region, args.profile)
            autoscale(session.client("sagemaker"), session.client("application-autoscaling"), args.name,
                      _autoscaling_from(args, required=True), args.variant)
            print(args.name)
        elif args.command == "batch-transform":
            env = parse_env(args.env, TRANSFORM_ENV_LIMIT)
            session = make_session(args.region, args.profile)
            arn = batch_transform(session.client("sagemaker"), args.job_name, args.model_name, args.input,
                                  args.output, args.instance_type, args.instance_count, args.content_type,
                                  args.max_payload_mb, args.max_concurrent, args.join_input, env, args.wait)
            if not args.wait:
                print(arn)
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
