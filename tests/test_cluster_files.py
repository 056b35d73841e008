"""The real-cluster recipes in ``cluster/`` (docs/cluster.md), checked without a cluster.

Every YAML file is parsed. Ray cluster launcher files are validated against the JSON schema that
``ray up`` checks (``ray/autoscaler/ray-schema.json``), both as written and after Ray's own
default-filling (``prepare_config`` + ``validate_config``, what ``ray up`` runs before it contacts any
machine), plus the keys the recipe depends on: token authentication on every node and the suite
installed from the copied checkout. The KubeRay RayJob's entrypoint is parsed with ``senet``'s own
argument parser: a ``senet sweep`` of a known study with ``--address auto`` and an ``s3://`` storage.
PyYAML is a project dependency; jsonschema is a dependency of Ray itself.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from ablations.studies import PRESETS, STUDIES
from senet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
DOC = ROOT / "docs" / "cluster.md"
FILES = sorted(p for p in CLUSTER.iterdir() if p.suffix in (".yaml", ".yml")) if CLUSTER.is_dir() else []


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _is_launcher(doc) -> bool:
    return isinstance(doc, dict) and "cluster_name" in doc and "provider" in doc


def _is_rayjob(doc) -> bool:
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/") \
        and doc.get("kind") == "RayJob"


LAUNCHERS = [p for p in FILES if _is_launcher(_load(p))]
RAYJOBS = [p for p in FILES if _is_rayjob(_load(p))]


def _ray_pin() -> str:
    m = re.search(r'"ray\[tune\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert m, "pyproject.toml pins ray[tune]==X.Y.Z"
    return m.group(1)


def _ray_schema() -> dict:
    spec = importlib.util.find_spec("ray")  # without importing ray
    path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json" if spec else None
    if path is None or not path.is_file():
        pytest.skip("Ray's launcher schema (ray/autoscaler/ray-schema.json) is not installed")
    return json.loads(path.read_text())


def test_every_file_is_a_known_recipe():
    assert len(FILES) >= 3, f"expected the launcher and RayJob recipes in {CLUSTER}"
    for p in FILES:
        assert p in LAUNCHERS or p in RAYJOBS, f"{p.name} is neither a Ray launcher config nor a RayJob"
    providers = {_load(p)["provider"]["type"] for p in LAUNCHERS}
    assert "local" in providers, "an on-premise (provider type local) launcher file"
    assert providers - {"local"}, "a cloud-provider launcher file"
    assert RAYJOBS, "a KubeRay RayJob"


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_matches_rays_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _ray_schema()
    doc = _load(path)
    jsonschema.validate(doc, schema)
    util = pytest.importorskip("ray.autoscaler._private.util")
    prepared = util.prepare_config(copy.deepcopy(doc))
    util.validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_keys(path):
    doc = _load(path)
    provider = doc["provider"]
    assert doc["cluster_name"] and doc["auth"]["ssh_user"]
    if provider["type"] == "local":
        assert provider["head_ip"] and provider["worker_ips"], "the hosts' addresses"
        # Ray builds the node types of a local cluster itself and refuses a file that names some
        assert "available_node_types" not in doc
    else:
        types = doc["available_node_types"]
        assert doc["head_node_type"] in types and doc["max_workers"] >= 1
        workers = [t for name, t in types.items() if name != doc["head_node_type"]]
        assert workers and all(t.get("max_workers", 0) >= 1 for t in workers)
    # the checkout, copied from the repository root, is what every node installs
    mounts = doc["file_mounts"]
    assert mounts.get("~/senet-suite") == "."
    assert any("senet-suite" in c and "pip install" in c for c in doc["setup_commands"])
    # token authentication: the local token on every node, and every node's Ray started in token mode
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in doc[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert any("--head" in c for c in doc["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in doc["worker_start_ray_commands"])
    # the Ray that runs the cluster is the project's pinned one
    pin = _ray_pin()
    image = (doc.get("docker") or {}).get("image", "")
    assert pin in image or any(f"ray[default]=={pin}" in c for c in doc["setup_commands"])


def _sweep_args(command: str):
    tokens = shlex.split(command)
    assert tokens[:2] == ["senet", "sweep"], command
    args, extra = build_parser().parse_known_args(tokens[1:])
    return args, extra


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob(path):
    doc = _load(path)
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _ray_pin()
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    images = [c["image"] for c in head["template"]["spec"]["containers"]]
    groups = cluster["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["groupName"] and g["replicas"] >= 1 and isinstance(g.get("rayStartParams", {}), dict)
        containers = g["template"]["spec"]["containers"]
        images += [c["image"] for c in containers]
        assert any("nvidia.com/gpu" in c["resources"]["limits"] for c in containers), "GPU workers"
    assert images and all(images)
    # every env value is a name or a Secret reference: no credential is written in the file
    workers = [c for g in groups for c in g["template"]["spec"]["containers"]]
    for c in [*head["template"]["spec"]["containers"], *workers]:
        for e in c.get("env", []):
            if e["name"].startswith("AWS_SECRET") or "TOKEN" in e["name"]:
                assert "value" not in e, f"{e['name']} must come from a Secret"

    args, extra = _sweep_args(spec["entrypoint"])
    assert args.command == "sweep" and not extra
    assert args.address == "auto"
    assert args.storage and args.storage.startswith("s3://")
    assert args.gpus_per_trial and args.gpus_per_trial > 0
    assert args.study in STUDIES.names() and args.preset in PRESETS.names()


def _doc_commands(name: str) -> list[str]:
    """Every ``senet <name> ...`` command in docs/cluster.md's code blocks (also inside quotes)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        for m in re.finditer(rf"(?<![\w-])senet {name}\b[^'\"#\n]*", line):
            found.append(m.group(0).replace("~/senet-venv/bin/", "").strip())
    return found


def test_doc_commands_parse():
    sweeps, collects = _doc_commands("sweep"), _doc_commands("collect")
    assert sweeps and collects
    for cmd in sweeps:
        args, extra = _sweep_args(cmd)
        assert not extra and args.address == "auto" and args.storage, cmd
    for cmd in collects:
        args, extra = build_parser().parse_known_args(shlex.split(cmd)[1:])
        assert args.command == "collect" and not extra and args.storage, cmd


def test_docs_name_every_file_and_readme_links_them():
    text = DOC.read_text()
    for p in FILES:
        assert f"cluster/{p.name}" in text, f"docs/cluster.md does not mention cluster/{p.name}"
    assert "(docs/cluster.md)" in (ROOT / "README.md").read_text(), "README links docs/cluster.md"
