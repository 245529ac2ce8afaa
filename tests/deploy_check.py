"""deploy_check.py: checks that the Dockerfile, the Kubernetes manifests and docker-compose agree with each other and with what semipaintd serves (run by tests/it_deploy.sh).

Arguments (files written by it_deploy.sh):
  --cpu FILE / --gpu FILE   the overlays rendered by `kubectl kustomize` (absent: the base files are read
                            as they are, and the GPU overlay is not checked)
  --print-config FILE       `semipaintd --print-config` of the ConfigMap's configuration
  --metrics FILE            GET /metrics of a daemon started with that configuration
  --routes FILE             one line per path that daemon answered 200 to (METHOD PATH)
  --ready-s SECONDS         how long that daemon took to answer /readyz 200
  --needed FILE             `package soname` lines: the Debian package of each NEEDED library of build/semipaintd
  --provided FILE           the packages the runtime stage installs, with their direct dependencies, one a line
  --runtime-packages        only print the runtime stage's apt-get install list, one a line, and exit
  --host-config OUT --data DIR
                            only write docker/base/semipaintd.yaml as OUT with the image's paths made
                            the repository files the image copies them from (through the runtime-cpu
                            stage's COPY lines) and /data/... made DIR/..., print one line per model
                            family, `NAME<TAB>VARIABLE<TAB>DATABASE` (VARIABLE: SEMIPAINT_RETRIEVAL_DATABASE
                            or SEMIPAINT_FAMILIES_<NAME>_DATABASE; DATABASE as in OUT), and exit
  --job-commands --data DIR --images DIR
                            only print the command of each Job of docker/jobs/, its /data and image
                            mounts made DIR, as one shell-quoted line each, and exit
Prints one `ok`/`FAIL` line per check and exits 1 on any failure.

Model families: the container's configuration must serve every family config/semipaintd.yaml serves
(model.family and families.*), with the same weights (its /opt/semipaint paths are the repository's
files through the Dockerfile's COPY lines, and none is left out of the build context by
.dockerignore), each family's database on the data volume, and a Job of docker/jobs/ building each
database at its family's working size.
"""
import argparse
import glob
import json
import os
import re
import shlex
import struct
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
passes = fails = 0


def check(what, ok, detail=""):
    global passes, fails
    if ok:
        passes += 1
        print(f"ok   {what}")
    else:
        fails += 1
        print(f"FAIL {what}" + (f": {detail}" if detail != "" else ""))


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    if len(found) != 1:
        raise SystemExit(f"deploy_check: expected one {kind}, found {len(found)}")
    return found[0]


def parse_print_config(path):
    """{section: {key: value-string}} from `semipaintd --print-config` output; the families section
    is {family: {key: value-string}}."""
    out, section, fam = {}, None, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.lstrip().startswith("#"):
                continue
            m = re.match(r"^([a-z_]+):\s*(\{\})?$", line)
            if m:
                section, fam = out.setdefault(m.group(1), {}), None
                continue
            m = re.match(r"^  ([a-z0-9]+):$", line)
            if m and section is not None:
                fam = section.setdefault(m.group(1), {})
                continue
            m = re.match(r"^(  |    )([a-z_]+): (.*)$", line)
            if m and section is not None:
                v = m.group(3)
                (fam if len(m.group(1)) == 4 and fam is not None else section)[m.group(2)] = \
                    v[1:-1] if v.startswith('"') and v.endswith('"') else v
    return out


def base_docs():
    docs = []
    for f in ("deployment.yaml", "service.yaml", "pvc.yaml", "hpa.yaml", "pdb.yaml"):
        docs += load_all(os.path.join(ROOT, "docker/base", f))
    with open(os.path.join(ROOT, "docker/base/semipaintd.yaml")) as f:
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "semipaintd-config"},
                     "data": {"semipaintd.yaml": f.read()}})
    return docs


def runtime_packages():
    """The packages of the Dockerfile's runtime `apt-get install` (the one in the last stage)."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        df = f.read()
    found = re.findall(r"apt-get install -y --no-install-recommends \\\n(.*?)\n \&\&", df, re.S)
    return set(found[-1].replace("\\", " ").split()) if found else set()


def dockerignore_patterns():
    """.dockerignore as (exclusion?, regex) pairs, read as Docker and Buildah read it (moby/patternmatcher)."""
    out = []
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            p = line.strip()
            if not p:
                continue
            inv = p.startswith("!")
            if inv:
                p = p[1:].strip()
            p = os.path.normpath(p).lstrip("/") if len(p) > 1 else p
            rx, i = "^", 0
            while i < len(p):
                ch = p[i]
                if ch == "*" and p[i + 1:i + 2] == "*":
                    i += 2
                    if p[i:i + 1] == "/":
                        i += 1
                    rx += ".*" if i >= len(p) else "(.*/)?"
                    continue
                if ch == "*":
                    rx += "[^/]*"
                elif ch == "?":
                    rx += "[^/]"
                elif ch == "\\" and i + 1 < len(p):
                    i += 1
                    rx += re.escape(p[i])
                elif ch in "[]":
                    rx += ch
                else:
                    rx += re.escape(ch)
                i += 1
            out.append((inv, re.compile(rx + "$")))
    return out


def ignored(path, patterns):
    """True when .dockerignore leaves `path` (relative to the context) out of the build context:
    the last pattern matching it or one of its parent folders decides (moby's MatchesOrParentMatches)."""
    path = os.path.normpath(path)
    parents = path.split("/")[:-1]
    matched = False
    for inv, rx in patterns:
        if inv != matched:
            continue
        m = rx.match(path) or any(rx.match("/".join(parents[:i + 1])) for i in range(len(parents)))
        if m:
            matched = not inv
    return matched


def runtime_copies(df, b):
    """The runtime-`b` stage's COPY lines from the build stage, as (image path, build-context path)
    pairs: the build stage copies the context to /src (COPY . .), build/ is made by make."""
    body = re.search(r"^FROM\s+\S+\s+AS\s+runtime-%s\n(.*?)(?=^FROM|\Z)" % b, df, re.M | re.S)
    out = []
    for line in re.findall(r"^COPY --from=build-\w+ (.*)$", body.group(1) if body else "", re.M):
        parts = line.split()
        srcs, dest = parts[:-1], parts[-1]
        for src in srcs:
            if not src.startswith("/src/"):
                continue
            rel = src[len("/src/"):]
            if dest.endswith("/") and not src.endswith("/"):
                out.append((dest + os.path.basename(src.rstrip("/")), rel))
            else:
                out.append((dest, rel))
    return out


def image_source(path, copies):
    """The build-context file the image's `path` is copied from, or None when no COPY puts it there."""
    for dest, rel in copies:
        if dest.endswith("/") and path.startswith(dest):
            return rel.rstrip("/") + "/" + path[len(dest):]
        if path == dest:
            return rel
    return None


WEIGHT_KEYS = ("coarse", "refine", "refine_fallback")


def families_of(cfg):
    """{family name: {coarse, refine, refine_fallback, database}} of a configuration file's YAML: the
    first family from model.* and retrieval.* (named by model.family, default faces), then families.*."""
    cfg = cfg or {}
    model, retrieval = cfg.get("model") or {}, cfg.get("retrieval") or {}
    first = {k: str(model.get(k) or "") for k in WEIGHT_KEYS}
    first["database"] = str(retrieval.get("database") or "")
    out = {str(model.get("family") or "faces"): first}
    for name, kv in (cfg.get("families") or {}).items():
        out[str(name)] = {k: str((kv or {}).get(k) or "") for k in WEIGHT_KEYS + ("database",)}
    return out


def db_variable(name, first):
    return "SEMIPAINT_RETRIEVAL_DATABASE" if first else f"SEMIPAINT_FAMILIES_{name.upper()}_DATABASE"


def working_size(path):
    """The `size` of a weights file's __metadata__["semipaint"] (docs/weights.md), or None."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            head = json.loads(f.read(n))
        return int(json.loads(head["__metadata__"]["semipaint"])["size"])
    except (OSError, KeyError, ValueError, TypeError, struct.error):
        return None


def job_docs():
    docs = []
    for f in sorted(glob.glob(os.path.join(ROOT, "docker/jobs/*.yaml"))):
        docs += [(os.path.relpath(f, ROOT), d) for d in load_all(f) if d.get("kind") == "Job"]
    return docs


def job_build(job):
    """(container, args, mounts, volumes) of a Job's `semipaint index build` container, or None."""
    spec = job["spec"]["template"]["spec"]
    for c in spec.get("containers", []):
        args = list(c.get("command", [])) + list(c.get("args", []))
        if args[:3] == ["semipaint", "index", "build"]:
            return c, args, {m["mountPath"]: m for m in c.get("volumeMounts", [])}, \
                {v["name"]: v for v in spec.get("volumes", [])}
    return None


def opt(args, name):
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def check_families(cfg, df, data_claim, data_mount):
    """The container's configuration serves every family of config/semipaintd.yaml from files the image
    holds, each family's database is on the data volume, and a Job builds it at the family's size."""
    with open(os.path.join(ROOT, "config/semipaintd.yaml")) as f:
        repo_cfg = yaml.safe_load(f)
    repo, ctr = families_of(repo_cfg), families_of(cfg)
    check("the container's configuration serves every family of config/semipaintd.yaml, in its order",
          list(ctr) == list(repo), f"container {list(ctr)}, repository {list(repo)}")
    patterns = dockerignore_patterns()
    # (what, the repository configuration's path, the container's path)
    wanted = [(f"{n}.{k}", repo[n][k], ctr.get(n, {}).get(k, "")) for n in repo for k in WEIGHT_KEYS]
    wanted.append(("model.router", str((repo_cfg.get("model") or {}).get("router") or ""),
                   str((cfg.get("model") or {}).get("router") or "")))
    for b in ("cpu", "cuda"):
        copies = runtime_copies(df, b)
        for what, rpath, cpath in wanted:
            if not rpath:
                continue
            src = image_source(cpath, copies) if cpath else None
            check(f"[runtime-{b}] {what} ({cpath or 'unset'}) is the repository's {rpath}, copied into the image",
                  src is not None and os.path.normpath(src) == os.path.normpath(rpath),
                  f"the image's COPY lines make it {src}" if cpath else "the container's configuration does not set it")
            if src is None:
                continue
            check(f"[runtime-{b}] {src} exists and .dockerignore keeps it in the build context",
                  os.path.isfile(os.path.join(ROOT, src)) and not ignored(src, patterns),
                  "missing" if not os.path.isfile(os.path.join(ROOT, src)) else "excluded by .dockerignore")
    dbs = {n: f["database"] for n, f in ctr.items()}
    check("each family of the container has its own database path", all(dbs.values())
          and len(set(dbs.values())) == len(dbs), dbs)
    jobs = job_docs()
    copies = runtime_copies(df, "cpu")
    for i, (n, db) in enumerate(dbs.items()):
        if not db:
            continue
        check(f"{n}'s database ({db}) is on the data volume ({data_mount})",
              db.startswith(data_mount.rstrip("/") + "/"), db)
        src = image_source(ctr[n]["coarse"], copies)
        size = working_size(os.path.join(ROOT, src)) if src else None
        builders = []
        for fname, job in jobs:
            jb = job_build(job)
            if jb and opt(jb[1], "--out") == db:
                builders.append((fname, job, jb))
        check(f"a Job of docker/jobs/ builds {n}'s database {db} with `semipaint index build --out {db}`",
              len(builders) == 1, [f for f, _, _ in builders] or "none")
        for fname, job, (c, args, mounts, vols) in builders:
            jsize = opt(args, "--size")
            jmodel = opt(args, "--model")
            ok_size = (jmodel == n) if jmodel and jsize is None else (int(jsize or 256) == size)
            check(f"{fname}: --size {jsize or '(default 256)'} is {n}'s working size ({size}, the size of its coarse net)",
                  size is not None and ok_size, f"--model {jmodel}" if jmodel else "")
            dm = [m for p, m in mounts.items() if db.startswith(p.rstrip("/") + "/")]
            claim = vols.get(dm[0]["name"], {}).get("persistentVolumeClaim", {}).get("claimName") if dm else None
            check(f"{fname}: {db} is on the Deployment's database claim ({data_claim}), mounted writable",
                  len(dm) == 1 and claim == data_claim and not dm[0].get("readOnly"), (claim, dm))
            imgs = opt(args, "--images") or ""
            check(f"{fname}: --images {imgs} is a mounted volume", any(imgs == p or imgs.startswith(p.rstrip("/") + "/")
                                                                      for p in mounts), sorted(mounts))
            psc = job["spec"]["template"]["spec"].get("securityContext", {})
            csc = c.get("securityContext", {})
            check(f"{fname}: runs as the image's non-root user with a read-only root file system",
                  psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001
                  and csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False)


def host_config(out, data):
    """docker/base/semipaintd.yaml with the image's paths made repository paths and /data made `data`."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        copies = runtime_copies(f.read(), "cpu")
    with open(os.path.join(ROOT, "docker/base/semipaintd.yaml")) as f:
        text = f.read()

    def repl(m):
        p = m.group(0)
        if p == "/data" or p.startswith("/data/"):
            return data.rstrip("/") + p[len("/data"):]
        src = image_source(p, copies)
        return os.path.join(ROOT, src) if src else p

    mapped = re.sub(r"(?<=: )/(?:opt/semipaint|data)(?:/[^\s#]*)?", repl, text)
    with open(out, "w") as f:
        f.write(mapped)
    for i, (n, fam) in enumerate(families_of(yaml.safe_load(mapped)).items()):
        print(n, db_variable(n, i == 0), fam["database"], sep="\t")


def job_commands(data, images):
    """Each Job's command, its /data mount made `data` and its other mounts made `images`."""
    for fname, job in job_docs():
        jb = job_build(job)
        if not jb:
            continue
        _, args, mounts, _ = jb
        out = []
        for a in args:
            for p, m in sorted(mounts.items(), key=lambda x: -len(x[0])):
                if a == p or a.startswith(p.rstrip("/") + "/"):
                    base = data if p.rstrip("/") == "/data" else images
                    a = base.rstrip("/") + a[len(p.rstrip("/")):]
                    break
            out.append(a)
        print(shlex.join(out))


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def probe_port(probe, ports):
    p = probe["httpGet"]["port"]
    return ports.get(p, p)


def check_overlay(name, docs, cfg, printed, routes, ready_s, metric_names):
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    c = [x for x in pod["spec"]["containers"] if x["name"] == "semipaintd"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    listen_port = int(str(cfg["server"]["listen"]).rsplit(":", 1)[1])
    ann = pod["metadata"].get("annotations", {})
    svc = one(docs, "Service")
    hpa = one(docs, "HorizontalPodAutoscaler")
    pdb = one(docs, "PodDisruptionBudget")
    pvcs = {p["metadata"]["name"]: p for p in by_kind(docs, "PersistentVolumeClaim")}
    cms = {m["metadata"]["name"]: m for m in by_kind(docs, "ConfigMap")}
    sel = dep["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    P = f"[{name}] "

    # ports
    check(P + "containerPort 'http' is server.listen's port", ports.get("http") == listen_port, f"{ports} vs {listen_port}")
    check(P + "the Service targets the http port", all(ports.get(p["targetPort"], p["targetPort"]) == listen_port
                                                        for p in svc["spec"]["ports"]), svc["spec"]["ports"])
    check(P + "the Service and the PDB select the Deployment's pods",
          svc["spec"]["selector"].items() <= labels.items() and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
          and sel.items() <= labels.items())
    check(P + "prometheus.io annotations: scrape on the listen port at /metrics",
          ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(listen_port)
          and ann.get("prometheus.io/path") == "/metrics", ann)

    # probes
    lp, rp, sp = c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe")
    check(P + "liveness GET /healthz, readiness and startup GET /readyz",
          lp and rp and sp and lp["httpGet"]["path"] == "/healthz" and rp["httpGet"]["path"] == "/readyz"
          and sp["httpGet"]["path"] == "/readyz")
    check(P + "every probe uses the listen port", all(probe_port(p, ports) == listen_port for p in (lp, rp, sp)))
    for path in ("/healthz", "/readyz", ann.get("prometheus.io/path")):
        check(P + f"semipaintd answered 200 to GET {path}", routes is None or f"GET {path}" in routes,
              "not in the daemon's answers")
    budget = sp["periodSeconds"] * sp["failureThreshold"]
    check(P + f"the startup probe allows {budget} s for loading (>= 60 s, and >= 20x the {ready_s:.2f} s measured here)",
          budget >= 60 and budget >= 20 * ready_s)

    # configuration
    cm_name = [v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v]
    check(P + "the config volume names a ConfigMap of this overlay", len(cm_name) == 1 and cm_name[0] in cms, cm_name)
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    cfg_vol = [n for n, v in vols.items() if "configMap" in v][0]
    args = c.get("args", [])
    cfg_path = args[args.index("-c") + 1] if "-c" in args else ""
    key = os.path.basename(cfg_path)
    check(P + "-c names the ConfigMap's file in its mount",
          os.path.dirname(cfg_path) == mounts[cfg_vol]["mountPath"] and key in cms[cm_name[0]]["data"], cfg_path)
    cm_cfg = yaml.safe_load(cms[cm_name[0]]["data"][key])
    unknown = [f"{s}.{k}" for s, kv in cm_cfg.items() if s != "families" for k in (kv or {}) if k not in printed.get(s, {})]
    # a family's keys: those --print-config lists under any family (it_deploy.sh adds one for this)
    fkeys = {k for kv in printed.get("families", {}).values() if isinstance(kv, dict) for k in kv}
    unknown += [f"families.{n}.{k}" for n, kv in (cm_cfg.get("families") or {}).items() for k in (kv or {})
                if k not in fkeys]
    check(P + "every key of the ConfigMap's YAML is one semipaintd knows", not unknown and set(cm_cfg) <= set(printed), unknown)
    for n, e in env_of(c).items():
        if n.startswith("SEMIPAINT_FAMILIES_"):
            fam, _, k = n[len("SEMIPAINT_FAMILIES_"):].lower().partition("_")
            check(P + f"env {n} overrides a real key (families.{fam}.{k})", k in fkeys)
        elif n.startswith("SEMIPAINT_"):
            sec, _, k = n[len("SEMIPAINT_"):].lower().partition("_")
            check(P + f"env {n} overrides a real key ({sec}.{k})", k in printed.get(sec, {}))

    # database volume: every family's database on the same claim
    for n, fam in families_of(cm_cfg).items():
        db = fam["database"]
        data_mounts = [m for m in c["volumeMounts"] if db.startswith(m["mountPath"].rstrip("/") + "/")]
        check(P + f"{n}'s database ({db}) is on a mounted volume", len(data_mounts) == 1)
        if data_mounts:
            v = vols[data_mounts[0]["name"]]
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            check(P + f"that volume is this overlay's PersistentVolumeClaim ({claim})", claim in pvcs, claim)

    # security
    psc, csc = pod["spec"].get("securityContext", {}), c.get("securityContext", {})
    check(P + "runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, all capabilities dropped",
          psc.get("runAsNonRoot") is True and csc.get("readOnlyRootFilesystem") is True
          and csc.get("allowPrivilegeEscalation") is False and csc.get("capabilities", {}).get("drop") == ["ALL"])
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        users = re.findall(r"^USER\s+(\d+)", f.read(), re.M)
    check(P + "runAsUser is the image's USER", users and psc.get("runAsUser") == int(users[-1]), (users, psc.get("runAsUser")))
    res = c.get("resources", {})
    check(P + "cpu and memory requests and limits are set",
          all(k in res.get(w, {}) for w in ("requests", "limits") for k in ("cpu", "memory")))

    # shutdown: preStop pause + server.shutdown_grace_ms fit in the grace period
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    grace_ms = int(printed["server"]["shutdown_grace_ms"]) if cm_cfg["server"].get("shutdown_grace_ms") is None \
        else int(cm_cfg["server"]["shutdown_grace_ms"])
    tgp = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(P + f"terminationGracePeriodSeconds ({tgp}) > preStop ({pause} s) + shutdown_grace_ms ({grace_ms})",
          tgp * 1000 > pause * 1000 + grace_ms)

    # autoscaling
    ms = hpa["spec"]["metrics"]
    check(P + "the HPA scales this Deployment", hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
          and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment" and hpa["apiVersion"] == "autoscaling/v2")
    pods_metrics = [m["pods"] for m in ms if m["type"] == "Pods"]
    check(P + "the HPA uses a Pods metric named semipaint_queue_depth",
          len(pods_metrics) == 1 and pods_metrics[0]["metric"]["name"] == "semipaint_queue_depth")
    mname = pods_metrics[0]["metric"]["name"] if pods_metrics else ""
    check(P + f"semipaintd exports {mname} as a gauge", mname in metric_names, sorted(metric_names))
    env = env_of(c)
    cap = int(env["SEMIPAINT_BATCHING_QUEUE_CAPACITY"]["value"]) if "SEMIPAINT_BATCHING_QUEUE_CAPACITY" in env \
        else int(cm_cfg["batching"]["queue_capacity"])
    tgt = float(pods_metrics[0]["target"]["averageValue"]) if pods_metrics else 0
    check(P + f"the HPA target ({tgt:g}) is below the queue capacity ({cap})", 0 < tgt < cap)
    check(P + "min <= max replicas, and the PDB lets a single pod be drained",
          1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] and pdb["spec"].get("maxUnavailable") == 1)
    return c, env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu")
    ap.add_argument("--gpu")
    ap.add_argument("--print-config")
    ap.add_argument("--metrics")
    ap.add_argument("--routes")
    ap.add_argument("--ready-s", type=float, default=0)
    ap.add_argument("--needed")
    ap.add_argument("--provided")
    ap.add_argument("--runtime-packages", action="store_true")
    ap.add_argument("--host-config")
    ap.add_argument("--job-commands", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--images")
    a = ap.parse_args()
    if a.runtime_packages:
        print("\n".join(sorted(runtime_packages())))
        return 0
    if a.host_config:
        host_config(a.host_config, a.data or "/data")
        return 0
    if a.job_commands:
        job_commands(a.data or "/data", a.images or "/images")
        return 0
    if not a.print_config:
        ap.error("--print-config is required")

    printed = parse_print_config(a.print_config)
    with open(os.path.join(ROOT, "docker/base/semipaintd.yaml")) as f:
        cfg = yaml.safe_load(f)
    routes = None
    if a.routes:
        with open(a.routes) as f:
            routes = {line.strip() for line in f if line.strip()}
    metric_names = set()
    if a.metrics:
        with open(a.metrics) as f:
            metric_names = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) gauge$", f.read(), re.M)}
    else:  # no daemon: the names the server registers as gauges in its sources
        for src in glob.glob(os.path.join(ROOT, "server/*.c")) + glob.glob(os.path.join(ROOT, "core/*.c")):
            with open(src) as f:
                metric_names |= set(re.findall(r'core_metrics_gauge\([^,]+,\s*"([a-z_]+)"', f.read()))

    cpu_docs = load_all(a.cpu) if a.cpu else base_docs()
    c, env = check_overlay("cpu" if a.cpu else "base", cpu_docs, cfg, printed, routes, a.ready_s, metric_names)
    if a.cpu:
        res = c["resources"]
        check("[cpu] no GPU is requested, the image is semipaint:cpu",
              "nvidia.com/gpu" not in res.get("limits", {}) and c["image"] == "semipaint:cpu", c["image"])
        check("[cpu] model.cpu_threads follows the CPU limit",
              env.get("SEMIPAINT_MODEL_CPU_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {}).get("resource")
              == "limits.cpu")
    if a.gpu:
        g, genv = check_overlay("gpu", load_all(a.gpu), cfg, printed, routes, a.ready_s, metric_names)
        lim = g["resources"].get("limits", {})
        check("[gpu] one nvidia.com/gpu per pod, the image is semipaint:cuda, model.device is cuda",
              str(lim.get("nvidia.com/gpu")) == "1" and g["image"] == "semipaint:cuda"
              and genv.get("SEMIPAINT_MODEL_DEVICE", {}).get("value") == "cuda", (lim, g["image"]))

    # prometheus-adapter rule, docker-compose and its Prometheus
    adapter = load_all(os.path.join(ROOT, "docker/prometheus-adapter.yaml"))[0]
    check("the prometheus-adapter rule serves the HPA's metric",
          [r["name"]["as"] for r in adapter["rules"]] == ["semipaint_queue_depth"]
          and "semipaint_queue_depth" in adapter["rules"][0]["seriesQuery"])
    listen_port = int(str(cfg["server"]["listen"]).rsplit(":", 1)[1])
    compose = load_all(os.path.join(ROOT, "docker/docker-compose.yml"))[0]
    svc = compose["services"]["semipaintd"]
    check("compose publishes the listen port", any(str(p).split(":")[-1] == str(listen_port) for p in svc["ports"]), svc["ports"])
    check("compose mounts the ConfigMap's YAML where the image reads it",
          "./base/semipaintd.yaml:/etc/semipaint/semipaintd.yaml:ro" in svc["volumes"])
    check("compose keeps the database on a volume at /data", any(str(v).endswith(":/data") for v in svc["volumes"]))
    check("compose runs read-only with every capability dropped", svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"])
    prom = load_all(os.path.join(ROOT, "docker/prometheus.yml"))[0]
    job = [j for j in prom["scrape_configs"] if j["job_name"] == "semipaintd"]
    targets = [t for j in job for s in j["static_configs"] for t in s["targets"]]
    check("Prometheus scrapes the compose service on the listen port at /metrics",
          targets == [f"semipaintd:{listen_port}"] and job[0].get("metrics_path", "/metrics") == "/metrics", targets)

    # the Dockerfile
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        df = f.read()
    exposes = re.findall(r"^EXPOSE\s+(\d+)", df, re.M)
    check("the Dockerfile EXPOSEs the listen port", exposes == [str(listen_port)], exposes)
    hc = re.search(r"^HEALTHCHECK .*?CMD (.*)$", df, re.M | re.S)
    check("the HEALTHCHECK asks /healthz on the listen port",
          hc and f"http://127.0.0.1:{listen_port}/healthz" in hc.group(1) and (routes is None or "GET /healthz" in routes))
    froms = re.findall(r"^FROM\s+(\S+)", df, re.M)
    stage_of = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", df, re.M)
    stages = [s for _, s in stage_of]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", df, re.M))
    # Buildah/Podman resolve a FROM with a build argument as an image name, never as a stage name.
    resolve = lambda f, b=None: re.sub(r"\$\{(\w+)\}", lambda m: b if b is not None else args.get(m.group(1), m.group(0)), f)
    staged = [f for f in froms if "$" in f and any(resolve(f, b) in stages for b in (None, "cpu", "cuda"))]
    check("no FROM names a stage through a build argument (Buildah and Podman build the file)", not staged, staged)
    check("a runtime-cpu and a runtime-cuda target; runtime-cpu is the last stage (the default target)",
          {"runtime-cpu", "runtime-cuda"} <= set(stages) and stages[-1] == "runtime-cpu", stages)
    for b in ("cpu", "cuda"):
        body = re.search(r"^FROM\s+\S+\s+AS\s+runtime-%s\n(.*?)(?=^FROM|\Z)" % b, df, re.M | re.S)
        srcs = set(re.findall(r"^COPY --from=(\S+)", body.group(1) if body else "", re.M))
        check(f"runtime-{b} copies its binaries from build-{b} only", body and f"build-{b}" in srcs
              and not {s for s in srcs if s.startswith("build")} - {f"build-{b}"}, sorted(srcs))
    refs = [f for f in froms if f in stages]
    external = [f for f in froms if f not in refs]
    unresolved = [v for f in external for v in re.findall(r"\$\{(\w+)\}", f) if v not in args]
    check("the image and version arguments of the FROM lines have defaults", not unresolved, unresolved)
    images = [resolve(f) for f in external]
    check("every image pulled from a registry has a pinned tag (no :latest)",
          images and all(":" in f and not f.endswith(":latest") for f in images), images)
    check("the build and runtime stages start from Debian 12 by default",
          args.get("BUILD_BASE") == "debian:12" and args.get("BASE") == "debian:12-slim", args)
    check("the build stage runs the Makefile's deps and all targets (as CI does)",
          re.search(r"make deps", df) and re.search(r"make -j\S* \$SP_MAKE_ARGS all", df))
    check("the runtime runs as a non-root numeric USER", re.search(r"^USER 10001:10001$", df, re.M))
    for src in sorted(set(re.findall(r"^COPY --from=build-\w+ /src/(\S+)", df, re.M))):
        for s in src.split():
            if not s.startswith("build/"):
                check(f"the Dockerfile's {s} exists", os.path.exists(os.path.join(ROOT, s)))
    ep = os.path.join(ROOT, "docker/entrypoint.sh")
    check("the entrypoint script is executable", os.access(ep, os.X_OK))
    runtime_pkgs = runtime_packages()
    check("the runtime stage installs curl for its HEALTHCHECK", "curl" in runtime_pkgs)
    if a.needed and a.provided:
        with open(a.needed) as f:
            pairs = [line.split() for line in f if line.strip()]
        with open(a.provided) as f:
            provided = {line.strip() for line in f if line.strip()} | runtime_pkgs
        missing = [f"{so} ({pkg})" for pkg, so in pairs if pkg not in provided and pkg != "libc6"]
        check("the runtime packages provide every library build/semipaintd needs", not missing and pairs, missing)
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ign = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    check(".dockerignore keeps build outputs, caches and .git out", {"build", "build-*", ".deps", ".git"} <= ign)
    patterns = dockerignore_patterns()
    logs = sorted(os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "weights/**/*"), recursive=True)
                  if os.path.isfile(f) and re.search(r"training-logs/|\.(jsonl|out|log)$", f))
    check(".dockerignore keeps the training logs of weights/ out of the image",
          all(ignored(f, patterns) for f in logs), [f for f in logs if not ignored(f, patterns)])

    # model families: the container serves what `make run` serves, and docker/jobs builds their databases
    dep = one(cpu_docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    ctr = [x for x in pod["containers"] if x["name"] == "semipaintd"][0]
    db0 = str(cfg["retrieval"]["database"])
    mnt = [m for m in ctr["volumeMounts"] if db0.startswith(m["mountPath"].rstrip("/") + "/")]
    vol = {v["name"]: v for v in pod["volumes"]}.get(mnt[0]["name"], {}) if mnt else {}
    check_families(cfg, df, vol.get("persistentVolumeClaim", {}).get("claimName"), mnt[0]["mountPath"] if mnt else "/data")

    print(f"deploy_check: {passes} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
