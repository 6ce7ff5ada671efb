"""local_test/deploy.py: every AWS call checked with botocore's Stubber (exact parameters, AWS-shaped
responses), Docker commands captured by a fake runner. Nothing here reaches AWS or Docker."""
from __future__ import annotations

import base64
import datetime
import functools
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "local_test"))
import deploy  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
IMAGE = f"{REGISTRY}/clip-sagemaker:v1"
MODEL_DATA = "s3://my-bucket/clip/model.tar.gz"
PASSWORD = "s3cr3t-ecr-password-0123456789"
NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials and region, and no ~/.aws: nothing can pick up real credentials."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@functools.cache
def _botocore_session():
    """One botocore session for every test: it loads each service's model once (a fresh session per client
    took about a second a test). Each client made from it is new, so each test has its own Stubber."""
    import botocore.session
    return botocore.session.get_session()


def client(service):
    return boto3.Session(botocore_session=_botocore_session(), region_name=REGION).client(service)


@pytest.fixture
def sm():
    return client("sagemaker")


@pytest.fixture
def aas():
    return client("application-autoscaling")


@pytest.fixture
def ecr():
    return client("ecr")


class FakeSession:
    """What deploy.make_session returns in main() tests: hands out the (stubbed) clients given."""

    def __init__(self, **clients):
        self.clients = clients
        self.region_name = REGION

    def client(self, service):
        return self.clients[service]


class FakeRun:
    """Records the commands push_image runs, instead of running docker."""

    def __init__(self):
        self.calls = []

    def __call__(self, cmd, **kwargs):
        self.calls.append((list(cmd), kwargs))
        return subprocess.CompletedProcess(cmd, 0)

    @property
    def argvs(self):
        return [cmd for cmd, _ in self.calls]


def model_dir(tmp_path, weights="open_clip_model.safetensors"):
    d = tmp_path / "model"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 32}, "preprocess_cfg": {}}))
    if weights:
        (d / weights).write_bytes(b"\x00fake weights\x01" * 10)
    return d


# ---- package-model -------------------------------------------------------------------------------------------

def test_package_model_writes_files_at_the_top_level(tmp_path, capsys):
    d = model_dir(tmp_path)
    out = tmp_path / "dist" / "model.tar.gz"
    assert deploy.main(["package-model", "--model-dir", str(d), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with tarfile.open(out, "r:gz") as tar:
        names = sorted(tar.getnames())
        assert names == ["open_clip_config.json", "open_clip_model.safetensors"]
        assert tar.extractfile("open_clip_model.safetensors").read() == (d / "open_clip_model.safetensors").read_bytes()


def test_package_model_accepts_any_known_weights_file(tmp_path):
    d = model_dir(tmp_path, weights="open_clip_pytorch_model.bin")
    out = deploy.package_model(d, tmp_path / "model.tar.gz")
    with tarfile.open(out, "r:gz") as tar:
        assert sorted(tar.getnames()) == ["open_clip_config.json", "open_clip_pytorch_model.bin"]


def test_package_model_uploads_with_upload_file(tmp_path):
    d = model_dir(tmp_path)
    out = tmp_path / "model.tar.gz"
    s3 = client("s3")
    sent = {}

    def capture(params, **_):
        body = params["Body"]
        sent.update(Bucket=params["Bucket"], Key=params["Key"], Body=body.read())
        body.seek(0)

    s3.meta.events.register("before-parameter-build.s3.PutObject", capture)
    with Stubber(s3) as stubber:
        # upload_file goes through s3transfer, which adds its own parameters (checksums) depending on the
        # version; the bucket, key and body are checked through the event hook above.
        stubber.add_response("put_object", {"ETag": '"0123456789abcdef"'})
        assert deploy.package_model(d, out, upload=MODEL_DATA, s3=s3) == MODEL_DATA
        stubber.assert_no_pending_responses()
    assert sent == {"Bucket": "my-bucket", "Key": "clip/model.tar.gz", "Body": out.read_bytes()}


def test_package_model_upload_through_the_cli(tmp_path, monkeypatch, capsys):
    uploads = []

    class FakeS3:
        def upload_file(self, filename, bucket, key):
            uploads.append((filename, bucket, key))

    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(s3=FakeS3()))
    out = tmp_path / "model.tar.gz"
    deploy.main(["package-model", "--model-dir", str(model_dir(tmp_path)), "--out", str(out),
                 "--upload", MODEL_DATA])
    assert uploads == [(str(out), "my-bucket", "clip/model.tar.gz")]
    assert capsys.readouterr().out.strip() == MODEL_DATA


@pytest.mark.parametrize("breakage, message", [
    ("no-config", "no open_clip_config.json"),
    ("bad-json", "not valid JSON"),
    ("no-model-cfg", "model_cfg"),
    ("no-weights", "no weights file"),
    ("missing-dir", "is not a directory"),
])
def test_package_model_refuses_incomplete_model_dirs(tmp_path, breakage, message):
    d = model_dir(tmp_path, weights=None if breakage == "no-weights" else "open_clip_model.safetensors")
    config = d / "open_clip_config.json"
    if breakage == "no-config":
        config.unlink()
    elif breakage == "bad-json":
        config.write_text("{not json")
    elif breakage == "no-model-cfg":
        config.write_text("{}")
    elif breakage == "missing-dir":
        d = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match=message):
        deploy.package_model(d, tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_package_model_refuses_a_tarball_inside_the_model_dir(tmp_path):
    d = model_dir(tmp_path)
    with pytest.raises(SystemExit, match="must not be inside"):
        deploy.package_model(d, d / "model.tar.gz")


@pytest.mark.parametrize("url", ["my-bucket/clip/model.tar.gz", "s3://my-bucket", "s3://my-bucket/clip/",
                                 "https://my-bucket/model.tar.gz", "s3://Bad_Bucket/model.tar.gz"])
def test_package_model_refuses_bad_upload_urls_before_writing(tmp_path, url):
    out = tmp_path / "model.tar.gz"
    with pytest.raises(SystemExit, match="--upload"):
        deploy.package_model(model_dir(tmp_path), out, upload=url, s3=object())
    assert not out.exists()


# ---- push-image ----------------------------------------------------------------------------------------------

def auth_response():
    token = base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()
    return {"authorizationData": [{"authorizationToken": token, "expiresAt": NOW,
                                   "proxyEndpoint": f"https://{REGISTRY}"}]}


def repository(name):
    return {"repositoryArn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}", "registryId": ACCOUNT,
            "repositoryName": name, "repositoryUri": f"{REGISTRY}/{name}", "createdAt": NOW,
            "imageScanningConfiguration": {"scanOnPush": True}}


def assert_password_only_on_stdin(run):
    login = [(cmd, kw) for cmd, kw in run.calls if cmd[:2] == ["docker", "login"]]
    assert login == [(["docker", "login", "--username", "AWS", "--password-stdin", f"https://{REGISTRY}"],
                      {"input": PASSWORD, "text": True})]
    for cmd, kwargs in run.calls:
        assert not any(PASSWORD in arg for arg in cmd)
        assert PASSWORD not in json.dumps(kwargs.get("env") or {})


def test_push_image_to_an_existing_repository(ecr):
    run = FakeRun()
    with Stubber(ecr) as stubber:
        stubber.add_response("describe_repositories", {"repositories": [repository("clip-sagemaker")]},
                             {"repositoryNames": ["clip-sagemaker"]})
        stubber.add_response("get_authorization_token", auth_response(), {})
        uri = deploy.push_image(ecr, "clip-sagemaker", "v1", run=run)
        stubber.assert_no_pending_responses()
    assert uri == IMAGE
    assert run.argvs == [
        ["docker", "login", "--username", "AWS", "--password-stdin", f"https://{REGISTRY}"],
        ["docker", "tag", "clip-sagemaker:latest", IMAGE],
        ["docker", "push", IMAGE],
    ]
    assert_password_only_on_stdin(run)


def test_push_image_creates_a_missing_repository_and_builds(ecr, capsys):
    run = FakeRun()
    with Stubber(ecr) as stubber:
        stubber.add_client_error("describe_repositories", service_error_code="RepositoryNotFoundException",
                                 service_message="The repository with name 'clip/gpu' does not exist",
                                 http_status_code=400, expected_params={"repositoryNames": ["clip/gpu"]})
        stubber.add_response("create_repository", {"repository": repository("clip/gpu")},
                             {"repositoryName": "clip/gpu", "imageScanningConfiguration": {"scanOnPush": True}})
        stubber.add_response("get_authorization_token", auth_response(), {})
        uri = deploy.push_image(ecr, "clip/gpu", "2024-01", local_image="clip-sagemaker:gpu", build=True,
                                context=REPO, build_args=["TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"],
                                platform="linux/amd64", run=run)
        stubber.assert_no_pending_responses()
    assert uri == f"{REGISTRY}/clip/gpu:2024-01"
    assert run.argvs == [
        ["docker", "login", "--username", "AWS", "--password-stdin", f"https://{REGISTRY}"],
        ["docker", "build", "--platform", "linux/amd64",
         "--build-arg", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu",
         "-t", "clip-sagemaker:gpu", str(REPO)],
        ["docker", "tag", "clip-sagemaker:gpu", uri],
        ["docker", "push", uri],
    ]
    build_kwargs = run.calls[1][1]
    assert build_kwargs["env"]["DOCKER_BUILDKIT"] == "1"
    assert_password_only_on_stdin(run)
    assert PASSWORD not in "".join(capsys.readouterr())


def test_push_image_through_the_cli_prints_only_the_uri(ecr, monkeypatch, capsys):
    run = FakeRun()
    monkeypatch.setattr(deploy, "default_run", run)
    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(ecr=ecr))
    with Stubber(ecr) as stubber:
        stubber.add_response("describe_repositories", {"repositories": [repository("clip-sagemaker")]},
                             {"repositoryNames": ["clip-sagemaker"]})
        stubber.add_response("get_authorization_token", auth_response(), {})
        deploy.main(["push-image", "--repository", "clip-sagemaker", "--tag", "v1", "--region", REGION])
        stubber.assert_no_pending_responses()
    captured = capsys.readouterr()
    assert captured.out == IMAGE + "\n"
    assert PASSWORD not in captured.out + captured.err
    assert len(run.calls) == 3


def test_push_image_other_describe_errors_propagate(ecr):
    with Stubber(ecr) as stubber:
        stubber.add_client_error("describe_repositories", service_error_code="AccessDeniedException",
                                 http_status_code=400)
        with pytest.raises(ecr.exceptions.ClientError):
            deploy.push_image(ecr, "clip-sagemaker", run=FakeRun())
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize("repo, tag, message", [
    ("Clip-Sagemaker", "v1", "--repository"),
    ("clip-sagemaker", "-bad", "--tag"),
    ("clip-sagemaker", "has space", "--tag"),
])
def test_push_image_validates_names_before_calling_aws(ecr, repo, tag, message):
    run = FakeRun()
    with Stubber(ecr):  # no responses queued: any call would fail the test
        with pytest.raises(SystemExit, match=message):
            deploy.push_image(ecr, repo, tag, run=run)
    assert run.calls == []


# ---- create-endpoint / autoscale -----------------------------------------------------------------------------

def expect_create(stubber, name="clip", env=None, isolation=False, count=1):
    container = {"Image": IMAGE, "ModelDataUrl": MODEL_DATA}
    if env:
        container["Environment"] = env
    stubber.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}"},
                         {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": ROLE,
                          "EnableNetworkIsolation": isolation})
    stubber.add_response("create_endpoint_config",
                         {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{name}"},
                         {"EndpointConfigName": name, "ProductionVariants": [{
                             "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
                             "InstanceType": "ml.g5.xlarge",
                             "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                             "ModelDataDownloadTimeoutInSeconds": 1200}]})
    stubber.add_response("create_endpoint", {"EndpointArn": endpoint_arn(name)},
                         {"EndpointName": name, "EndpointConfigName": name})


def endpoint_arn(name):
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}"


def described_endpoint(name, status, reason=None):
    response = {"EndpointName": name, "EndpointArn": endpoint_arn(name), "EndpointConfigName": name,
                "EndpointStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW,
                "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 1}]}
    if reason:
        response["FailureReason"] = reason
    return response


def expect_autoscaling(stubber, name="clip", low=1, high=4, target=100.0, scale_in=300, scale_out=60):
    resource = f"endpoint/{name}/variant/AllTraffic"
    stubber.add_response(
        "register_scalable_target",
        {"ScalableTargetARN": f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/abc"},
        {"ServiceNamespace": "sagemaker", "ResourceId": resource,
         "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": low, "MaxCapacity": high})
    stubber.add_response(
        "put_scaling_policy",
        {"PolicyARN": f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:scalingPolicy:abc:resource/sagemaker/{resource}"
                      f":policyName/{name}-invocations-per-instance",
         "Alarms": [{"AlarmName": "TargetTracking-high",
                     "AlarmARN": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:x"}]},
        {"PolicyName": f"{name}-invocations-per-instance", "ServiceNamespace": "sagemaker", "ResourceId": resource,
         "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "PolicyType": "TargetTrackingScaling",
         "TargetTrackingScalingPolicyConfiguration": {
             "TargetValue": target,
             "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
             "ScaleInCooldown": scale_in, "ScaleOutCooldown": scale_out}})


def test_create_endpoint_without_waiting(sm):
    with Stubber(sm) as stubber:
        expect_create(stubber, env={"LOG_LEVEL": "debug", "MAX_BATCH_SIZE": "64"}, isolation=True, count=2)
        arn = deploy.create_endpoint(sm, "clip", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge", instance_count=2,
                                     env={"LOG_LEVEL": "debug", "MAX_BATCH_SIZE": "64"}, network_isolation=True)
        stubber.assert_no_pending_responses()
    assert arn == endpoint_arn("clip")


def test_create_endpoint_waits_then_registers_autoscaling(sm, aas):
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub:
        expect_create(sm_stub)
        sm_stub.add_response("describe_endpoint", described_endpoint("clip", "InService"), {"EndpointName": "clip"})
        expect_autoscaling(aas_stub, low=1, high=4, target=250.0, scale_in=600, scale_out=30)
        deploy.create_endpoint(sm, "clip", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge", wait=True, aas=aas,
                               autoscaling=deploy.Autoscaling(1, 4, 250, scale_in_cooldown=600, scale_out_cooldown=30))
        sm_stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()


def test_create_endpoint_through_the_cli(sm, aas, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session",
                        lambda region, profile: FakeSession(sagemaker=sm, **{"application-autoscaling": aas}))
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub:
        expect_create(sm_stub, env={"LOG_LEVEL": "debug"}, isolation=True)
        sm_stub.add_response("describe_endpoint", described_endpoint("clip", "InService"), {"EndpointName": "clip"})
        expect_autoscaling(aas_stub, low=2, high=8, target=100.0)
        deploy.main(["create-endpoint", "--name", "clip", "--image", IMAGE, "--model-data", MODEL_DATA,
                     "--role", ROLE, "--instance-type", "ml.g5.xlarge", "--env", "LOG_LEVEL=debug",
                     "--network-isolation", "--wait", "--min-instances", "2", "--max-instances", "8"])
        sm_stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == endpoint_arn("clip")


def test_create_endpoint_failure_reports_the_reason_and_skips_autoscaling(sm, aas):
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub:
        expect_create(sm_stub)
        sm_stub.add_response("describe_endpoint",
                             described_endpoint("clip", "Failed", "The primary container did not pass the ping "
                                                                  "health check"),
                             {"EndpointName": "clip"})
        with pytest.raises(SystemExit, match="Failed.*did not pass the ping health check"):
            deploy.create_endpoint(sm, "clip", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge", wait=True, aas=aas,
                                   autoscaling=deploy.Autoscaling(1, 4, 100))
        sm_stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()


def test_create_endpoint_autoscaling_needs_wait(sm, aas):
    with Stubber(sm), Stubber(aas):  # nothing may be called
        with pytest.raises(SystemExit, match="--wait"):
            deploy.create_endpoint(sm, "clip", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge", aas=aas,
                                   autoscaling=deploy.Autoscaling(1, 4, 100))
    with pytest.raises(SystemExit, match="--wait"):
        deploy.main(["create-endpoint", "--name", "clip", "--image", IMAGE, "--model-data", MODEL_DATA,
                     "--role", ROLE, "--instance-type", "ml.g5.xlarge", "--max-instances", "4"])


@pytest.mark.parametrize("change, message", [
    ({"name": "clip_endpoint"}, "--name"),
    ({"model_data": "s3://my-bucket/clip/"}, "--model-data"),
    ({"model_data": "/local/model.tar.gz"}, "--model-data"),
    ({"role": "SageMakerRole"}, "--role"),
    ({"instance_type": "g5.xlarge"}, "instance type"),
    ({"instance_count": 0}, "--instance-count"),
    ({"startup_timeout": 7200}, "--startup-timeout"),
    ({"env": {"BAD-NAME": "x"}}, "BAD-NAME"),
])
def test_create_endpoint_validates_before_calling_aws(sm, change, message):
    kwargs = dict(name="clip", image=IMAGE, model_data=MODEL_DATA, role=ROLE, instance_type="ml.g5.xlarge")
    kwargs.update(change)
    with Stubber(sm):
        with pytest.raises(SystemExit, match=message):
            deploy.create_endpoint(sm, **kwargs)


@pytest.mark.parametrize("scaling, message", [
    (deploy.Autoscaling(4, 2, 100), "above --max-instances"),
    (deploy.Autoscaling(0, 2, 100), "--min-instances"),
    (deploy.Autoscaling(1, 2, 0), "--target-invocations"),
])
def test_autoscaling_limits_are_validated(sm, aas, scaling, message):
    with Stubber(sm), Stubber(aas):
        with pytest.raises(SystemExit, match=message):
            deploy.autoscale(sm, aas, "clip", scaling)


def test_autoscale_registers_an_in_service_endpoint(sm, aas, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session",
                        lambda region, profile: FakeSession(sagemaker=sm, **{"application-autoscaling": aas}))
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub:
        sm_stub.add_response("describe_endpoint", described_endpoint("clip", "InService"), {"EndpointName": "clip"})
        expect_autoscaling(aas_stub, low=1, high=3, target=42.5)
        deploy.main(["autoscale", "--name", "clip", "--max", "3", "--target", "42.5"])
        sm_stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == "clip"


def test_autoscale_refuses_an_endpoint_not_in_service(sm, aas):
    with Stubber(sm) as sm_stub, Stubber(aas):
        sm_stub.add_response("describe_endpoint", described_endpoint("clip", "Creating"), {"EndpointName": "clip"})
        with pytest.raises(SystemExit, match="is Creating"):
            deploy.autoscale(sm, aas, "clip", deploy.Autoscaling(1, 4, 100))
        sm_stub.assert_no_pending_responses()


def test_autoscale_refuses_an_unknown_variant(sm, aas):
    with Stubber(sm) as sm_stub, Stubber(aas):
        sm_stub.add_response("describe_endpoint", described_endpoint("clip", "InService"), {"EndpointName": "clip"})
        with pytest.raises(SystemExit, match="no variant 'Blue'"):
            deploy.autoscale(sm, aas, "clip", deploy.Autoscaling(1, 4, 100), variant="Blue")


# ---- batch-transform -----------------------------------------------------------------------------------------

def transform_params(**extra):
    params = {
        "TransformJobName": "clip-batch-1",
        "ModelName": "clip",
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://my-bucket/in/"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": "s3://my-bucket/out/", "AssembleWith": "Line",
                            "Accept": "application/jsonlines"},
        "TransformResources": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1},
    }
    params.update(extra)
    return params


TRANSFORM_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/clip-batch-1"


def described_job(status, reason=None):
    params = transform_params()
    response = {"TransformJobName": "clip-batch-1", "TransformJobArn": TRANSFORM_ARN, "TransformJobStatus": status,
                "ModelName": "clip", "TransformInput": params["TransformInput"],
                "TransformResources": params["TransformResources"], "CreationTime": NOW}
    if reason:
        response["FailureReason"] = reason
    return response


def test_batch_transform_leaves_payload_and_concurrency_to_the_container(sm):
    with Stubber(sm) as stubber:
        stubber.add_response("create_transform_job", {"TransformJobArn": TRANSFORM_ARN}, transform_params())
        arn = deploy.batch_transform(sm, "clip-batch-1", "clip", "s3://my-bucket/in/", "s3://my-bucket/out/",
                                     "ml.g5.xlarge")
        stubber.assert_no_pending_responses()
    assert arn == TRANSFORM_ARN


def test_batch_transform_with_every_option_and_wait(sm, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(sagemaker=sm))
    expected = transform_params(MaxPayloadInMB=10, MaxConcurrentTransforms=10,
                                DataProcessing={"JoinSource": "Input"},
                                Environment={"LOG_LEVEL": "debug", "MAX_BATCH_SIZE": "128"})
    expected["TransformResources"]["InstanceCount"] = 3
    with Stubber(sm) as stubber:
        stubber.add_response("create_transform_job", {"TransformJobArn": TRANSFORM_ARN}, expected)
        # the waiter's poll, then the final describe for the status report
        stubber.add_response("describe_transform_job", described_job("Completed"),
                             {"TransformJobName": "clip-batch-1"})
        stubber.add_response("describe_transform_job", described_job("Completed"),
                             {"TransformJobName": "clip-batch-1"})
        deploy.main(["batch-transform", "--job-name", "clip-batch-1", "--model-name", "clip",
                     "--input", "s3://my-bucket/in/", "--output", "s3://my-bucket/out/",
                     "--instance-type", "ml.g5.xlarge", "--instance-count", "3",
                     "--max-payload-mb", "10", "--max-concurrent", "10", "--join-input",
                     "--env", "LOG_LEVEL=debug", "--env", "MAX_BATCH_SIZE=128", "--wait"])
        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == "TransformJobStatus: Completed"


def test_batch_transform_wait_reports_the_failure_reason(sm, capsys):
    reason = "ClientError: See job logs for more information"
    with Stubber(sm) as stubber:
        stubber.add_response("create_transform_job", {"TransformJobArn": TRANSFORM_ARN}, transform_params())
        stubber.add_response("describe_transform_job", described_job("Failed", reason),
                             {"TransformJobName": "clip-batch-1"})
        stubber.add_response("describe_transform_job", described_job("Failed", reason),
                             {"TransformJobName": "clip-batch-1"})
        with pytest.raises(SystemExit, match="did not complete: Failed: ClientError: See job logs"):
            deploy.batch_transform(sm, "clip-batch-1", "clip", "s3://my-bucket/in/", "s3://my-bucket/out/",
                                   "ml.g5.xlarge", wait=True)
        stubber.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert "TransformJobStatus: Failed" in out and f"FailureReason: {reason}" in out


@pytest.mark.parametrize("change, message", [
    ({"input_url": "my-bucket/in/"}, "--input"),
    ({"output_url": "s3:/my-bucket/out/"}, "--output"),
    ({"output_url": "s3://x/out/"}, "--output"),
    ({"max_payload_mb": 101}, "--max-payload-mb"),
    ({"max_payload_mb": 0}, "--max-payload-mb"),
    ({"max_payload_mb": 20, "max_concurrent": 6}, "120 MB is above SageMaker's limit of 100 MB"),
    ({"env": {f"VAR_{i}": str(i) for i in range(17)}}, "17 environment variables .* at most 16"),
    ({"job_name": "clip batch"}, "--job-name"),
    ({"content_type": "jsonlines"}, "--content-type"),
])
def test_batch_transform_validates_before_calling_aws(sm, change, message):
    kwargs = dict(job_name="clip-batch-1", model_name="clip", input_url="s3://my-bucket/in/",
                  output_url="s3://my-bucket/out/", instance_type="ml.g5.xlarge")
    kwargs.update(change)
    with Stubber(sm):  # no responses queued: any AWS call would fail the test
        with pytest.raises(SystemExit, match=message):
            deploy.batch_transform(sm, **kwargs)


def test_batch_transform_accepts_16_environment_variables(sm):
    env = {f"VAR_{i}": str(i) for i in range(16)}
    with Stubber(sm) as stubber:
        stubber.add_response("create_transform_job", {"TransformJobArn": TRANSFORM_ARN},
                             transform_params(Environment=env))
        deploy.batch_transform(sm, "clip-batch-1", "clip", "s3://my-bucket/in/", "s3://my-bucket/out/",
                               "ml.g5.xlarge", env=env)
        stubber.assert_no_pending_responses()


def test_cli_refuses_17_env_vars_and_bad_env_syntax(monkeypatch):
    def no_session(*_):
        raise AssertionError("validation must fail before any AWS client is made")

    monkeypatch.setattr(deploy, "make_session", no_session)
    base = ["batch-transform", "--job-name", "j", "--model-name", "m", "--input", "s3://my-bucket/in/",
            "--output", "s3://my-bucket/out/", "--instance-type", "ml.g5.xlarge"]
    many = [arg for i in range(17) for arg in ("--env", f"K{i}=v")]
    with pytest.raises(SystemExit, match="at most 16"):
        deploy.main(base + many)
    with pytest.raises(SystemExit, match="must be KEY=VALUE"):
        deploy.main(base + ["--env", "NOVALUE"])
    with pytest.raises(SystemExit, match="letters, digits and _"):
        deploy.main(base + ["--env", "1BAD=x"])


def test_env_parsing():
    assert deploy.parse_env(["A=1", "B=x=y", "C=", "A=2"], 16) == {"A": "2", "B": "x=y", "C": ""}


# ---- command line --------------------------------------------------------------------------------------------

def test_make_session_needs_a_region(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(SystemExit, match="no AWS region"):
        deploy.make_session()
    assert deploy.make_session("eu-west-1").region_name == "eu-west-1"


def test_script_is_executable():
    path = REPO / "local_test" / "deploy.py"
    assert path.read_text().startswith("#!/usr/bin/env python3\n")
    assert path.stat().st_mode & 0o111


# ---- the other hosting modes ---------------------------------------------------------------------------------

OUTPUT = "s3://my-bucket/async-out/"
SUCCESS_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:clip-done"
ERROR_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:clip-failed"
STEP_POLICY_ARN = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:scalingPolicy:abc:resource/sagemaker/endpoint/clip-async"


@pytest.fixture
def cloudwatch():
    return client("cloudwatch")


@pytest.fixture
def runtime():
    return client("sagemaker-runtime")


def expect_model(stubber, name, env=None, model_data=MODEL_DATA, mode=None, isolation=False):
    container = {"Image": IMAGE, "ModelDataUrl": model_data}
    if mode:
        container["Mode"] = mode
    if env:
        container["Environment"] = env
    stubber.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}"},
                         {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": ROLE,
                          "EnableNetworkIsolation": isolation})


def expect_endpoint(stubber, name, variant, in_service=False, **config):
    stubber.add_response("create_endpoint_config",
                         {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{name}"},
                         {"EndpointConfigName": name, "ProductionVariants": [variant], **config})
    stubber.add_response("create_endpoint", {"EndpointArn": endpoint_arn(name)},
                         {"EndpointName": name, "EndpointConfigName": name})
    if in_service:
        stubber.add_response("describe_endpoint", described_endpoint(name, "InService"), {"EndpointName": name})


def instance_variant(name, instance_type="ml.g5.xlarge", count=1, timeouts=True):
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
               "InstanceType": instance_type}
    if timeouts:
        variant.update(ContainerStartupHealthCheckTimeoutInSeconds=600, ModelDataDownloadTimeoutInSeconds=1200)
    return variant


def expect_backlog_scaling(aas_stub, cw_stub, name, low, high, target, from_zero):
    target_params = {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{name}/variant/AllTraffic",
                     "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    metric = {"Namespace": "AWS/SageMaker", "Dimensions": [{"Name": "EndpointName", "Value": name}],
              "Statistic": "Average"}
    aas_stub.add_response("register_scalable_target", {}, {**target_params, "MinCapacity": low, "MaxCapacity": high})
    aas_stub.add_response("put_scaling_policy", {"PolicyARN": STEP_POLICY_ARN.replace("abc", "tt")}, {
        **target_params, "PolicyName": f"{name}-backlog-per-instance", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": target,
            "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance", **metric},
            "ScaleInCooldown": 600, "ScaleOutCooldown": 300}})
    if not from_zero:
        return
    aas_stub.add_response("put_scaling_policy", {"PolicyARN": STEP_POLICY_ARN}, {
        **target_params, "PolicyName": f"{name}-HasBacklogWithoutCapacity", "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average", "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]}})
    cw_stub.add_response("put_metric_alarm", {}, {
        "AlarmName": f"{name}-HasBacklogWithoutCapacity", "MetricName": "HasBacklogWithoutCapacity", **metric,
        "AlarmDescription": f"{name} has queued requests and no instance: scale out from zero",
        "Period": 60, "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "missing",
        "AlarmActions": [STEP_POLICY_ARN]})


def test_create_async_endpoint_with_every_option_scales_from_zero(sm, aas, cloudwatch, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(
        sagemaker=sm, cloudwatch=cloudwatch, **{"application-autoscaling": aas}))
    config = {"OutputConfig": {"S3OutputPath": OUTPUT, "S3FailurePath": "s3://my-bucket/async-failed/",
                               "NotificationConfig": {"SuccessTopic": SUCCESS_TOPIC, "ErrorTopic": ERROR_TOPIC}},
              "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub, Stubber(cloudwatch) as cw_stub:
        expect_model(sm_stub, "clip-async", env={"ASYNC_INFERENCE": "true", "LOG_LEVEL": "debug"})
        expect_endpoint(sm_stub, "clip-async", instance_variant("clip-async", "ml.c6i.2xlarge"), in_service=True,
                        AsyncInferenceConfig=config)
        expect_backlog_scaling(aas_stub, cw_stub, "clip-async", 0, 3, 5.0, from_zero=True)
        deploy.main(["create-async-endpoint", "--name", "clip-async", "--image", IMAGE, "--model-data", MODEL_DATA,
                     "--role", ROLE, "--instance-type", "ml.c6i.2xlarge", "--env", "LOG_LEVEL=debug",
                     "--output", OUTPUT, "--failure-output", "s3://my-bucket/async-failed/",
                     "--success-topic", SUCCESS_TOPIC, "--error-topic", ERROR_TOPIC,
                     "--max-concurrent-invocations", "4", "--wait", "--max-instances", "3"])
        for stub in (sm_stub, aas_stub, cw_stub):
            stub.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == endpoint_arn("clip-async")


def test_async_endpoint_with_a_minimum_instance_needs_no_alarm(sm, aas, cloudwatch):
    with Stubber(sm) as sm_stub, Stubber(aas) as aas_stub, Stubber(cloudwatch) as cw_stub:
        expect_model(sm_stub, "clip-async", env={"ASYNC_INFERENCE": "true"})
        expect_endpoint(sm_stub, "clip-async", instance_variant("clip-async"), in_service=True,
                        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": OUTPUT}})
        expect_backlog_scaling(aas_stub, cw_stub, "clip-async", 1, 4, 10.0, from_zero=False)
        deploy.create_async_endpoint(sm, "clip-async", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge",
                                     deploy.AsyncOutput(OUTPUT), wait=True, aas=aas, cloudwatch=cloudwatch,
                                     scaling=deploy.BacklogScaling(1, 4, 10))
        for stub in (sm_stub, aas_stub, cw_stub):
            stub.assert_no_pending_responses()


@pytest.mark.parametrize("output, scaling, wait, message", [
    (deploy.AsyncOutput("my-bucket/out/"), None, False, "--output"),
    (deploy.AsyncOutput(OUTPUT, success_topic="arn:aws:sqs:us-east-1:123456789012:q"), None, False, "SNS topic"),
    (deploy.AsyncOutput(OUTPUT, max_concurrent=1001), None, False, "--max-concurrent-invocations"),
    (deploy.AsyncOutput(OUTPUT), deploy.BacklogScaling(0, 2, 5), False, "--wait"),
    (deploy.AsyncOutput(OUTPUT), deploy.BacklogScaling(3, 2, 5), True, "above --max-instances"),
    (deploy.AsyncOutput(OUTPUT), deploy.BacklogScaling(0, 2, 0), True, "--target-backlog"),
])
def test_create_async_endpoint_validates_before_calling_aws(sm, aas, cloudwatch, output, scaling, wait, message):
    with Stubber(sm), Stubber(aas), Stubber(cloudwatch):  # no responses queued: any call would fail the test
        with pytest.raises(SystemExit, match=message):
            deploy.create_async_endpoint(sm, "clip-async", IMAGE, MODEL_DATA, ROLE, "ml.g5.xlarge", output,
                                         wait=wait, scaling=scaling, aas=aas, cloudwatch=cloudwatch)


def test_create_serverless_endpoint(sm, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(sagemaker=sm))
    variant = {"VariantName": "AllTraffic", "ModelName": "clip-sls",
               "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 20, "ProvisionedConcurrency": 2}}
    with Stubber(sm) as stubber:
        expect_model(stubber, "clip-sls", env={"LOG_LEVEL": "warning"})
        expect_endpoint(stubber, "clip-sls", variant)
        deploy.main(["create-serverless-endpoint", "--name", "clip-sls", "--image", IMAGE, "--model-data",
                     MODEL_DATA, "--role", ROLE, "--memory-mb", "3072", "--max-concurrency", "20",
                     "--provisioned-concurrency", "2", "--env", "LOG_LEVEL=warning"])
        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == endpoint_arn("clip-sls")


@pytest.mark.parametrize("memory, concurrency, provisioned, message", [
    (1500, 5, None, "--memory-mb must be one of 1024, 2048"),
    (7168, 5, None, "--memory-mb"),
    (2048, 201, None, "--max-concurrency"),
    (2048, 5, 6, "--provisioned-concurrency"),
])
def test_create_serverless_endpoint_validates_before_calling_aws(sm, memory, concurrency, provisioned, message):
    with Stubber(sm):
        with pytest.raises(SystemExit, match=message):
            deploy.create_serverless_endpoint(sm, "clip-sls", IMAGE, MODEL_DATA, ROLE, memory, concurrency,
                                              provisioned)


def test_create_multi_model_endpoint_names_an_s3_prefix(sm, capsys):
    prefix = "s3://my-bucket/clip-models/"
    variant = instance_variant("clip-mme", "ml.m5.2xlarge", count=2, timeouts=False)
    variant["ContainerStartupHealthCheckTimeoutInSeconds"] = 600
    with Stubber(sm) as stubber:
        expect_model(stubber, "clip-mme", model_data=prefix, mode="MultiModel")
        expect_endpoint(stubber, "clip-mme", variant)
        arn = deploy.create_multi_model_endpoint(sm, "clip-mme", IMAGE, prefix, ROLE, "ml.m5.2xlarge",
                                                 instance_count=2)
        stubber.assert_no_pending_responses()
    assert arn == endpoint_arn("clip-mme")
    assert "--target-model" in capsys.readouterr().err


@pytest.mark.parametrize("prefix, instance_type, message", [
    ("s3://my-bucket/clip-models/model.tar.gz", "ml.m5.xlarge", "ending in /"),
    ("s3://my-bucket/clip-models/", "ml.g5.xlarge", "CPU instances only"),
    ("s3://my-bucket/clip-models/", "ml.inf2.xlarge", "CPU instances only"),
])
def test_create_multi_model_endpoint_validates_before_calling_aws(sm, prefix, instance_type, message):
    with Stubber(sm):
        with pytest.raises(SystemExit, match=message):
            deploy.create_multi_model_endpoint(sm, "clip-mme", IMAGE, prefix, ROLE, instance_type)


def test_create_component_endpoint_has_no_model_of_its_own(sm):
    variant = {"VariantName": "AllTraffic", "InitialInstanceCount": 1, "InstanceType": "ml.g5.12xlarge",
               "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}
    with Stubber(sm) as stubber:
        expect_endpoint(stubber, "clip-ic", variant, in_service=True, ExecutionRoleArn=ROLE)
        deploy.create_component_endpoint(sm, "clip-ic", ROLE, "ml.g5.12xlarge", wait=True)
        stubber.assert_no_pending_responses()


def expect_component(stubber, name, requirements, copies):
    stubber.add_response("create_inference_component", {
        "InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-component/{name}"}, {
        "InferenceComponentName": name, "EndpointName": "clip-ic", "VariantName": "AllTraffic",
        "Specification": {"ModelName": name, "ComputeResourceRequirements": requirements,
                          "StartupParameters": {"ModelDataDownloadTimeoutInSeconds": 1200,
                                                "ContainerStartupHealthCheckTimeoutInSeconds": 600}},
        "RuntimeConfig": {"CopyCount": copies}})


def described_component(name, status, reason=None):
    response = {"InferenceComponentName": name, "EndpointName": "clip-ic", "EndpointArn": endpoint_arn("clip-ic"),
                "InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-component/{name}",
                "CreationTime": NOW, "LastModifiedTime": NOW, "InferenceComponentStatus": status}
    if reason:
        response["FailureReason"] = reason
    return response


def test_create_inference_component_with_cores_gpus_memory_and_copies(sm, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session", lambda region, profile: FakeSession(sagemaker=sm))
    monkeypatch.setattr(deploy.time, "sleep", lambda seconds: None)
    requirements = {"NumberOfCpuCoresRequired": 4.0, "MinMemoryRequiredInMb": 8192,
                    "NumberOfAcceleratorDevicesRequired": 1.0}
    with Stubber(sm) as stubber:
        expect_model(stubber, "clip-b32", env={"PRECISION": "fp16"})
        expect_component(stubber, "clip-b32", requirements, copies=2)
        for status in ("Creating", "InService"):
            stubber.add_response("describe_inference_component", described_component("clip-b32", status),
                                 {"InferenceComponentName": "clip-b32"})
        deploy.main(["create-inference-component", "--name", "clip-b32", "--endpoint", "clip-ic", "--image", IMAGE,
                     "--model-data", MODEL_DATA, "--role", ROLE, "--cpu-cores", "4", "--memory-mb", "8192",
                     "--accelerators", "1", "--copies", "2", "--env", "PRECISION=fp16", "--wait"])
        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out.strip().endswith("inference-component/clip-b32")


def test_a_failed_inference_component_reports_the_reason(sm):
    with Stubber(sm) as stubber:
        expect_model(stubber, "clip-cpu")
        expect_component(stubber, "clip-cpu", {"NumberOfCpuCoresRequired": 0.5, "MinMemoryRequiredInMb": 2048}, 1)
        stubber.add_response("describe_inference_component",
                             described_component("clip-cpu", "Failed", "not enough memory on the instance"),
                             {"InferenceComponentName": "clip-cpu"})
        with pytest.raises(SystemExit, match="failed: not enough memory"):
            deploy.create_inference_component(sm, "clip-cpu", "clip-ic", IMAGE, MODEL_DATA, ROLE,
                                              deploy.ComponentResources(0.5, 2048), wait=True, delay=0)
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize("resources, message", [
    (deploy.ComponentResources(0.1, 2048), "--cpu-cores"),
    (deploy.ComponentResources(1, 64), "--memory-mb"),
    (deploy.ComponentResources(1, 2048, accelerators=0), "--accelerators"),
    (deploy.ComponentResources(1, 2048, copies=-1), "--copies"),
])
def test_create_inference_component_validates_before_calling_aws(sm, resources, message):
    with Stubber(sm):
        with pytest.raises(SystemExit, match=message):
            deploy.create_inference_component(sm, "clip-b32", "clip-ic", IMAGE, MODEL_DATA, ROLE, resources)


def test_invoke_a_model_of_a_multi_model_endpoint_with_target_model(runtime, tmp_path, monkeypatch, capsys):
    from botocore.response import StreamingBody
    import io

    monkeypatch.setattr(deploy, "make_session",
                        lambda region, profile: FakeSession(**{"sagemaker-runtime": runtime}))
    body = tmp_path / "body.json"
    body.write_bytes(b'{"task": "embed", "texts": ["a red car"]}')
    answer = b'{"task": "embed", "dim": 32}'
    with Stubber(runtime) as stubber:
        stubber.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(answer), len(answer)),
                                                 "ContentType": "application/json"},
                             {"EndpointName": "clip-mme", "Body": body.read_bytes(), "ContentType": "application/json",
                              "Accept": "application/json", "TargetModel": "clip-a.tar.gz"})
        deploy.main(["invoke", "--name", "clip-mme", "--body", str(body), "--target-model", "clip-a.tar.gz"])
        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out == answer.decode() + "\n"


def test_invoke_async_queues_an_s3_body_and_prints_where_the_answer_will_be(runtime, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "make_session",
                        lambda region, profile: FakeSession(**{"sagemaker-runtime": runtime}))
    answer_at = OUTPUT + "6b5e7a0c.out"
    with Stubber(runtime) as stubber:
        stubber.add_response("invoke_endpoint_async", {"InferenceId": "6b5e7a0c", "OutputLocation": answer_at},
                             {"EndpointName": "clip-async", "InputLocation": "s3://my-bucket/in/records.jsonl",
                              "ContentType": "application/jsonlines", "Accept": "application/jsonlines",
                              "InvocationTimeoutSeconds": 3600})
        deploy.main(["invoke-async", "--name", "clip-async", "--input", "s3://my-bucket/in/records.jsonl",
                     "--invocation-timeout", "3600"])
        stubber.assert_no_pending_responses()
    assert capsys.readouterr().out.strip() == answer_at
