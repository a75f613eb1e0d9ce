"""cluster.yaml: passes Ray's own cluster-launcher schema and keeps the security settings."""
from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema_with_a_head_and_a_gpu_worker():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(config)  # raises on an unknown key or a wrong type
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t.get("resources", {}).get("GPU", 0) >= 1 for t in types.values())


def test_token_auth_localhost_dashboard_shared_storage_and_project_install():
    config = yaml.safe_load(CLUSTER.read_text())
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in head + workers if "ray start" in c)
    assert any("--dashboard-host=127.0.0.1" in c for c in head)
    assert "~/.ray/auth_token" in config["file_mounts"]
    setup = " ".join(config["setup_commands"])
    assert "/mnt/shared" in setup and "pip install" in setup and "cifar-sweep" in setup


def test_every_top_level_key_is_commented():
    lines = CLUSTER.read_text().splitlines()
    keys = [i for i, ln in enumerate(lines) if ln and not ln[0].isspace() and not ln.startswith("#")]
    for i in keys:
        assert "#" in lines[i] or lines[i - 1].lstrip().startswith("#"), lines[i]
