"""Every command deploy/ runs for our daemons, read from where it is written: the Dockerfile's CMD
and HEALTHCHECK, the compose file's services, the Kubernetes containers and probes, and the
systemd units' ExecStart lines. The tests parse and run each from the local virtual environment
with the same arguments, paths mapped to files they make (:func:`map_paths`)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from deerflow_agent.main import main as agent_main
from deerflow_controller.cli import main as cli_main
from deerflow_controller.main import main as controller_main
from deerflow_simulator.cli import sim as sim_main

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
ENV_EXAMPLE = DEPLOY / "deerflow.env.example"
IMAGE = "deerflow-parallel"
HEALTHCHECK_IN_IMAGE = "/usr/local/lib/deerflow/healthcheck.py"
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"

DAEMONS: dict[str, click.Command] = {
    "deerflow-controller": controller_main,
    "deerflow-agent": agent_main,
    "deerflow-sim": sim_main,
    "deerflow": cli_main,
}
SPECIFIERS = {"%H": "host-1", "%%": "%"}
"""systemd specifiers the units may use, with a stand-in value."""
POD_FIELDS = {"metadata.name": "deerflow-controller-7c9f-x2k4q", "metadata.namespace": "deerflow"}


@dataclass
class Health:
    """A health check of a daemon: ``argv`` run in its container (the image's HEALTHCHECK,
    compose's), or a Kubernetes probe (``http_path``/``http_port``/``scheme``)."""

    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    http_path: str = ""
    http_port: str = ""
    scheme: str = "HTTP"


@dataclass
class DeployCommand:
    source: str
    """Where it is written, e.g. ``compose.yaml:controller-1``."""
    daemon: str
    """A key of :data:`DAEMONS`."""
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: list[Health] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.source


def daemon_of(argv: list[str]) -> tuple[str, list[str]]:
    """(daemon, its arguments) of a command line naming one of ours, else ("", argv)."""
    name = Path(argv[0]).name
    if name in DAEMONS:
        return name, argv[1:]
    if name.startswith("python") and argv[1:3] == ["-m", "deerflow_simulator"]:
        return "deerflow-sim", argv[3:]
    return "", argv


# -- the Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_commands(path: Path = DOCKERFILE) -> list[DeployCommand]:
    """The runtime stage's CMD with its HEALTHCHECK and ENV (the last stage is what runs)."""
    stages: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile_instructions(path.read_text()):
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    env: dict[str, str] = {}
    cmd: list[str] = []
    health: list[Health] = []
    for word, rest in stages[-1]:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            _, _, exec_form = rest.partition("CMD ")
            health.append(Health(argv=json.loads(exec_form), env=env))
    daemon, args = daemon_of(cmd)
    return [DeployCommand("Dockerfile:CMD", daemon, args, env=env, health=health)]


# -- the compose file -----------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def compose_commands(path: Path = COMPOSE) -> list[DeployCommand]:
    (spec,) = load_yaml_documents(path)
    out = []
    for name, service in spec["services"].items():
        if not str(service.get("image", "")).startswith(IMAGE):
            continue
        daemon, args = daemon_of([str(a) for a in service["command"]])
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        health = []
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            assert test[0] == "CMD", f"{name}: use the exec form ['CMD', ...] (no shell in tests)"
            health.append(Health(argv=[str(a) for a in test[1:]], env=env))
        profiles = service.get("profiles") or []
        source = f"compose.yaml:{name}" + (f"[{','.join(profiles)}]" if profiles else "")
        out.append(DeployCommand(source, daemon, args, env=env, health=health))
    return out


# -- the Kubernetes manifests ---------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every resource of the files deploy/kubernetes/kustomization.yaml lists."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [
        (KUBERNETES / name, doc)
        for name in kustomization["resources"]
        for doc in load_yaml_documents(KUBERNETES / name)
    ]


def _env_of(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    """The container's ``env`` with stand-ins for pod fields and the ConfigMap's values; later
    entries may use earlier ones as ``$(VAR)``, as the kubelet expands them."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            value = POD_FIELDS[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            value = config[source["configMapKeyRef"]["key"]]
        else:
            value = expand_k8s(str(item.get("value", "")), env)
        env[item["name"]] = value
    return env


def expand_k8s(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in command and args (an unknown one fails)."""

    def one(m: re.Match[str]) -> str:
        assert m[1] in env, f"$({m[1]}) is not defined in the container's env"
        return env[m[1]]

    return re.sub(r"\$\((\w+)\)", one, text)


def kubernetes_commands() -> list[DeployCommand]:
    resources = manifests()
    config: dict[str, str] = {}
    for _, doc in resources:
        if doc["kind"] == "ConfigMap":
            config.update(doc["data"])
    out = []
    for path, doc in resources:
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if not str(container["image"]).startswith(IMAGE):
                continue
            env = _env_of(container, config)
            argv = [expand_k8s(str(a), env) for a in [*container["command"], *container["args"]]]
            daemon, args = daemon_of(argv)
            ports = {p["name"]: str(p["containerPort"]) for p in container.get("ports") or []}
            health = [
                Health(
                    http_path=probe["httpGet"]["path"],
                    http_port=ports.get(
                        str(probe["httpGet"]["port"]), str(probe["httpGet"]["port"])
                    ),
                    scheme=probe["httpGet"].get("scheme", "HTTP"),
                )
                for kind in ("startupProbe", "livenessProbe", "readinessProbe")
                if (probe := container.get(kind)) and "httpGet" in probe
            ]
            source = f"kubernetes/{path.name}:{doc['metadata']['name']}"
            out.append(DeployCommand(source, daemon, args, env=env, health=health))
    return out


# -- the systemd units ----------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (comments and sections dropped); a key may repeat."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def command_line(exec_start: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """(daemon name, arguments) of an ExecStart line, expanded as systemd does: ``${VAR}`` is one
    argument, a bare ``$VAR`` splits on whitespace; an unset variable fails the test."""
    words = []
    for word in shlex.split(exec_start):
        for spec, value in SPECIFIERS.items():
            word = word.replace(spec, value)
        bare = re.fullmatch(r"\$(\w+)", word)
        if bare:
            assert bare[1] in env, f"ExecStart uses ${bare[1]}, which {ENV_EXAMPLE.name} lacks"
            words.extend(env[bare[1]].split())
            continue

        def braced(m: re.Match[str]) -> str:
            assert m[1] in env, f"ExecStart uses ${{{m[1]}}}, which {ENV_EXAMPLE.name} lacks"
            return env[m[1]]

        words.append(re.sub(r"\$\{(\w+)\}", braced, word))
    return Path(words[0]).name, words[1:]


def unit_commands() -> list[DeployCommand]:
    env = env_file()
    out = []
    for path in UNITS:
        (exec_start,) = unit_settings(path)["ExecStart"]
        daemon, args = command_line(exec_start, env)
        out.append(DeployCommand(f"systemd/{path.name}", daemon, args, env=env))
    return out


def all_commands() -> list[DeployCommand]:
    return [*dockerfile_commands(), *compose_commands(), *kubernetes_commands(), *unit_commands()]


# -- arguments ------------------------------------------------------------------------------------


def options(daemon: str) -> set[str]:
    return {o for p in DAEMONS[daemon].params for o in (*p.opts, *p.secondary_opts)}


def flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def map_paths(args: list[str], files: dict[str, Path]) -> list[str]:
    """Every absolute path in ``args`` (alone or as ``--flag=/path``) replaced by the file of the
    same name in ``files``; a path the tests have no file for fails."""

    def one(value: str) -> str:
        if not value.startswith("/"):
            return value
        name = Path(value).name
        assert name in files, f"no stand-in for {value}: add {name!r} to the test's files"
        return str(files[name])

    out = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        out.append(f"{flag}={one(value)}" if eq and flag.startswith("--") else one(arg))
    return out


def set_option(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` with every ``flag`` (``--f v`` or ``--f=v``) dropped and ``--f=value`` added
    (unless None)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out if value is None else [*out, f"{flag}={value}"]


def option(args: list[str], flag: str) -> str | None:
    """The last value of ``flag`` in ``args``."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value
