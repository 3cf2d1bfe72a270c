"""The cluster definitions in cluster/ are valid for the Ray and KubeRay they target, agree with
each other and with the jobs' command lines, and hold no credentials.

No cloud here: the AWS file is checked against the schema and the defaults shipped inside the
installed Ray, and Ray's own autoscaler scheduler is asked which nodes it would launch for the
jobs' resource demands; the KubeRay manifests are checked field by field.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def aws_config() -> dict[str, Any]:
    """cluster/aws.yaml as `ray up` sees it: merged with Ray's AWS defaults, then validated."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load_yaml(CLUSTER / "aws.yaml"))
    validate_config(config)
    return config


def nodes_for(config: dict[str, Any], demands: list[dict[str, float]]) -> tuple[dict[str, int], list]:
    """The nodes Ray's autoscaler would add, from nothing, for these resource demands."""
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary,
    )
    from ray.autoscaler._private.resource_demand_scheduler import (
        _default_utilization_scorer,
        get_nodes_for,
    )

    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    to_add, unfulfilled = get_nodes_for(config["available_node_types"], {}, config["head_node_type"],
                                        config["max_workers"], demands, scorer)
    return dict(to_add), unfulfilled


# --------------------------------------------------------------------------------------------
# AWS cluster launcher


def test_aws_yaml_validates_against_the_schema_shipped_in_ray(aws_config: dict[str, Any]) -> None:
    # validate_config (in the fixture) is what `ray up` runs: ray/autoscaler/ray-schema.json.
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    import jsonschema

    jsonschema.validate(load_yaml(CLUSTER / "aws.yaml"), schema)  # the file itself, before defaults
    assert aws_config["provider"]["type"] == "aws"


def test_aws_node_types_cpu_head_and_gpu_workers_that_scale_from_zero(aws_config: dict[str, Any]) -> None:
    types = aws_config["available_node_types"]
    head = types[aws_config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    assert any("--num-cpus=0" in c for c in aws_config["head_start_ray_commands"]), "head must schedule no work"

    gpu = [t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for name, t in types.items() if name != aws_config["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu and cpu
    for node_type in gpu + cpu:
        assert node_type["min_workers"] == 0
        assert 1 <= node_type["max_workers"] <= aws_config["max_workers"]
    assert aws_config["idle_timeout_minutes"] > 0
    assert aws_config["provider"]["cache_stopped_nodes"] is False


# vCPUs and GPUs of the instance types the file may name; the declared resources must match, or
# the autoscaler plans with nodes that are not what EC2 delivers.
INSTANCE_SHAPES = {
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1),
    "g6e.xlarge": (4, 1), "m7i.xlarge": (4, 0), "m7i.2xlarge": (8, 0), "c7i.2xlarge": (8, 0),
    "c7i.4xlarge": (16, 0),
}


def test_aws_declared_resources_match_the_instance_types(aws_config: dict[str, Any]) -> None:
    for name, node_type in aws_config["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_SHAPES, f"{name}: add {instance} to INSTANCE_SHAPES"
        vcpus, gpus = INSTANCE_SHAPES[instance]
        if name == aws_config["head_node_type"]:
            continue  # the head declares 0 CPUs on purpose
        assert node_type["resources"]["CPU"] == vcpus, name
        assert node_type["resources"].get("GPU", 0) == gpus, name


def test_aws_autoscaler_adds_gpu_nodes_for_gpu_actors_and_cpu_nodes_for_cpu_tasks(aws_config: dict[str, Any]) -> None:
    gpu_type = next(n for n, t in aws_config["available_node_types"].items() if t["resources"].get("GPU"))
    max_gpu_nodes = aws_config["available_node_types"][gpu_type]["max_workers"]
    # Restore actors (num_gpus=1, 1 CPU) and Ray Train GPU workers: one GPU node each.
    added, unfulfilled = nodes_for(aws_config, [{"CPU": 1, "GPU": 1}] * max_gpu_nodes)
    assert added == {gpu_type: max_gpu_nodes} and not unfulfilled
    # Decode/encode tasks alone never bring up a GPU node.
    added, _ = nodes_for(aws_config, [{"CPU": 1}] * 4)
    assert gpu_type not in added and sum(added.values()) == 1


def test_aws_nodes_get_s3_from_instance_profiles_and_the_cluster_token(aws_config: dict[str, Any]) -> None:
    for name, node_type in aws_config["available_node_types"].items():
        assert "IamInstanceProfile" in node_type["node_config"], f"{name} would have no S3 access"
    setup = "\n".join(aws_config["setup_commands"])
    region = aws_config["provider"]["region"]
    assert f"AWS_REGION={region}" in setup, "nodes must use the provider's region for S3"
    assert "RAY_AUTH_MODE=token" in setup
    assert "~/.ray/auth_token" in aws_config["file_mounts"]
    # The nodes run the Ray this repository is tested with.
    assert f"ray[default,data,train]=={ray.__version__}" in setup


# --------------------------------------------------------------------------------------------
# Local simulation


def test_local_fake_cluster_yaml_validates_and_mirrors_the_aws_shape() -> None:
    from ray.autoscaler._private.util import validate_config

    config = load_yaml(CLUSTER / "local-fake.yaml")
    assert config["provider"]["type"] == "fake_multinode"
    # Complete on its own: Ray's defaults for fake_multinode (example.yaml) are not in the wheel,
    # so prepare_config cannot fill anything in.
    validate_config(config)
    types = config["available_node_types"]
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert len(gpu) == 1 and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 2
    assert config["idle_timeout_minutes"] <= 0.2, "the local test waits for idle nodes to go"
    added, _ = nodes_for(config, [{"CPU": 0.5, "GPU": 1}] * 2)
    assert added == {"gpu-worker": 2}


# --------------------------------------------------------------------------------------------
# KubeRay

QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def check_pod_template(template: dict[str, Any], *, where: str) -> dict[str, Any]:
    spec = template["spec"]
    assert spec.get("serviceAccountName") == "restoration-ray", f"{where}: S3 comes from the service account"
    (container,) = spec["containers"]
    assert container["image"] and container["name"]
    resources = container["resources"]
    for kind in ("limits", "requests"):
        for key, value in resources[kind].items():
            assert QUANTITY.match(str(value)), f"{where}: {kind}.{key}={value!r} is not a Kubernetes quantity"
    # Ray sizes its node from the limits; requests equal to limits give the pod Guaranteed QoS.
    assert resources["limits"] == resources["requests"], where
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, f"{where}: no keys in manifests"
    return container


def check_raycluster_spec(spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert str(head["rayStartParams"]["num-cpus"]) == "0"
    head_container = check_pod_template(head["template"], where="head")
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    gpu_groups = []
    for group in groups:
        assert group["minReplicas"] == 0, group["groupName"]
        assert group["maxReplicas"] >= 1 and 0 <= group["replicas"] <= group["maxReplicas"]
        container = check_pod_template(group["template"], where=group["groupName"])
        assert container["image"] == head_container["image"], "one image for every Ray node"
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            gpu_groups.append(group)
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu_groups, "a GPU worker group is required"


def test_raycluster_autoscales_gpu_worker_groups_from_zero() -> None:
    documents = list(yaml.safe_load_all((KUBERAY / "raycluster.yaml").read_text()))
    (cluster,) = documents
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    check_raycluster_spec(cluster["spec"])


def _job_parser(job: str) -> argparse.ArgumentParser:
    module = __import__(f"jobs.{job}", fromlist=["add_arguments"])
    parser = argparse.ArgumentParser(prog=f"python -m jobs.{job}", exit_on_error=False)
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize("job", ["finetune", "restore"])
def test_rayjob_runs_the_job_on_the_raycluster_spec_with_the_shared_runtime_env(job: str) -> None:
    path = KUBERAY / f"rayjob-{job}.yaml"
    # A project file: its absence is a regression to fail on, not a reason to skip.
    assert (REPO / "jobs" / f"{job}.py").is_file(), f"jobs/{job}.py is missing"
    rayjob = load_yaml(path)
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    # Same cluster as raycluster.yaml, deleted when the job ends.
    assert spec["rayClusterSpec"] == load_yaml(KUBERAY / "raycluster.yaml")["spec"]
    check_raycluster_spec(spec["rayClusterSpec"])
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] > 0
    # Same runtime environment as `cluster/submit.sh`.
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == load_yaml(CLUSTER / "runtime_env.yaml")

    # The entrypoint is the job's real command line: it parses, and its config overrides load.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", f"jobs.{job}"]
    args = _job_parser(job).parse_args(argv[3:])
    if job == "restore":
        from jobs.settings import RayRestoreConfig as RestoreConfig
        from restoration import config as config_lib

        config = config_lib.load_config(RestoreConfig, overrides=args.overrides)
        # No GPU node is up when the job starts: GPU use and the pool size must be explicit.
        assert config.pipeline.use_gpu is True
        gpu_group = next(g for g in spec["rayClusterSpec"]["workerGroupSpecs"]
                         if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"])
        assert config.pipeline.max_actors == gpu_group["maxReplicas"]
        # All actors requested up front: Ray Data does not grow a GPU pool beyond what the
        # cluster has, so min < max would leave GPU nodes unlaunched (docs/cluster.md, 9).
        assert config.pipeline.min_actors == config.pipeline.max_actors
        assert args.input.startswith("s3://") and args.output.startswith("s3://")
    else:
        from restoration.finetune.settings import load_train_config

        config_path = args.config.replace("/home/ray/restoration/", f"{REPO}/")  # the image's WORKDIR
        assert Path(config_path).is_file(), f"--config {args.config} is not in the image"
        load_train_config(args.task, path=config_path, overrides=args.overrides, steps=args.steps)
        assert args.use_gpu and args.storage.startswith("s3://"), "checkpoints must outlive the pods"
        gpu_pods = sum(g["maxReplicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]
                       if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"])
        assert args.workers <= gpu_pods


def test_dockerfile_builds_on_the_ray_version_tested_here() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-") and base.endswith("-gpu")
    images = {c["image"] for c in _all_containers(load_yaml(KUBERAY / "raycluster.yaml")["spec"])}
    assert len(images) == 1


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


# --------------------------------------------------------------------------------------------
# runtime_env, submit script, IAM


def test_runtime_env_is_valid_for_ray_and_installs_nothing() -> None:
    from ray.runtime_env import RuntimeEnv

    data = load_yaml(CLUSTER / "runtime_env.yaml")
    assert set(data) <= {"env_vars", "excludes", "config"}, "deps live on the nodes, code comes with --working-dir"
    runtime_env = RuntimeEnv(**data)  # raises on wrong types
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in runtime_env["env_vars"].items())
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(data["env_vars"])


def test_working_dir_upload_is_small_and_leaves_the_venv_behind(tmp_path: Path) -> None:
    """What `ray job submit --working-dir .` uploads, packaged by Ray's own code."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    excludes = load_yaml(CLUSTER / "runtime_env.yaml")["excludes"]
    package = tmp_path / "working_dir.zip"
    create_package(str(REPO), package, include_gitignore=True, excludes=excludes)
    names = zipfile.ZipFile(package).namelist()
    assert "jobs/restore.py" in names or "jobs/finetune.py" in names
    assert "restoration/__init__.py" in names and "cluster/runtime_env.yaml" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "runs/"))]
    # The shipped default weights (about 25 MB, float16) travel with the code so that
    # `--model default` resolves on the cluster; everything else is small.
    weights = sum(p.stat().st_size for p in (REPO / "restoration" / "weights").rglob("*") if p.is_file())
    assert package.stat().st_size < weights + 8 * 2**20, f"{package.stat().st_size / 2**20:.1f} MiB to upload per job"


@pytest.fixture()
def fake_ray(tmp_path: Path) -> Path:
    """A `ray` executable that records its arguments instead of submitting anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ray"
    script.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$PWD" "auth=${RAY_AUTH_MODE:-}" "$@" > "$FAKE_RAY_ARGS"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def run_submit(fake_ray: Path, tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], str]:
    record = tmp_path / "args.txt"
    result = subprocess.run(
        ["bash", str(CLUSTER / "submit.sh"), *args], capture_output=True, text=True, timeout=30,
        cwd=tmp_path,  # the script must work from anywhere
        env={**os.environ, "PATH": f"{fake_ray}:{os.environ['PATH']}", "FAKE_RAY_ARGS": str(record), **env},
    )
    recorded = record.read_text().splitlines() if record.exists() else []
    return result.returncode, recorded, result.stderr


def test_submit_script_runs_ray_job_submit_with_the_working_dir_and_runtime_env(fake_ray: Path, tmp_path: Path) -> None:
    code, recorded, stderr = run_submit(fake_ray, tmp_path, "finetune", "--task", "denoise", "--name", "a b",
                                        RAY_ADDRESS="http://head:8265", SUBMISSION_ID="ft-1",
                                        RAY_AUTH_TOKEN="t0ken", RAY_AUTH_MODE="")
    assert code == 0, stderr
    cwd, auth, *argv = recorded
    assert cwd == str(REPO), "the working dir uploaded is the repository root"
    assert auth == "auth=token", "with a token at hand the client must send it"
    assert argv[:2] == ["job", "submit"]
    separator = argv.index("--")
    options, entrypoint = argv[2:separator], argv[separator + 1:]
    assert options[options.index("--address") + 1] == "http://head:8265"
    assert options[options.index("--working-dir") + 1] == "."
    assert options[options.index("--runtime-env") + 1] == "cluster/runtime_env.yaml"
    assert options[options.index("--submission-id") + 1] == "ft-1"
    assert "--no-wait" not in options
    assert entrypoint == ["python", "-m", "jobs.finetune", "--task", "denoise", "--name", "a b"]


def test_submit_script_no_wait_and_bad_usage(fake_ray: Path, tmp_path: Path) -> None:
    code, recorded, _ = run_submit(fake_ray, tmp_path, "finetune", "--task", "denoise", NO_WAIT="1")
    assert code == 0 and "--no-wait" in recorded
    for args in [(), ("--help",), ("train",)]:
        code, recorded, stderr = run_submit(fake_ray, tmp_path, *args)
        assert code == 2 and "finetune" in stderr


def test_iam_policies_are_valid_json_and_scoped() -> None:
    for path in sorted((CLUSTER / "aws-iam").glob("*.json")):
        policy = json.loads(path.read_text())
        assert policy["Version"] == "2012-10-17", path.name
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert "*" not in actions and "s3:*" not in actions, f"{path.name}: no wildcard actions"
    s3 = json.loads((CLUSTER / "aws-iam" / "s3-data.json").read_text())
    assert all("YOUR-BUCKET" in json.dumps(s["Resource"]) for s in s3["Statement"])
    names = {p["Name"] for t in load_yaml(CLUSTER / "aws.yaml")["available_node_types"].values()
             for p in [t["node_config"]["IamInstanceProfile"]]}
    script = (CLUSTER / "aws-iam" / "create-roles.sh").read_text()
    assert all(name in script for name in names), "create-roles.sh must create every profile aws.yaml names"
    for shell_script in [CLUSTER / "submit.sh", CLUSTER / "aws-iam" / "create-roles.sh"]:
        subprocess.run(["bash", "-n", str(shell_script)], check=True, timeout=10)


SECRET = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]|AWS_SECRET_ACCESS_KEY\s*[:=]\s*\S", re.IGNORECASE)


def test_no_credentials_anywhere_in_cluster_files() -> None:
    for path in sorted(CLUSTER.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".json", ".sh", ".py", ""}:
            assert not SECRET.search(path.read_text()), f"{path.relative_to(REPO)} holds a credential"
