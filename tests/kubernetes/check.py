"""Checks warren's Kubernetes manifests offline (run by tests/kubernetes.rs
with a venv that has kubernetes-validate, jsonschema and PyYAML):

    check.py DIR --keda-schemas FILE --metrics FILE --version VERSION

1. every Kubernetes object in DIR (*.yaml, subfolders included, but not
   kustomization.yaml) validates against Kubernetes' own schemas
   (kubernetes-validate, strict: unknown fields are errors), and every KEDA
   object against the KEDA schemas of FILE (jsonschema); a kind that neither
   knows is an error;
2. kustomization.yaml lists exactly the manifests at DIR's top level;
3. the pipeline file in the ConfigMap warren-pipeline: each stage has a
   Deployment running `warren worker /etc/warren/pipeline.yaml --stage S
   --health 0.0.0.0:8081` (probes on /healthz and /readyz, AMQP_URL from a
   Secret, WARREN_LOG=json, a grace period of at least the stage's timeout +
   10 s, the image of this version) and one ScaledObject of the top level
   whose rabbitmq trigger reads the queue {pipeline}.{stage}; no Deployment
   for a stage the file does not have; a sink stage at most 1 replica; the
   `warren serve` Deployment serves the file, its read token from a Secret,
   with /healthz and /readyz probes;
4. every Secret (and key), ConfigMap, PersistentVolumeClaim,
   TriggerAuthentication and Deployment a manifest names is in the set, a
   `python3 -c` probe compiles, and every warren_* series a Prometheus query names
   is one that warren serves (FILE of --metrics);
5. the ConfigMap's extra files equal their originals (--same NAME=PATH).

With --extract OUT it only writes the ConfigMap's files into OUT (for
`warren validate`).

Prints one line per problem, `FILE: Kind/name: where: what`, then
`N passed, M failed` (objects checked, objects with a problem); exits 1 on
any problem.
"""

import argparse
import os
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES = "1.34.0"
WORKER_ARGS = ["worker", "/etc/warren/pipeline.yaml", "--stage", None, "--health", "0.0.0.0:8081"]


class Problems:
    def __init__(self):
        self.lines = []
        self.objects = set()

    def add(self, where, what):
        self.lines.append("%s: %s" % (where, what))
        self.objects.add(where)


def label(doc):
    return "%s/%s" % (doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?"))


def load(root):
    """Every (file, document) under root but kustomization.yaml."""
    docs = []
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if not name.endswith(".yaml") or name == "kustomization.yaml":
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            with open(path) as f:
                try:
                    for doc in yaml.safe_load_all(f):
                        if doc is not None:
                            docs.append((rel, doc))
                except yaml.YAMLError as e:
                    docs.append((rel, {"kind": "?", "metadata": {"name": "not YAML: %s" % e}}))
    return docs


def schemas_check(docs, keda, problems):
    for rel, doc in docs:
        where = "%s: %s" % (rel, label(doc))
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            problems.add(where, "not a Kubernetes object (no apiVersion or kind)")
            continue
        if doc["apiVersion"].startswith("keda.sh/"):
            if doc["kind"] not in keda:
                problems.add(where, "no KEDA schema for %s" % doc["kind"])
                continue
            schema = dict(keda[doc["kind"]], **{"$defs": keda["$defs"]})
            for e in sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str):
                path = ".".join(str(p) for p in e.absolute_path) or "(top)"
                problems.add(where, "%s: %s" % (path, e.message))
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            problems.add(where, "%s: %s" % (path, e.message))
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            problems.add(where, "no Kubernetes %s schema: %s" % (KUBERNETES, e))


def kustomization_check(root, problems):
    path = os.path.join(root, "kustomization.yaml")
    if not os.path.exists(path):
        problems.add("kustomization.yaml: -", "missing")
        return
    with open(path) as f:
        listed = (yaml.safe_load(f) or {}).get("resources") or []
    present = sorted(n for n in os.listdir(root) if n.endswith(".yaml") and n != "kustomization.yaml")
    for name in sorted(set(present) - set(listed)):
        problems.add("kustomization.yaml: resources", "%s is not listed" % name)
    for name in sorted(set(listed) - set(present)):
        problems.add("kustomization.yaml: resources", "%s does not exist" % name)


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def pipeline_check(docs, args, problems):
    by_kind = {}
    for rel, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((rel, doc))
    named = {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for _, d in docs}
    maps = [(r, d) for r, d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == "warren-pipeline"]
    if not maps:
        problems.add("-: ConfigMap/warren-pipeline", "missing: it holds the pipeline file")
        return
    rel, cm = maps[0]
    try:
        pipeline = yaml.safe_load(cm["data"]["pipeline.yaml"])
    except (KeyError, yaml.YAMLError) as e:
        problems.add("%s: ConfigMap/warren-pipeline" % rel, "no readable pipeline.yaml: %s" % e)
        return
    for spec in args.same:
        key, path = spec.split("=", 1)
        with open(path) as f:
            if cm["data"].get(key) != f.read():
                problems.add("%s: ConfigMap/warren-pipeline" % rel, "data.%s differs from %s" % (key, path))
    name = pipeline["pipeline"]
    defaults = pipeline.get("defaults") or {}
    stages = pipeline["stages"]
    image = "localhost/warren:%s" % args.version

    deployments = {}
    for rel, d in by_kind.get("Deployment", []):
        c = d["spec"]["template"]["spec"]["containers"][0]
        where = "%s: %s" % (rel, label(d))
        if c.get("image") != image:
            problems.add(where, "image %s, not %s (packaging/ builds that)" % (c.get("image"), image))
        argv = c.get("args") or []
        if argv[:1] == ["serve"]:
            serve_check(where, c, problems)
        if argv[:1] != ["worker"]:
            continue
        stage = argv[3] if len(argv) > 3 else None
        deployments.setdefault(stage, []).append(where)
        if stage not in stages:
            problems.add(where, "runs stage %r, which the pipeline file has not" % stage)
            continue
        want = [stage if a is None else a for a in WORKER_ARGS]
        if argv != want:
            problems.add(where, "args %s, not %s" % (argv, want))
        env = {e["name"]: e for e in c.get("env") or []}
        if "secretKeyRef" not in (env.get("AMQP_URL", {}).get("valueFrom") or {}):
            problems.add(where, "AMQP_URL does not come from a Secret")
        if env.get("WARREN_LOG", {}).get("value") != "json":
            problems.add(where, "WARREN_LOG is not json")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                problems.add(where, "%s is not an httpGet on %s (got %s)" % (probe, path, got))
        if not (c.get("resources") or {}).get("requests"):
            problems.add(where, "no resource requests")
        timeout = seconds((stages[stage] or {}).get("timeout", defaults.get("timeout", "30s")))
        grace = d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if timeout is not None and grace < timeout + 10:
            problems.add(where, "terminationGracePeriodSeconds %s is under the stage's timeout + 10 s (%g)" % (grace, timeout + 10))

    scaled = {}
    for rel, s in by_kind.get("ScaledObject", []):
        where = "%s: %s" % (rel, label(s))
        spec = s.get("spec") or {}
        target = (spec.get("scaleTargetRef") or {}).get("name")
        if ("Deployment", target) not in named:
            problems.add(where, "scales Deployment %s, which is not here" % target)
            continue
        argv = named[("Deployment", target)]["spec"]["template"]["spec"]["containers"][0].get("args") or []
        stage = argv[3] if argv[:1] == ["worker"] and len(argv) > 3 else None
        for t in spec.get("triggers") or []:
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref and ("TriggerAuthentication", ref) not in named:
                problems.add(where, "authenticationRef %s is not here" % ref)
            if t.get("type") == "rabbitmq" and stage:
                want = "%s.%s" % (name, stage)
                if (t.get("metadata") or {}).get("queueName") != want:
                    problems.add(where, "queueName %r, but the stage's queue is %r" % ((t.get("metadata") or {}).get("queueName"), want))
            if t.get("type") == "prometheus":
                for series in re.findall(r"\bwarren_[a-z_]+", (t.get("metadata") or {}).get("query", "")):
                    base = re.sub(r"_(bucket|sum|count|total)$", "", series)
                    if '"%s"' % base not in args.metrics_text:
                        problems.add(where, "query names %s, which warren does not serve" % series)
        if stage and "sink" in (stages.get(stage) or {}) and "path" in ((stages[stage] or {}).get("sink") or {}):
            if spec.get("maxReplicaCount", 100) > 1:
                problems.add(where, "a file sink stage scaled above 1 replica")
        if stage and os.sep not in rel:
            scaled.setdefault(stage, []).append(where)

    for stage in stages:
        if not deployments.get(stage):
            problems.add("-: stage %s" % stage, "no Deployment runs it")
        if len(scaled.get(stage, [])) != 1:
            problems.add("-: stage %s" % stage, "%d ScaledObjects scale it, not 1" % len(scaled.get(stage, [])))

    for rel, doc in docs:
        references_check("%s: %s" % (rel, label(doc)), doc, named, problems)


def serve_check(where, c, problems):
    """`warren serve` on the ConfigMap's file, on all addresses, its tokens
    from a Secret, /healthz for liveness and /readyz for readiness."""
    argv = c.get("args") or []
    if argv[:2] != ["serve", "/etc/warren/pipeline.yaml"] or "--listen" not in argv:
        problems.add(where, "args %s do not serve /etc/warren/pipeline.yaml with --listen" % argv)
    env = {e["name"]: e for e in c.get("env") or []}
    for name in ("AMQP_URL", "WARREN_SERVE__TOKENS__READ"):
        if "secretKeyRef" not in (env.get(name, {}).get("valueFrom") or {}):
            problems.add(where, "%s does not come from a Secret" % name)
    if ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path") != "/healthz":
        problems.add(where, "livenessProbe is not an httpGet on /healthz")
    if "/readyz" not in yaml.safe_dump(c.get("readinessProbe") or {}):
        problems.add(where, "readinessProbe does not ask /readyz")


def walk(node):
    """Every mapping in a document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def keys_of(obj):
    return set((obj or {}).get("data") or {}) | set((obj or {}).get("stringData") or {})


def references_check(where, doc, named, problems):
    """The Secrets, ConfigMaps and claims a document names are in the set,
    with the keys it reads; a `python3 -c` probe compiles."""
    for node in walk(doc):
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = node.get(field)
            if isinstance(ref, dict) and ref.get("key") not in keys_of(named.get((kind, ref.get("name")))):
                problems.add(where, "%s %s has no key %s here" % (kind, ref.get("name"), ref.get("key")))
        volume = node.get("configMap")
        if isinstance(volume, dict) and ("ConfigMap", volume.get("name")) not in named:
            problems.add(where, "ConfigMap %s is not here" % volume.get("name"))
        claim = node.get("persistentVolumeClaim")
        if isinstance(claim, dict) and ("PersistentVolumeClaim", claim.get("claimName")) not in named:
            problems.add(where, "PersistentVolumeClaim %s is not here" % claim.get("claimName"))
        command = (node.get("exec") or {}).get("command") if isinstance(node.get("exec"), dict) else None
        if command and command[:2] == ["python3", "-c"]:
            try:
                compile(command[2], "probe", "exec")
            except SyntaxError as e:
                problems.add(where, "the probe's python3 -c does not compile: %s" % e)
    if doc.get("kind") == "TriggerAuthentication":
        for ref in (doc.get("spec") or {}).get("secretTargetRef") or []:
            if ref.get("key") not in keys_of(named.get(("Secret", ref.get("name")))):
                problems.add(where, "Secret %s has no key %s here" % (ref.get("name"), ref.get("key")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--keda-schemas", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--same", action="append", default=[])
    p.add_argument("--extract", help="write the ConfigMap warren-pipeline's files into this folder and stop")
    args = p.parse_args()
    if args.extract:
        for _, doc in load(args.dir):
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "warren-pipeline":
                for key, text in doc["data"].items():
                    with open(os.path.join(args.extract, key), "w") as f:
                        f.write(text)
                return 0
        print("no ConfigMap warren-pipeline in %s" % args.dir)
        return 1
    with open(args.keda_schemas) as f:
        keda = yaml.safe_load(f)
    with open(args.metrics) as f:
        args.metrics_text = f.read()
    docs = load(args.dir)
    problems = Problems()
    schemas_check(docs, keda, problems)
    kustomization_check(args.dir, problems)
    pipeline_check(docs, args, problems)
    for line in problems.lines:
        print(line)
    failed = len(problems.objects)
    print("checked %d objects against Kubernetes %s and the KEDA schemas" % (len(docs), KUBERNETES))
    print("%d passed, %d failed" % (max(len(docs) - failed, 0), failed))
    return 1 if problems.lines else 0


if __name__ == "__main__":
    sys.exit(main())
