#!/usr/bin/env python3
"""What the schemas cannot see in the rendered Kubernetes manifests (scripts/check-kubernetes, step 3).

Reads the directory scripts/render-kubernetes wrote (one YAML file per overlay) and checks:
- the custom resources' required fields (KEDA ScaledObject, ServiceMonitor, PrometheusRule,
  HTTPRoute), as their CRDs define them, and that what they name exists in the same render;
- the shutdown arithmetic (grace >= preStop + DRAIN_TIMEOUT_SECS + 10), the probes, the rollout;
- the hardening every pod must have, and that secrets come only from Secrets;
- that the manifests agree with the Dockerfile (user, port, stop signal, health check), with
  deploy/prometheus/alerts.yml (the PrometheusRule), deploy/nginx (the template) and deploy/grafana
  (the dashboard), and the two autoscalers with each other.
Prints each problem and exits 1 if there is any. Usage: check_kubernetes.py RENDERED_DIR
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET_VARS = {"TWILIO_AUTH_TOKEN", "REDIS_URL", "BRIDGE_HEADERS", "API_TOKEN", "TWILIO_API_KEY_SECRET"}
# GEP-2257, the Gateway API's duration format.
GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def get(obj, *path, default=None):
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def require(where, obj, *path, kind=None):
    """Fails unless obj has a non-empty value at path (of `kind`, when given); returns it."""
    value = get(obj, *path)
    name = ".".join(str(p) for p in path)
    if value is None or value == "" or value == [] or value == {}:
        problem(where, f"required field {name} is missing")
    elif kind is not None and not isinstance(value, kind):
        problem(where, f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def gateway_seconds(duration):
    total = 0.0
    for number, unit in re.findall(r"([0-9]+)(h|ms|m|s)", duration):
        total += int(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


class Render:
    def __init__(self, path):
        self.name = path.stem
        self.objects = [o for o in yaml.safe_load_all(path.read_text()) if o]

    def of(self, kind):
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind, name):
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def where(self, obj):
        return f"{self.name}: {obj['kind']}/{obj['metadata']['name']}"


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# ---- custom resources: the fields their CRDs require, and references that must resolve

def check_scaled_object(render, obj):
    where = render.where(obj)
    if obj.get("apiVersion") != "keda.sh/v1alpha1":
        problem(where, f"apiVersion {obj.get('apiVersion')}, expected keda.sh/v1alpha1")
    target = require(where, obj, "spec", "scaleTargetRef", "name", kind=str)
    if target and render.one("Deployment", target) is None:
        problem(where, f"scaleTargetRef names Deployment {target}, not in this render")
    triggers = require(where, obj, "spec", "triggers", kind=list) or []
    for i, trigger in enumerate(triggers):
        require(where, trigger, "type", kind=str)
        metadata = require(where, trigger, "metadata", kind=dict) or {}
        for key, value in metadata.items():
            if not isinstance(value, str):
                problem(where, f"triggers[{i}].metadata.{key} must be a string (KEDA reads strings)")
        if trigger.get("type") == "prometheus":
            for key in ("serverAddress", "query", "threshold"):
                require(where, trigger, "metadata", key, kind=str)
            try:
                float(metadata.get("threshold", ""))
            except ValueError:
                problem(where, f"triggers[{i}].metadata.threshold is not a number")
        if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value", "Utilization"):
            problem(where, f"triggers[{i}].metricType {trigger.get('metricType')} is not a KEDA metric type")
    low = get(obj, "spec", "minReplicaCount", default=0)
    high = get(obj, "spec", "maxReplicaCount", default=100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
        problem(where, f"minReplicaCount {low} / maxReplicaCount {high}")


def check_service_monitor(render, obj):
    where = render.where(obj)
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(where, f"apiVersion {obj.get('apiVersion')}, expected monitoring.coreos.com/v1")
    selector = require(where, obj, "spec", "selector", "matchLabels", kind=dict) or {}
    endpoints = require(where, obj, "spec", "endpoints", kind=list) or []
    services = [s for s in render.of("Service") if labels_match(selector, s["metadata"].get("labels", {}))]
    if len(services) != 1:
        names = [s["metadata"]["name"] for s in services]
        problem(where, f"its selector must match exactly the replicas' Service, matches {names}")
        return
    ports = {p.get("name") for p in services[0]["spec"]["ports"]}
    for i, endpoint in enumerate(endpoints):
        if endpoint.get("port") not in ports:
            problem(where, f"endpoints[{i}].port {endpoint.get('port')} is not a port of the Service ({ports})")


def check_prometheus_rule(render, obj):
    where = render.where(obj)
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(where, f"apiVersion {obj.get('apiVersion')}, expected monitoring.coreos.com/v1")
    groups = require(where, obj, "spec", "groups", kind=list) or []
    for group in groups:
        require(where, group, "name", kind=str)
        for rule in require(where, group, "rules", kind=list) or []:
            require(where, rule, "expr")
            if ("alert" in rule) == ("record" in rule):
                problem(where, f"rule {rule.get('alert') or rule.get('record')} needs exactly one of alert, record")
    source = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    if groups != source["groups"]:
        problem(where, "its groups are not deploy/prometheus/alerts.yml's (scripts/check-kubernetes --write)")


def check_http_route(render, obj):
    where = render.where(obj)
    if obj.get("apiVersion") != "gateway.networking.k8s.io/v1":
        problem(where, f"apiVersion {obj.get('apiVersion')}, expected gateway.networking.k8s.io/v1")
    for ref in require(where, obj, "spec", "parentRefs", kind=list) or []:
        require(where, ref, "name", kind=str)
    paths = set()
    for i, rule in enumerate(require(where, obj, "spec", "rules", kind=list) or []):
        for match in rule.get("matches", []):
            paths.add(get(match, "path", "value"))
        for ref in require(where, rule, "backendRefs", kind=list) or []:
            name = require(where, ref, "name", kind=str)
            port = require(where, ref, "port", kind=int)
            service = render.one("Service", name)
            if service is None:
                problem(where, f"rules[{i}] sends to Service {name}, not in this render")
            elif port not in [p["port"] for p in service["spec"]["ports"]]:
                problem(where, f"rules[{i}] sends to port {port}, which Service {name} does not have")
        timeouts = rule.get("timeouts", {})
        for key, value in timeouts.items():
            if not GATEWAY_DURATION.match(str(value)):
                problem(where, f"rules[{i}].timeouts.{key} {value!r} is not a Gateway API duration")
        request, backend = timeouts.get("request"), timeouts.get("backendRequest")
        if request and backend and gateway_seconds(request) != 0:
            if gateway_seconds(backend) == 0 or gateway_seconds(backend) > gateway_seconds(request):
                problem(where, f"rules[{i}].timeouts.backendRequest must not exceed request")
        if any(get(m, "path", "value") == "/twilio/stream" for m in rule.get("matches", [])):
            if gateway_seconds(str(timeouts.get("request", "1s"))) != 0:
                problem(where, "the stream rule's request timeout would cap a call's length: set it to 0s")
    if "/twilio/stream" not in paths or "/twilio/" not in paths:
        problem(where, f"routes {sorted(paths)}; /twilio/stream and /twilio/ are both needed")


# ---- the replicas' Deployment: shutdown, probes, rollout

def calls_deployment(render):
    return render.one("Deployment", "prosaas-calls")


def container(deployment, name="calls"):
    for c in get(deployment, "spec", "template", "spec", "containers", default=[]):
        if c["name"] == name:
            return c
    return None


def env_value(c, name):
    for entry in c.get("env", []):
        if entry["name"] == name:
            return entry.get("value")
    return None


def pre_stop_seconds(c):
    pre_stop = get(c, "lifecycle", "preStop", default={})
    if "sleep" in pre_stop:
        return pre_stop["sleep"]["seconds"]
    command = get(pre_stop, "exec", "command", default=[])
    if len(command) == 2 and command[0].endswith("sleep"):
        return int(command[1])
    return None


def check_shutdown(render):
    deployment = calls_deployment(render)
    where = f"{render.name}: Deployment/prosaas-calls"
    c = container(deployment)
    grace = get(deployment, "spec", "template", "spec", "terminationGracePeriodSeconds")
    pre_stop = pre_stop_seconds(c)
    drain = env_value(c, "DRAIN_TIMEOUT_SECS")
    if grace is None or pre_stop is None or drain is None:
        problem(where, f"needs terminationGracePeriodSeconds ({grace}), a preStop sleep ({pre_stop}) "
                       f"and DRAIN_TIMEOUT_SECS in its env ({drain})")
        return None
    drain = float(drain)
    if grace < pre_stop + drain + 10:
        problem(where, f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + "
                       f"DRAIN_TIMEOUT_SECS {drain:g} + 10: a drain could be killed")
    if pre_stop < 5:
        problem(where, f"preStop {pre_stop} s is shorter than endpoints take to propagate")
    # The cluster autoscaler waits at most 10 minutes for a pod on a node it removes.
    if grace > 600:
        problem(where, f"terminationGracePeriodSeconds {grace} is over the cluster autoscaler's 10 minutes")
    probes = {k: get(c, k, "httpGet", "path") for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    if probes != {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        problem(where, f"probes {probes}: liveness and startup on /healthz (never Redis), readiness on /readyz")
    rolling = get(deployment, "spec", "strategy", "rollingUpdate", default={})
    if rolling.get("maxUnavailable") != 0 or not rolling.get("maxSurge"):
        problem(where, f"rollingUpdate {rolling}: maxUnavailable 0 and a surge, so capacity never dips")
    return grace


def check_autoscalers(render, grace):
    for obj in render.of("ScaledObject") + render.of("HorizontalPodAutoscaler"):
        where = render.where(obj)
        behavior = (get(obj, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior")
                    or get(obj, "spec", "behavior") or {})
        down = behavior.get("scaleDown", {})
        policies = down.get("policies", [])
        if not policies or any(p["type"] != "Pods" or p["value"] != 1 for p in policies):
            problem(where, f"scale-down policies {policies}: one pod at a time")
        elif grace is not None and min(p["periodSeconds"] for p in policies) < grace:
            problem(where, "a scale-down period shorter than the grace period lets two drains overlap")
        if get(obj, "spec", "minReplicaCount", default=get(obj, "spec", "minReplicas", default=1)) < 2:
            problem(where, "fewer than 2 replicas")
    for obj in render.of("ScaledObject"):
        where = render.where(obj)
        for trigger in get(obj, "spec", "triggers", default=[]):
            if trigger.get("type") != "prometheus":
                continue
            query = trigger["metadata"]["query"]
            if not re.match(r"^\s*max\(\s*calls_cluster_active\b", query):
                problem(where, f"query {query!r}: the cluster's live calls are max(calls_cluster_active) "
                               "(every replica exports the same figure; sum would count it per replica)")
            namespace = obj["metadata"].get("namespace")
            if namespace and f'namespace="{namespace}"' not in query:
                problem(where, f"query {query!r} does not select this installation's namespace {namespace}")
            if 'job="prosaas-calls"' not in query:
                problem(where, f"query {query!r} does not select job=\"prosaas-calls\" (the Service's name)")


def same_autoscaling(keda_render, hpa_render):
    keda = keda_render.of("ScaledObject")[0]
    hpa = hpa_render.of("HorizontalPodAutoscaler")[0]
    where = f"{hpa_render.name}: HorizontalPodAutoscaler/prosaas-calls"
    pairs = [
        (get(keda, "spec", "minReplicaCount"), get(hpa, "spec", "minReplicas"), "minimum"),
        (get(keda, "spec", "maxReplicaCount"), get(hpa, "spec", "maxReplicas"), "maximum"),
        (get(keda, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"),
         get(hpa, "spec", "behavior"), "behavior"),
        (float(keda["spec"]["triggers"][0]["metadata"]["threshold"]),
         float(get(hpa, "spec", "metrics", 0, "external", "target", "averageValue")), "calls per replica"),
    ]
    for theirs, ours, what in pairs:
        if theirs != ours:
            problem(where, f"its {what} ({ours}) differs from the KEDA ScaledObject's ({theirs})")


# ---- hardening and secrets

def pod_templates(render):
    for obj in render.of("Deployment") + render.of("StatefulSet"):
        yield obj, get(obj, "spec", "template", "spec")


def check_hardening(render):
    for obj, pod in pod_templates(render):
        where = render.where(obj)
        security = pod.get("securityContext", {})
        if security.get("runAsNonRoot") is not True:
            problem(where, "pod securityContext.runAsNonRoot must be true")
        if get(security, "seccompProfile", "type") != "RuntimeDefault":
            problem(where, "pod seccompProfile must be RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problem(where, "automountServiceAccountToken must be false (no pod talks to the API)")
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            wanted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False}
            for key, value in wanted.items():
                if sc.get(key) is not value:
                    problem(cw, f"securityContext.{key} must be {value}")
            if get(sc, "capabilities", "drop") != ["ALL"]:
                problem(cw, "securityContext.capabilities.drop must be [ALL]")
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if get(c, "resources", part, resource) is None:
                        problem(cw, f"resources.{part}.{resource} is missing")
            for entry in c.get("env", []):
                if entry["name"] in SECRET_VARS and "value" in entry:
                    problem(cw, f"{entry['name']} is a literal; secrets come from a Secret")


def check_secrets(render):
    for cm in render.of("ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            if key in SECRET_VARS and value:
                # A Redis without a password (the try-it-out overlay's in-cluster one) is no secret.
                if key == "REDIS_URL" and "@" not in value:
                    continue
                problem(render.where(cm), f"{key} holds a secret: move it to the Secret")
    if render.name == "production":
        secrets = [s for s in render.of("Secret") if s["metadata"]["name"].startswith("prosaas-calls-secrets")]
        if not secrets:
            problem("production", "no prosaas-calls-secrets Secret")
        else:
            keys = set((secrets[0].get("data") or {}).keys())
            missing = {"TWILIO_AUTH_TOKEN", "REDIS_URL", "API_TOKEN"} - keys
            if missing:
                problem("production: Secret", f"the template has no slot for {sorted(missing)}")
        if any("REDIS_URL" in (cm.get("data") or {}) for cm in render.of("ConfigMap")):
            problem("production: ConfigMap", "REDIS_URL belongs in the Secret in production")


def check_availability(render):
    if render.name != "production":
        return
    deployment = calls_deployment(render)
    spread = get(deployment, "spec", "template", "spec", "topologySpreadConstraints", default=[])
    hard = {t["topologyKey"] for t in spread if t.get("whenUnsatisfiable") == "DoNotSchedule"}
    if hard != {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}:
        problem("production: Deployment/prosaas-calls", f"hard spreading over {hard}; zones and nodes needed")
    labels = get(deployment, "spec", "template", "metadata", "labels")
    if not any(labels_match(get(p, "spec", "selector", "matchLabels"), labels) for p in render.of("PodDisruptionBudget")):
        problem("production", "no PodDisruptionBudget selects the replicas")
    if not render.of("ScaledObject"):
        problem("production", "no autoscaling on live calls")


# ---- agreement with the Dockerfile, deploy/nginx and deploy/grafana

def runtime_stage(dockerfile):
    stages = re.split(r"(?m)^FROM ", dockerfile)
    return stages[-1]


def check_dockerfile(render):
    stage = runtime_stage((ROOT / "Dockerfile").read_text())
    deployment = calls_deployment(render)
    where = f"{render.name}: Deployment/prosaas-calls vs Dockerfile"
    c = container(deployment)
    user = re.search(r"(?m)^USER (\d+):(\d+)\s*$", stage)
    if not user:
        problem("Dockerfile", "the runtime stage needs a numeric USER uid:gid (runAsNonRoot can only check a number)")
    else:
        uid, gid = int(user.group(1)), int(user.group(2))
        for scope, sc in (("pod", get(deployment, "spec", "template", "spec", "securityContext")),
                          ("container", c.get("securityContext"))):
            if (sc.get("runAsUser"), sc.get("runAsGroup")) != (uid, gid):
                problem(where, f"{scope} runs as {sc.get('runAsUser')}:{sc.get('runAsGroup')}, the image as {uid}:{gid}")
    exposed = re.search(r"(?m)^EXPOSE (\d+)", stage)
    port_env = re.search(r"(?m)^ENV PORT=(\d+)", stage)
    container_port = get(c, "ports", 0, "containerPort")
    for what, value in (("EXPOSE", exposed and int(exposed.group(1))),
                        ("ENV PORT", port_env and int(port_env.group(1))),
                        ("the Deployment's PORT", int(env_value(c, "PORT") or 0))):
        if value != container_port:
            problem(where, f"{what} is {value}, the containerPort {container_port}")
    signal = re.search(r"(?m)^STOPSIGNAL (\S+)", stage)
    # The runtime stops a container with the image's STOPSIGNAL: it must be the one that drains.
    if not signal or signal.group(1) != "SIGTERM":
        problem("Dockerfile", "STOPSIGNAL must be SIGTERM: the replica drains on SIGTERM")
    health = re.search(r"(?ms)^HEALTHCHECK .*?CMD (.*?)(?:\n\n|\Z)", stage)
    if not health or get(c, "livenessProbe", "httpGet", "path") not in health.group(1):
        problem(where, "the image's HEALTHCHECK and the liveness probe must ask the same path")
    entry = re.search(r'(?m)^ENTRYPOINT \["([^"]+)"', stage)
    if not entry or c.get("command") or c.get("args"):
        problem(where, "the container must run the image's ENTRYPOINT as PID 1 (no command, no args)")


def check_dockerfile_workspace():
    """The builder's stub layer must know every workspace member and every target a manifest names,
    or `cargo build --locked` fails inside `docker build` (nobody can build the image here)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    cargo = (ROOT / "Cargo.toml").read_text()
    members = re.search(r"(?m)^members = \[(.*)\]", cargo).group(1)
    for member in re.findall(r'"([^"]+)"', members):
        if member != "." and f"COPY {member}/Cargo.toml" not in dockerfile:
            problem("Dockerfile", f"the stub layer does not COPY {member}/Cargo.toml")
    for manifest in [ROOT / "Cargo.toml", *sorted(ROOT.glob("crates/*/Cargo.toml"))]:
        crate = manifest.parent.relative_to(ROOT)
        text = manifest.read_text()
        for kind, folder in (("bench", "benches"), ("test", "tests"), ("bin", "src/bin")):
            for block in re.findall(rf"(?ms)^\[\[{kind}\]\]\n(.*?)(?=^\[|\Z)", text):
                name = re.search(r'(?m)^name = "([^"]+)"', block).group(1)
                path = re.search(r'(?m)^path = "([^"]+)"', block)
                path = path.group(1) if path else f"{folder}/{name}.rs"
                stub = path if str(crate) == "." else f"{crate}/{path}"
                if stub not in dockerfile:
                    problem("Dockerfile", f"the stub layer has no {stub} ({kind} {name} of {manifest.relative_to(ROOT)})")


def check_nginx(render):
    template_path = ROOT / "deploy/nginx/templates/default.conf.template"
    template = template_path.read_text()
    maps = [cm for cm in render.of("ConfigMap") if cm["metadata"]["name"].startswith("prosaas-calls-nginx-templates")]
    if not maps:
        return
    if maps[0]["data"].get("default.conf.template") != template:
        problem(render.where(maps[0]), "is not deploy/nginx/templates/default.conf.template")
    deployment = render.one("Deployment", "prosaas-calls-nginx")
    c = container(deployment, "nginx")
    given = {e["name"] for e in c.get("env", [])}
    needed = set(re.findall(r"\$\{((?:NGINX|CALLS)_[A-Z_]+)\}", template))
    if needed - given:
        problem(render.where(deployment), f"the template's placeholders {sorted(needed - given)} are not set")
    upstream = env_value(c, "CALLS_UPSTREAM_SERVERS") or ""
    namespace = deployment["metadata"].get("namespace")
    if f"prosaas-calls-pods.{namespace}.svc" not in upstream or "resolve" not in upstream:
        problem(render.where(deployment), f"CALLS_UPSTREAM_SERVERS {upstream!r}: the headless Service in {namespace}, re-resolved")


def check_dashboard(render):
    dashboards = [cm for cm in render.of("ConfigMap") if cm["metadata"]["name"] == "prosaas-calls-dashboard"]
    for cm in dashboards:
        shipped = (ROOT / "deploy/grafana/prosaas-calls.json").read_text()
        if cm["data"].get("prosaas-calls.json") != shipped:
            problem(render.where(cm), "is not deploy/grafana/prosaas-calls.json")
        json.loads(shipped)


CHECKS = {
    "ScaledObject": check_scaled_object,
    "ServiceMonitor": check_service_monitor,
    "PrometheusRule": check_prometheus_rule,
    "HTTPRoute": check_http_route,
}


def main():
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    renders = {p.stem: Render(p) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml"))}
    if "production" not in renders:
        sys.exit("no production.yaml in the rendered directory")
    for render in renders.values():
        for obj in render.objects:
            if obj["kind"] in CHECKS:
                CHECKS[obj["kind"]](render, obj)
        grace = check_shutdown(render)
        check_autoscalers(render, grace)
        check_hardening(render)
        check_secrets(render)
        check_availability(render)
        check_dockerfile(render)
        check_nginx(render)
        check_dashboard(render)
    if "hpa" in renders:
        same_autoscaling(renders["production"], renders["hpa"])
    check_dockerfile_workspace()
    kinds = sorted({o["kind"] for r in renders.values() for o in r.objects})
    for custom in CHECKS:
        if custom not in kinds:
            problem("renders", f"no {custom} in any overlay: its check never ran")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    count = sum(len(r.objects) for r in renders.values())
    print(f"{count} objects in {len(renders)} renders: custom resources, shutdown, hardening, secrets, "
          f"Dockerfile, nginx, dashboard and autoscaling all agree")


if __name__ == "__main__":
    main()
