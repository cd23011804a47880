"""Static checks of the cloud configs: Ray cluster launcher YAMLs (cluster/*.yaml), KubeRay manifests
(cluster/kuberay/), the image they name (cluster/Dockerfile), job specs and runtime envs (jobs/), and the example
descriptions. Nothing here starts a cluster; every check reads files, Ray's own schemas, or the typer app.

Commands are checked against the real CLI: every `t2l-ray ...` entrypoint, and every command line in a header
comment (a comment line indented by at least two spaces after `#`, continued with a trailing backslash), must
name a command of `t2l_ray.cli.app`, use only its options, give its required ones, and reference files under
jobs/ that exist.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ["cluster/aws-gpu.yaml", "cluster/gcp-gpu.yaml"]
KUBERAY_DIR = ROOT / "cluster" / "kuberay"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
SPECS = sorted((ROOT / "jobs" / "specs").glob("*.yaml"))
RUNTIME_ENVS = sorted((ROOT / "jobs").glob("runtime_env*.yaml"))
DESCRIPTIONS = ROOT / "jobs" / "examples" / "descriptions.jsonl"
SERVE_LLM = ROOT / "jobs" / "serve_llm.yaml"
GUIDE = ROOT / "docs" / "cluster.md"
BUCKET = "t2l-ray-artifacts"
ADAPTER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
STEERING = {"train_gpu", "gen_gpu", "serve_gpu"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml(path: str | Path):
    return yaml.safe_load((ROOT / path).read_text())


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower()] = version.strip()
    return out


def package_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def ray_image() -> str:
    return f"rayproject/ray:{pins()['ray']}-py311-gpu"


def t2l_image() -> str:
    return f"ghcr.io/t2l-ray/t2l-ray:{package_version()}"


# ---------------------------------------------------------------- header comments and entrypoints


def join_continued(lines) -> list[str]:
    """Commands from candidate lines: (text, may_start_a_command) or None where a command cannot continue;
    a trailing backslash continues a command on the next line."""
    commands, pending = [], None
    for line in lines:
        if line is None:
            pending = None
            continue
        text, may_start = line
        if pending is None and not may_start:
            continue
        text = text.strip() if pending is None else f"{pending} {text.strip()}".strip()
        if text.endswith("\\"):
            pending = text[:-1].strip()
            continue
        pending = None
        if text:
            commands.append(text)
    return commands


def comment_commands(path: Path) -> list[str]:
    """Command lines in a file's comments: `#` then at least two spaces; a trailing backslash continues."""

    def lines():
        for line in path.read_text().splitlines():
            stripped = line.lstrip()
            yield (stripped[1:], stripped[1:].startswith("  ")) if stripped.startswith("#") else None

    return join_continued(lines())


def markdown_commands(path: Path) -> list[str]:
    """Command lines in a Markdown file's fenced code blocks; a trailing backslash continues, ` #` starts a comment."""

    def lines():
        fenced = False
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                yield None
            elif fenced:
                yield (line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""), True

    return join_continued(lines())


def t2l_commands_in(text: str) -> list[str]:
    """`t2l-ray ...` at the start of a command line or after ` -- ` (an entrypoint of `ray job submit`)."""
    found = []
    if re.match(r"t2l-ray\s", text):
        found.append(text)
    found += [m.group(1) for m in re.finditer(r"\s--\s+(t2l-ray\s.*)$", text)]
    return found


def kuberay_docs() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(KUBERAY_DIR.glob("*.yaml")) for doc in load_all(path)]


def collect_t2l_commands() -> list[tuple[str, str]]:
    """(where, command line) for every t2l-ray command the configs, manifests and specs name."""
    out = []
    files = [ROOT / p for p in LAUNCHERS] + sorted(KUBERAY_DIR.glob("*.yaml")) + RUNTIME_ENVS + SPECS + [SERVE_LLM]
    for path in files:
        for line in comment_commands(path):
            out += [(f"{rel(path)} header", cmd) for cmd in t2l_commands_in(line)]
    for line in markdown_commands(GUIDE):
        out += [(f"{rel(GUIDE)} code block", cmd) for cmd in t2l_commands_in(line)]
    for path, doc in kuberay_docs():
        if doc.get("kind") == "RayJob":
            out.append((f"{rel(path)} spec.entrypoint", doc["spec"]["entrypoint"]))
    for path in SPECS:
        out.append((f"{rel(path)} entrypoint", load_yaml(path)["entrypoint"]))
    return out


T2L_COMMANDS = collect_t2l_commands()


def unique_commands() -> list[tuple[str, str]]:
    """One test per distinct command line; `where` lists every place that names it."""
    places: dict[str, list[str]] = {}
    for where, cmd in T2L_COMMANDS:
        places.setdefault(" ".join(shlex.split(cmd)), []).append(where)
    return [("; ".join(wheres), cmd) for cmd, wheres in places.items()]


def command_id(item) -> str:
    words = shlex.split(item[1])
    config = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--config"), None)
    return " ".join(words[:2] + ([config] if config else []) + (["(gs)"] if "gs://" in item[1] else []))


@pytest.fixture(scope="module")
def cli():
    """The real command tree, as click sees it."""
    import typer.main

    from t2l_ray.cli import app

    return typer.main.get_command(app)


def is_group(command) -> bool:
    """Typer 0.29 builds on its own copy of click (typer._click): recognise groups by shape, not by class."""
    return isinstance(getattr(command, "commands", None), dict)


def is_option(param) -> bool:
    return getattr(param, "param_type_name", None) == "option"


def resolve(cli, words: list[str]):
    """Walk `t2l-ray group sub ...` down the click tree; returns (command, path, remaining words)."""
    assert words and words[0] == "t2l-ray", words
    command, path, i = cli, ["t2l-ray"], 1
    while is_group(command) and i < len(words) and not words[i].startswith("-"):
        name = words[i]
        if name not in command.commands:
            pytest.fail(f"`{' '.join(path + [name])}` is not a command; {' '.join(path)} has: {sorted(command.commands)}")
        command, path, i = command.commands[name], path + [name], i + 1
    if is_group(command):
        pytest.fail(f"`{' '.join(path)}` is a group; name one of its commands: {sorted(command.commands)}")
    return command, path, words[i:]


def test_guide_commands_are_collected():
    found = {cmd.split()[1] for where, cmd in T2L_COMMANDS if where.startswith("docs/")}
    assert {"train", "batch-generate", "data"} <= found, found


def test_configs_name_t2l_commands():
    names = {shlex.split(cmd)[1] for _, cmd in T2L_COMMANDS}
    assert {"train", "train-lora", "batch-generate", "eval"} <= names, names


def test_resolve_walks_the_real_command_tree(cli):
    """The sub-group walk in `resolve` is exercised on the real tree: every leaf resolves to itself."""

    def leaves(command, path):
        if is_group(command):
            for name, sub in command.commands.items():
                yield from leaves(sub, path + [name])
        else:
            yield path, command

    found = list(leaves(cli, ["t2l-ray"]))
    assert found, "the typer app has no commands"
    for path, command in found:
        assert resolve(cli, path)[0] is command


@pytest.mark.parametrize("item", unique_commands(), ids=command_id)
def test_command_is_real_with_real_options(cli, item):
    where, line = item
    command, path, rest = resolve(cli, shlex.split(line))
    options = {opt: p for p in command.params if is_option(p) for opt in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if getattr(p, "param_type_name", None) == "argument"]
    seen, positionals, i = set(), [], 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            assert name in options, f"{where}: `{' '.join(path)}` has no option {name}; it has {sorted(options)}"
            param = options[name]
            seen.add(param.name)
            takes_value = not (param.is_flag or param.count)
            i += 2 if takes_value and "=" not in word else 1
        else:
            positionals.append(word)
            i += 1
    capacity = sum(float("inf") if p.nargs == -1 else p.nargs for p in arguments)
    assert len(positionals) <= capacity, f"{where}: too many arguments {positionals} for `{' '.join(path)}`"
    for p in command.params:
        if is_option(p) and p.required:
            assert p.name in seen, f"{where}: `{' '.join(path)}` needs {p.opts[0]}"
    required_args = sum(p.nargs if p.nargs > 0 else 1 for p in arguments if p.required)
    assert len(positionals) >= required_args, f"{where}: `{' '.join(path)}` needs {required_args} argument(s)"


# The dataclass each command's --set overrides apply to (t2l_ray.config: dotted keys, unknown keys refused).
OVERRIDE_TARGETS = {
    "train": "t2l_ray.train.config:TrainConfig",
    "batch-generate": "t2l_ray.factory:FactoryConfig",
    "train-lora": "t2l_ray.train.baselines:BaselineRecipe",
}


@pytest.mark.parametrize("item", [c for c in unique_commands() if "--set" in shlex.split(c[1])], ids=command_id)
def test_set_overrides_fit_the_config(item):
    import importlib

    from t2l_ray.config import load_config

    where, line = item
    words = shlex.split(line)
    target = OVERRIDE_TARGETS.get(words[1])
    if target is None:
        pytest.fail(f"{where}: add the config class of `t2l-ray {words[1]}` to OVERRIDE_TARGETS to check its --set")
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    overrides = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    load_config(cls, None, overrides)


def referenced_files() -> list[tuple[str, str]]:
    """(where, path) for every --config value and every jobs/... file an entrypoint names, one per path."""
    places: dict[str, set[str]] = {}
    for where, line in T2L_COMMANDS:
        words = shlex.split(line)
        for i, word in enumerate(words):
            path = None
            if word == "--config" and i + 1 < len(words):
                path = words[i + 1]
            elif word.startswith("--config="):
                path = word.split("=", 1)[1]
            elif re.fullmatch(r"jobs/[\w./-]+\.(yaml|yml|jsonl|json)", word):
                path = word
            if path:
                places.setdefault(path, set()).add(where)
    return [("; ".join(sorted(wheres)), path) for path, wheres in sorted(places.items())]


@pytest.mark.parametrize("item", referenced_files(), ids=lambda item: item[1])
def test_referenced_recipe_exists(item):
    where, path = item
    assert not Path(path).is_absolute(), f"{where}: {path} should be relative to the repository root"
    assert (ROOT / path).is_file(), f"{path} is not in the repository; named by: {where}"


def test_config_references_are_found():
    configs = {path for _, path in referenced_files()}
    assert "jobs/mistral7b_sft.yaml" in configs and "jobs/eval.yaml" in configs, configs


# ---------------------------------------------------------------- Ray cluster launcher configs


@pytest.fixture(scope="module")
def ray_schema():
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert path.is_file(), f"no autoscaler schema at {path}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_matches_rays_schema(name, ray_schema):
    config = load_yaml(name)
    validator = jsonschema.Draft7Validator(ray_schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
    assert not errors, "\n".join(errors)


def test_schema_rejects_a_broken_config(ray_schema):
    """The schema check above can fail: a misspelled key and a fractional resource are both refused."""
    config = load_yaml(LAUNCHERS[0])
    config["idle_timeout_minute"] = 5
    config["available_node_types"]["gen_l4_spot"]["resources"]["GPU"] = 0.5
    errors = list(jsonschema.Draft7Validator(ray_schema).iter_errors(config))
    assert len(errors) >= 2


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_rays_own_preparation(name):
    """What `ray up` does before touching the cloud: merge with the provider defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load_yaml(name)))
    validate_config(prepared)
    assert set(prepared["available_node_types"]) == set(load_yaml(name)["available_node_types"])


def is_spot(provider: str, node_config: dict) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    return scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_node_types(name):
    config = load_yaml(name)
    provider = config["provider"]["type"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    assert not head["node_config"].get("guestAccelerators")
    assert 0 < config["idle_timeout_minutes"] <= 60
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker types"
    advertised = set()
    for key, node in gpu_types.items():
        assert node.get("min_workers", 0) == 0, f"{key}: GPU workers scale from zero"
        assert node["max_workers"] >= 1 and node["max_workers"] <= config["max_workers"], key
        custom = {r: n for r, n in node["resources"].items() if r in STEERING}
        assert len(custom) == 1, f"{key}: advertise exactly one of {sorted(STEERING)}, got {custom}"
        assert list(custom.values()) == [node["resources"]["GPU"]], f"{key}: one steering unit per GPU"
        advertised |= set(custom)
        if provider == "aws":
            profile = node["node_config"].get("IamInstanceProfile", {})
            assert profile.get("Name") == "ray-autoscaler-v1" or profile.get("Arn"), f"{key}: no bucket access"
        if provider == "gcp":
            accounts = node["node_config"].get("serviceAccounts") or []
            scopes = {scope for account in accounts for scope in account.get("scopes", [])}
            assert scopes & {"https://www.googleapis.com/auth/cloud-platform",
                             "https://www.googleapis.com/auth/devstorage.read_write"}, f"{key}: no bucket access"
            scheduling = node["node_config"].get("scheduling")
            assert isinstance(scheduling, dict), f"{key}: scheduling is an object in the Compute API"
            assert scheduling.get("onHostMaintenance") == "TERMINATE", f"{key}: GPU VMs cannot live-migrate"
    assert advertised == STEERING, advertised
    by_role = {role: {k for k, v in gpu_types.items() if role in v["resources"]} for role in STEERING}
    assert any(is_spot(provider, gpu_types[k]["node_config"]) for k in by_role["train_gpu"]), "no spot training type"
    assert any(not is_spot(provider, gpu_types[k]["node_config"]) for k in by_role["train_gpu"]), "no on-demand training"
    assert any(is_spot(provider, gpu_types[k]["node_config"]) for k in by_role["gen_gpu"]), "no spot generation type"
    train_gpus = max(gpu_types[k]["resources"]["GPU"] for k in by_role["train_gpu"])
    assert train_gpus >= 4 and all(gpu_types[k]["resources"]["GPU"] == 1 for k in by_role["gen_gpu"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_installs_t2l_ray(name):
    config = load_yaml(name)
    assert config["docker"]["image"] == ray_image(), "the image must carry the pinned Ray and Python 3.11"
    mounts = config["file_mounts"]
    for remote, local in mounts.items():
        if not local.startswith("~"):
            assert (ROOT / local).exists(), f"file_mounts {remote}: {local} does not exist"
    checkout = [remote for remote, local in mounts.items() if local in (".", "./")]
    assert len(checkout) == 1, "mount the repository root once"
    remote = checkout[0].rstrip("/")
    commands = config["setup_commands"]
    torch = [i for i, c in enumerate(commands) if re.search(rf"pip install .*\btorch=={re.escape(pins()['torch'])}\b", c)]
    package = [i for i, c in enumerate(commands) if f"-c {remote}/requirements/constraints.txt {remote}" in c]
    assert torch and package, commands
    assert torch[0] < package[0], "torch must be installed before t2l-ray"
    assert not re.search(r"\b(deepspeed|peft)\b", commands[torch[0]]), "torch goes in alone"
    for excluded in (".venv", "**/.git"):
        assert excluded in config["rsync_exclude"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_header_has_the_commands(name):
    lines = comment_commands(ROOT / name)
    assert any(re.fullmatch(rf"ray up -y {re.escape(name)}", line) for line in lines), lines
    assert any(re.fullmatch(rf"ray down -y {re.escape(name)}", line) for line in lines), lines
    assert any(line.startswith("ray job submit --address http://127.0.0.1:8265 ") for line in lines), lines
    if load_yaml(name)["provider"]["type"] == "aws":
        # Workers launch with the head's instance profile only if the head may pass its role on.
        assert any(line.startswith("aws iam put-role-policy --role-name ray-autoscaler-v1 ") and "iam:PassRole" in line
                   for line in lines), lines


# ---------------------------------------------------------------- KubeRay manifests


def cluster_specs() -> list[tuple[str, dict]]:
    out = []
    for path, doc in kuberay_docs():
        spec = doc.get("spec", {})
        inner = {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}
        out.append((f"{rel(path)}:{doc.get('kind')}", inner.get(doc.get("kind"))))
    return out


def containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def custom_resources(params: dict) -> dict:
    """KubeRay's format: rayStartParams.resources: '"{\\"train_gpu\\": 8}"' (a JSON string inside quotes)."""
    raw = params.get("resources")
    if raw is None:
        return {}
    value = json.loads(raw)
    return json.loads(value) if isinstance(value, str) else value


def test_kuberay_manifests_are_ray_io_v1():
    docs = kuberay_docs()
    kinds = {doc.get("kind") for _, doc in docs}
    assert {"RayCluster", "RayJob", "RayService"} <= kinds, kinds
    for path, doc in docs:
        assert doc.get("apiVersion") == "ray.io/v1", f"{rel(path)}: {doc.get('apiVersion')}"
        assert doc.get("metadata", {}).get("name") or doc.get("metadata", {}).get("generateName"), rel(path)
    assert (KUBERAY_DIR / "rayjob-train.yaml").is_file() and (KUBERAY_DIR / "rayservice.yaml").is_file()


@pytest.mark.parametrize("item", cluster_specs(), ids=lambda item: item[0])
def test_kuberay_cluster_spec(item):
    where, spec = item
    assert isinstance(spec, dict), f"{where}: no cluster spec"
    assert spec.get("rayVersion") == pins()["ray"], f"{where}: rayVersion must match the pinned ray"
    assert spec.get("enableInTreeAutoscaling") is True, f"{where}: autoscaling is off"
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: head rayStartParams"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams values are strings"
    for container in containers(head["template"]):
        assert container.get("image") == t2l_image(), f"{where}: head image {container.get('image')}"
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {}), f"{where}: CPU head"
    groups = spec.get("workerGroupSpecs") or []
    assert groups, f"{where}: no worker groups"
    names = [g.get("groupName") for g in groups]
    assert all(names) and len(set(names)) == len(names), f"{where}: group names {names}"
    gpu_groups = 0
    for group in groups:
        label = f"{where}/{group.get('groupName')}"
        assert isinstance(group.get("rayStartParams"), dict), f"{label}: rayStartParams is required"
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), f"{label}: rayStartParams values are strings"
        low, n, high = group.get("minReplicas"), group.get("replicas"), group.get("maxReplicas")
        assert all(isinstance(x, int) for x in (low, n, high)), f"{label}: replica counts"
        assert 0 <= low <= n <= high and high >= 1, f"{label}: minReplicas {low} <= replicas {n} <= maxReplicas {high}"
        custom = custom_resources(group["rayStartParams"])
        steering = {k: v for k, v in custom.items() if k in STEERING}
        for container in containers(group["template"]):
            assert container.get("image") == t2l_image(), f"{label}: image {container.get('image')}"
            limits = container.get("resources", {}).get("limits", {})
            requests = container.get("resources", {}).get("requests", {})
            assert "cpu" in limits and "memory" in limits, f"{label}: set cpu and memory limits"
            gpus = int(limits.get("nvidia.com/gpu", 0))
            if gpus or steering:
                gpu_groups += 1
                assert gpus >= 1, f"{label}: a GPU group needs nvidia.com/gpu in its limits"
                assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"], label
                assert list(steering.values()) == [gpus], f"{label}: advertise one steering resource per GPU, got {custom}"
                tolerations = group["template"]["spec"].get("tolerations", [])
                assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{label}: tolerate the GPU taint"
    assert gpu_groups, f"{where}: no GPU worker group"


def test_kuberay_custom_resource_format_is_parsed():
    assert custom_resources({"resources": '"{\\"train_gpu\\": 8}"'}) == {"train_gpu": 8}


def test_kuberay_rayjobs():
    jobs = [(path, doc) for path, doc in kuberay_docs() if doc.get("kind") == "RayJob"]
    assert any(doc["spec"]["entrypoint"].startswith("t2l-ray train ") for _, doc in jobs)
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    from ray.runtime_env import RuntimeEnv

    for path, doc in jobs:
        spec = doc["spec"]
        assert spec.get("shutdownAfterJobFinishes") is True, f"{rel(path)}: the job cluster must go away"
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert env.pop("working_dir") == workdir, f"{rel(path)}: working_dir is the repository copy in the image"
        RuntimeEnv(**env)


def test_rayservice_deploys_the_serve_app():
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    (doc,) = [doc for _, doc in kuberay_docs() if doc.get("kind") == "RayService"]
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    validate = getattr(ServeDeploySchema, "model_validate", None) or ServeDeploySchema.parse_obj
    validate(config)
    fields = set(getattr(ServeApplicationSchema, "model_fields", None) or ServeApplicationSchema.__fields__)
    (app,) = config["applications"]
    assert set(app) <= fields, f"unknown Serve application keys {set(app) - fields}"
    assert app["import_path"] == "t2l_ray.serve:build_app"
    assert set(app["args"]) == {"checkpoint", "out"}


def test_rayservice_replicas_ask_for_a_gpu_the_cluster_advertises():
    (doc,) = [doc for _, doc in kuberay_docs() if doc.get("kind") == "RayService"]
    (app,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    (deployment,) = [d for d in app.get("deployments", []) if d["name"] == "AdapterService"]
    options = deployment["ray_actor_options"]
    assert options["num_gpus"] >= 1
    groups = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    advertised = {name for g in groups for name in custom_resources(g["rayStartParams"])}
    assert options.get("resources") and set(options["resources"]) <= advertised, (options.get("resources"), advertised)


def test_serve_app_builder_exists():
    import importlib

    module = importlib.import_module("t2l_ray.serve")
    assert callable(getattr(module, "build_app", None)), "t2l_ray.serve has no build_app"


def test_rayservice_matches_jobs_serve_yaml():
    path = ROOT / "jobs" / "serve.yaml"
    assert path.is_file(), "jobs/serve.yaml (the Serve config for `serve run` / `serve deploy`) is missing"
    ours = yaml.safe_load([doc for _, doc in kuberay_docs() if doc.get("kind") == "RayService"][0]["spec"]["serveConfigV2"])
    theirs = yaml.safe_load(path.read_text())
    assert [a["import_path"] for a in theirs["applications"]] == [a["import_path"] for a in ours["applications"]]
    assert [set(a.get("args", {})) for a in theirs["applications"]] == [set(a["args"]) for a in ours["applications"]]


def test_image_is_built_from_the_pinned_ray():
    text = DOCKERFILE.read_text()
    assert re.search(rf"^FROM {re.escape(ray_image())}$", text, re.M), f"Dockerfile must start FROM {ray_image()}"
    assert f"docker build -f cluster/Dockerfile -t {t2l_image()} ." in comment_commands(DOCKERFILE)
    assert f"torch=={pins()['torch']}" in text and "-c requirements/constraints.txt ." in text
    assert (ROOT / "cluster" / "Dockerfile.dockerignore").is_file()


# ---------------------------------------------------------------- job specs and runtime envs


@pytest.mark.parametrize("path", RUNTIME_ENVS, ids=rel)
def test_runtime_env_is_valid(path, monkeypatch):
    from ray.runtime_env import RuntimeEnv

    env = load_yaml(path)
    monkeypatch.chdir(ROOT)
    RuntimeEnv(**env)
    assert env["working_dir"] == "."
    assert {".venv/", ".git/"} <= set(env["excludes"])
    assert comment_commands(path)[0].startswith(("ray job submit", ". .venv/bin/activate"))
    cpu = path.name == "runtime_env_cpu.yaml"
    assert (env["env_vars"].get("DS_ACCELERATOR") == "cpu") == cpu, "DS_ACCELERATOR=cpu only for CPU clusters"


def test_runtime_envs_exist():
    assert {p.name for p in RUNTIME_ENVS} >= {"runtime_env.yaml", "runtime_env_cpu.yaml"}


def test_specs_cover_the_jobs():
    commands = {shlex.split(load_yaml(p)["entrypoint"])[1] for p in SPECS}
    assert {"train", "train-lora", "batch-generate", "eval"} <= commands, commands


def submit_line(path: Path) -> list[str]:
    lines = [line for line in comment_commands(path) if line.startswith(("ray job submit", ".venv/bin/ray job submit"))]
    assert len(lines) == 1, f"{rel(path)}: one `ray job submit` line in the header, found {lines}"
    return shlex.split(lines[0])


@pytest.mark.parametrize("path", SPECS, ids=rel)
def test_spec_equals_its_header_command(path):
    from ray.job_submission import JobSubmissionClient

    spec = load_yaml(path)
    allowed = set(inspect.signature(JobSubmissionClient.submit_job).parameters) - {"self"}
    assert set(spec) <= allowed, f"not submit_job arguments: {set(spec) - allowed}"
    words = submit_line(path)
    split = words.index("--")
    options, entrypoint = words[:split], words[split + 1 :]
    assert shlex.split(spec["entrypoint"]) == entrypoint, "the header's entrypoint differs from the spec's"
    env_file = options[options.index("--runtime-env") + 1]
    assert load_yaml(env_file) == spec["runtime_env"], f"runtime_env differs from {env_file}"
    assert options[options.index("--address") + 1] == "http://127.0.0.1:8265"
    assert any(line.endswith(f" {rel(path)}") and "submit_job(**yaml.safe_load" in line for line in comment_commands(path))


def entrypoints() -> list[str]:
    return [cmd for _, cmd in T2L_COMMANDS]


def test_one_bucket_everywhere():
    files = [ROOT / p for p in LAUNCHERS] + sorted(KUBERAY_DIR.glob("*.yaml")) + RUNTIME_ENVS + SPECS
    uris = {(rel(f), m) for f in files for m in re.findall(r"\b(?:s3|gs)://[A-Za-z0-9][^/\s'\"]*", f.read_text())}
    assert uris, "no bucket URIs found"
    wrong = sorted(item for item in uris if item[1].split("://", 1)[1] != BUCKET)
    assert not wrong, f"use the one example bucket {BUCKET}: {wrong}"


def test_generation_loads_a_trained_hypernet():
    """Every --checkpoint (and the RayService's) is the hypernet/ export of a train run some spec launches."""

    def option(words, name):
        return [words[i + 1] for i, w in enumerate(words[:-1]) if w == name]

    def strip_scheme(uri):
        return uri.split("://", 1)[-1]

    train_outputs = set()
    for cmd in entrypoints():
        words = shlex.split(cmd)
        if words[1] == "train":
            train_outputs |= {strip_scheme(u.rstrip("/")) + "/hypernet" for u in option(words, "--output-dir")}
    checkpoints = [c for cmd in entrypoints() for c in option(shlex.split(cmd), "--checkpoint")]
    service = [doc for _, doc in kuberay_docs() if doc.get("kind") == "RayService"][0]
    checkpoints += [a["args"]["checkpoint"] for a in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]]
    assert checkpoints
    for uri in checkpoints:
        assert strip_scheme(uri.rstrip("/")) in train_outputs, f"{uri} is not the hypernet/ of any train run"


ASKED_RESOURCE = re.compile(r"(?:\brun\.resources_per_worker|\bresources)\.(\w+)=")  # train and batch-generate


def test_custom_resources_asked_for_are_advertised():
    asked = {m for cmd in entrypoints() for m in ASKED_RESOURCE.findall(cmd)}
    assert asked == {"train_gpu", "gen_gpu"}, asked
    for name in LAUNCHERS:
        offered = {r for node in load_yaml(name)["available_node_types"].values() for r in node["resources"]}
        assert asked <= offered, f"{name} advertises no {asked - offered}"
    (_, raycluster), = [item for item in cluster_specs() if item[0].startswith("cluster/kuberay/raycluster.yaml")]
    offered = {r for g in raycluster["workerGroupSpecs"] for r in custom_resources(g["rayStartParams"])}
    assert asked <= offered, f"cluster/kuberay/raycluster.yaml advertises no {asked - offered}"
    for path, doc in kuberay_docs():  # a RayJob's own cluster offers what its entrypoint asks for
        if doc.get("kind") == "RayJob":
            wanted = set(ASKED_RESOURCE.findall(doc["spec"]["entrypoint"]))
            groups = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
            offered = {r for g in groups for r in custom_resources(g["rayStartParams"])}
            assert wanted and wanted <= offered, f"{rel(path)} asks for {wanted}, its workers offer {offered}"


# ---------------------------------------------------------------- example descriptions


def test_example_descriptions_are_valid():
    lines = DESCRIPTIONS.read_text().splitlines()
    assert len(lines) >= 15
    ids, texts = set(), set()
    for number, line in enumerate(lines, 1):
        row = json.loads(line)
        assert isinstance(row, dict) and set(row) <= {"id", "description", "metadata"}, f"line {number}: {row}"
        assert isinstance(row.get("id"), str) and ADAPTER_ID.fullmatch(row["id"]), f"line {number}: id {row.get('id')!r}"
        assert isinstance(row.get("description"), str) and row["description"].strip(), f"line {number}: description"
        assert len(row["description"]) <= 1000, f"line {number}: description too long"
        assert isinstance(row.get("metadata", {}), dict), f"line {number}: metadata must be an object"
        assert row["id"] not in ids and row["description"] not in texts, f"line {number}: duplicate"
        ids.add(row["id"])
        texts.add(row["description"])


def test_adapter_id_rule_is_the_contract():
    assert ADAPTER_ID.fullmatch("sentiment-product-reviews") and ADAPTER_ID.fullmatch("a" * 128)
    for bad in ("", "-x", "A", "a/b", "a:b", "..", "a" * 129):
        assert not ADAPTER_ID.fullmatch(bad), bad
