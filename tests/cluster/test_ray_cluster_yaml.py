"""``ray_cluster.yaml`` against Ray's own schema, and the properties the project needs from it.

Validation is Ray's own path, offline: ``ray.autoscaler._private.util.prepare_config`` (for ``provider.type: aws``
it only merges ``ray/autoscaler/aws/defaults.yaml`` from the installed package, fills setup commands and
per-node min/max workers; no boto3 call, no network), then ``validate_config``, which checks the result against
``ray/autoscaler/ray-schema.json`` with jsonschema. AWS-side bootstrapping (AMIs, key pairs, subnets, the
security group) needs credentials and is not exercised here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_prepare_and_schema_validation(prepared: dict[str, Any]) -> None:
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["max_workers"] >= sum(
        t["max_workers"] for name, t in prepared["available_node_types"].items() if name != prepared["head_node_type"]
    )


def test_the_schema_check_catches_a_broken_node_type(raw: dict[str, Any]) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(raw)
    broken["available_node_types"]["learner.gpu"]["resources"] = {"learner": "one"}
    with pytest.raises(jsonschema.ValidationError, match="one"):
        validate_config(prepare_config(broken))
    unknown = copy.deepcopy(raw)
    unknown["available_node_types"]["rollout.cpu"]["max_worker"] = 10
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(unknown))


def test_learner_is_one_gpu_node_with_the_learner_resource(prepared: dict[str, Any]) -> None:
    types = prepared["available_node_types"]
    learners = [name for name, t in types.items() if t["resources"].get("learner")]
    assert learners == ["learner.gpu"]
    learner = types["learner.gpu"]
    assert learner["resources"] == {"learner": 1}
    assert (learner["min_workers"], learner["max_workers"]) == (0, 1)
    assert learner["node_config"]["InstanceType"].startswith(("g5.", "g6.", "g4dn.", "p3.", "p4d.", "p5."))


def test_rollout_nodes_are_cpu_spot_from_zero_to_ten(prepared: dict[str, Any]) -> None:
    rollout = prepared["available_node_types"]["rollout.cpu"]
    assert (rollout["min_workers"], rollout["max_workers"]) == (0, 10)
    assert rollout["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert not rollout["node_config"]["InstanceType"].startswith(("g", "p"))
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0
    assert "learner" not in head["resources"]
    assert "InstanceMarketOptions" not in head["node_config"]


def test_every_node_installs_the_project_as_make_run_does(prepared: dict[str, Any], raw: dict[str, Any]) -> None:
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = "\n".join(prepared[key])
        assert "python3.11" in commands
        assert re.search(r"cd ~/rayscalp && make setup\b", commands), key
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "-m venv" in makefile and "pip install --quiet -c constraints.txt -e" in makefile
    assert raw["file_mounts"]["~/rayscalp"] == "."
    for excluded in (".venv", "runs", "data", "artifacts"):
        assert excluded in raw["rsync_exclude"]


def test_ray_starts_with_token_auth_and_the_metrics_port(prepared: dict[str, Any], raw: dict[str, Any]) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in prepared[key] if "ray start" in c]
        assert len(starts) == 1, key
        assert "RAY_AUTH_MODE=token" in starts[0]
        assert "--metrics-export-port=8080" in starts[0]
    # every node shares the one token that `ray get-auth-token --generate` wrote on the laptop
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # the mode is read from the environment only (Ray refuses it in system_config)
    import ray._private.authentication.authentication_token_setup as auth

    assert auth.AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"


def test_the_dashboard_is_reachable_only_through_the_ssh_tunnel(prepared: dict[str, Any]) -> None:
    head_start = next(c for c in prepared["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
        for port in (8265, 8080, 9090, 3000, 6379, 10001):
            assert not low <= port <= high, f"security group opens port {port}: {rule}"


def test_region_is_a_choice_with_the_binance_restriction_explained(prepared: dict[str, Any]) -> None:
    assert re.match(r"^[a-z]{2}-[a-z]+-\d$", prepared["provider"]["region"])
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    assert "451" in text and "endpoints.ws_url" in text


def test_cluster_experiment_config_validates() -> None:
    from cluster.config import load_config

    config = load_config(REPO / "configs" / "cluster.yaml")
    assert config.name == "cluster"
    assert config.training.device == "cuda"
    assert config.data.source == "fetched"
