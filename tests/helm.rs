//! Helm chart tests: lint, render, and compare the rendered manifests with what
//! the operator expects (RBAC == `popup_operator::controller::rbac::RULES`,
//! hardening, probes, image tag == crate version, CRD copy in sync).
//!
//! Needs a real helm (>= 3.8, runs apiVersion v2 charts). Lookup order:
//! `$HELM`, `${POPUP_CACHE:-$HOME/.cache/popup-operator}/bin/helm`, `helm` on PATH.
//! Get one with `bash hack/install-helm.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use popup_operator::controller::WatchScope;
use popup_operator::controller::rbac::RULES;
use popup_operator::render::network_policy::OperatorPods;
use serde::Deserialize as _;
use serde_yaml::Value;

const RELEASE: &str = "popup";
const RELEASE_NS: &str = "popup-system";
const DEFAULT_REPO: &str = "ghcr.io/popup-operator/popup-operator";
const CRD_FILE: &str = "popupstores.popup.dev.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/popup-operator")
}

fn values_file(name: &str) -> PathBuf {
    root().join("tests/helm-values").join(name)
}

fn runs_helm(p: &Path) -> bool {
    Command::new(p)
        .args(["version", "--short"])
        .output()
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stdout);
            // apiVersion v2 charts need helm 3 or later.
            o.status.success() && !v.trim_start().starts_with("v2.")
        })
        .unwrap_or(false)
}

fn helm() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        let p = PathBuf::from(h);
        if runs_helm(&p) {
            return p;
        }
        panic!("HELM={} does not run (or is helm 2); run bash hack/install-helm.sh", p.display());
    }
    let cache = std::env::var_os("POPUP_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/popup-operator")));
    if let Some(c) = cache {
        let p = c.join("bin/helm");
        if runs_helm(&p) {
            return p;
        }
        tried.push(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("helm");
            if p.is_file() && runs_helm(&p) {
                return p;
            }
        }
    }
    tried.push(PathBuf::from("helm on PATH"));
    panic!("no usable helm binary found (tried $HELM, {tried:?}); run bash hack/install-helm.sh");
}

fn run_helm(args: &[&str]) -> Output {
    let helm = helm();
    Command::new(&helm).args(args).output().unwrap_or_else(|e| panic!("running {} {args:?}: {e}", helm.display()))
}

fn out_text(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn chart_arg() -> String {
    chart_dir().to_str().unwrap().to_owned()
}

fn lint(values: Option<&Path>) -> Output {
    let chart = chart_arg();
    let mut args = vec!["lint", "--strict", chart.as_str()];
    let v;
    if let Some(p) = values {
        v = p.to_str().unwrap().to_owned();
        args.extend(["-f", v.as_str()]);
    }
    run_helm(&args)
}

fn template_raw(values: Option<&Path>, extra: &[&str]) -> Output {
    let chart = chart_arg();
    let mut args = vec!["template", RELEASE, chart.as_str(), "--namespace", RELEASE_NS];
    let v;
    if let Some(p) = values {
        v = p.to_str().unwrap().to_owned();
        args.extend(["-f", v.as_str()]);
    }
    args.extend(extra);
    run_helm(&args)
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML must parse"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render(values: Option<&Path>) -> Vec<Value> {
    let o = template_raw(values, &[]);
    assert!(o.status.success(), "helm template failed:\n{}", out_text(&o));
    parse_docs(&String::from_utf8(o.stdout).unwrap())
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let v = of_kind(docs, kind);
    assert_eq!(v.len(), 1, "expected exactly one {kind}, found {}", v.len());
    v[0]
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence().unwrap_or_else(|| panic!("expected a list, got {v:?}")).iter().map(|x| s(x).to_owned()).collect()
}

type Grant = (String, String, String);

fn expected_grants() -> BTreeSet<Grant> {
    let mut set = BTreeSet::new();
    for r in RULES {
        for res in r.resources {
            for verb in r.verbs {
                set.insert((r.api_group.to_owned(), (*res).to_owned(), (*verb).to_owned()));
            }
        }
    }
    set
}

fn granted(role: &Value) -> BTreeSet<Grant> {
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("role has rules") {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "unexpected resourceNames/nonResourceURLs in {rule:?}"
        );
        for key in ["apiGroups", "resources", "verbs"] {
            assert!(rule[key].is_sequence(), "RBAC rule without a {key} list: {rule:?}");
        }
        for g in str_list(&rule["apiGroups"]) {
            for res in str_list(&rule["resources"]) {
                for verb in str_list(&rule["verbs"]) {
                    set.insert((g.clone(), res.clone(), verb));
                }
            }
        }
    }
    set
}

fn assert_rbac_matches_rules(role: &Value) {
    let want = expected_grants();
    let got = granted(role);
    let fmt = |set: Vec<&Grant>| -> String {
        set.iter().map(|(g, r, v)| format!("\n    apiGroup={g:?} resource={r:?} verb={v:?}")).collect()
    };
    let extra = fmt(got.difference(&want).collect());
    let missing = fmt(want.difference(&got).collect());
    assert!(
        extra.is_empty() && missing.is_empty(),
        "chart RBAC ({} {}) differs from popup_operator::controller::rbac::RULES\n\
         granted by the chart but not in RULES:{extra}\n\
         in RULES but not granted by the chart:{missing}\n\
         src/controller/rbac.rs is the source: edit the rules of charts/popup-operator/templates/_helpers.tpl \
         (hand-maintained, not generated) to match it",
        s(&role["kind"]),
        s(&role["metadata"]["name"]),
    );
}

fn chart_yaml() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap()
}

fn container(deploy: &Value) -> &Value {
    let cs = deploy["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(cs.len(), 1, "one container expected");
    &cs[0]
}

fn env_of(c: &Value, name: &str) -> String {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .map(|e| s(&e["value"]).to_owned())
        .unwrap_or_else(|| panic!("env {name} missing"))
}

fn assert_deployment_basics(deploy: &Value) {
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(1), "no leader election: exactly 1 replica");
    assert_eq!(s(&spec["strategy"]["type"]), "Recreate");
    assert_eq!(s(&deploy["metadata"]["namespace"]), RELEASE_NS);

    let pod = &spec["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true), "pod runAsNonRoot");
    assert_eq!(psc["runAsUser"].as_i64(), Some(65532), "pod runAsUser");
    assert_eq!(psc["fsGroup"].as_i64(), Some(65532), "pod fsGroup");
    assert_eq!(s(&psc["seccompProfile"]["type"]), "RuntimeDefault");

    let c = container(deploy);
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(str_list(&csc["capabilities"]["drop"]), vec!["ALL"]);
    assert!(csc.get("privileged").is_none_or(|p| p.as_bool() == Some(false)));

    assert_eq!(str_list(&c["args"]), vec!["run"]);
    let port =
        c["ports"].as_sequence().unwrap().iter().find(|p| p["name"].as_str() == Some("http")).expect("http port");
    assert_eq!(port["containerPort"].as_i64(), Some(8080));
    assert_eq!(env_of(c, "POPUP_HTTP_ADDR"), "0.0.0.0:8080");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(g["port"].as_str(), Some("http"), "{probe} port");
    }
    // POPUP_SELF_IMAGE must be the very image the operator runs.
    assert_eq!(env_of(c, "POPUP_SELF_IMAGE"), s(&c["image"]));
    // The operator tells each store's Redis NetworkPolicy who it is: its own namespace, and labels its
    // pods really carry (else the policy would lock the operator out of Redis).
    let ns_env =
        c["env"].as_sequence().unwrap().iter().find(|e| e["name"].as_str() == Some("POPUP_OPERATOR_NAMESPACE"));
    assert_eq!(
        ns_env.map(|e| s(&e["valueFrom"]["fieldRef"]["fieldPath"])),
        Some("metadata.namespace"),
        "POPUP_OPERATOR_NAMESPACE from the downward API"
    );
    let op = OperatorPods::new("popup-system", &env_of(c, "POPUP_OPERATOR_POD_SELECTOR"))
        .unwrap_or_else(|e| panic!("the chart's POPUP_OPERATOR_POD_SELECTOR is refused by the operator: {e}"));
    let pod_labels = spec["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in &op.labels {
        assert_eq!(pod_labels.get(k.as_str()).and_then(Value::as_str), Some(v.as_str()), "operator pods carry {k}={v}");
    }
    assert_eq!(op.labels.len(), spec["selector"]["matchLabels"].as_mapping().unwrap().len(), "the selector labels");

    // The Deployment's selector must match its pod labels.
    let sel = spec["selector"]["matchLabels"].as_mapping().unwrap();
    let labels = spec["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in sel {
        assert_eq!(labels.get(k), Some(v), "pod labels must include selector {k:?}");
    }
}

fn assert_standard_labels(docs: &[Value]) {
    let chart = chart_yaml();
    let chart_label = format!("{}-{}", s(&chart["name"]), s(&chart["version"]));
    for d in docs {
        let l = &d["metadata"]["labels"];
        let what = format!("{} {}", s(&d["kind"]), s(&d["metadata"]["name"]));
        assert_eq!(l["helm.sh/chart"].as_str(), Some(chart_label.as_str()), "{what}");
        assert_eq!(l["app.kubernetes.io/managed-by"].as_str(), Some("Helm"), "{what}");
        assert_eq!(l["app.kubernetes.io/name"].as_str(), Some("popup-operator"), "{what}");
        assert_eq!(l["app.kubernetes.io/instance"].as_str(), Some(RELEASE), "{what}");
        assert_eq!(l["app.kubernetes.io/version"].as_str(), Some(s(&chart["appVersion"])), "{what}");
    }
}

#[test]
fn helm_lint_strict_default_and_custom_values() {
    for values in [None, Some(values_file("custom.yaml"))] {
        let o = lint(values.as_deref());
        assert!(o.status.success(), "helm lint --strict ({values:?}) failed:\n{}", out_text(&o));
    }
}

#[test]
fn chart_and_image_versions_match_crate() {
    let chart = chart_yaml();
    assert_eq!(s(&chart["apiVersion"]), "v2");
    assert_eq!(s(&chart["version"]), env!("CARGO_PKG_VERSION"), "Chart version");
    assert_eq!(s(&chart["appVersion"]), env!("CARGO_PKG_VERSION"), "Chart appVersion");

    let docs = render(None);
    let c = container(one(&docs, "Deployment"));
    let want = format!("{DEFAULT_REPO}:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(s(&c["image"]), want, "default image tag must be the appVersion");
    assert_eq!(env_of(c, "POPUP_SELF_IMAGE"), want);
}

#[test]
fn default_values_render_cluster_scoped_operator() {
    let docs = render(None);
    assert_standard_labels(&docs);

    let deploy = one(&docs, "Deployment");
    assert_deployment_basics(deploy);
    let c = container(deploy);
    assert_eq!(env_of(c, "WATCH_NAMESPACE"), "");
    assert_eq!(env_of(c, "RUST_LOG"), "info");
    assert_eq!(env_of(c, "POPUP_LOG_FORMAT"), "json");
    assert_eq!(s(&c["imagePullPolicy"]), "IfNotPresent");
    assert!(deploy["spec"]["template"]["spec"].get("imagePullSecrets").is_none());

    // Cluster mode: ClusterRole + ClusterRoleBinding, no namespaced RBAC.
    assert!(of_kind(&docs, "Role").is_empty() && of_kind(&docs, "RoleBinding").is_empty());
    let role = one(&docs, "ClusterRole");
    assert_rbac_matches_rules(role);
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(s(&binding["roleRef"]["kind"]), "ClusterRole");
    assert_eq!(s(&binding["roleRef"]["name"]), s(&role["metadata"]["name"]));

    let sa = one(&docs, "ServiceAccount");
    let subj = &binding["subjects"][0];
    assert_eq!(s(&subj["kind"]), "ServiceAccount");
    assert_eq!(s(&subj["name"]), s(&sa["metadata"]["name"]));
    assert_eq!(s(&subj["namespace"]), RELEASE_NS);
    assert_eq!(s(&deploy["spec"]["template"]["spec"]["serviceAccountName"]), s(&sa["metadata"]["name"]));

    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(8080));
    assert_eq!(s(&svc["spec"]["ports"][0]["targetPort"]), "http");
    assert!(of_kind(&docs, "ServiceMonitor").is_empty(), "ServiceMonitor is opt-in");
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty(), "CRDs only via crds/");
}

#[test]
fn custom_values_render_namespaced_operator() {
    let docs = render(Some(&values_file("custom.yaml")));
    assert_standard_labels(&docs);

    let deploy = one(&docs, "Deployment");
    assert_deployment_basics(deploy);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(deploy);
    let image = "registry.example.com/acme/popup-operator:0.1.0-custom";
    assert_eq!(s(&c["image"]), image);
    assert_eq!(env_of(c, "POPUP_SELF_IMAGE"), image);
    assert_eq!(s(&c["imagePullPolicy"]), "Always");
    assert_eq!(env_of(c, "WATCH_NAMESPACE"), "shop");
    assert_eq!(env_of(c, "RUST_LOG"), "popup_operator=debug,kube=info");
    assert_eq!(env_of(c, "POPUP_LOG_FORMAT"), "text");
    assert_eq!(s(&pod["imagePullSecrets"][0]["name"]), "regcred");
    assert_eq!(s(&pod["nodeSelector"]["kubernetes.io/arch"]), "amd64");
    assert_eq!(s(&pod["tolerations"][0]["key"]), "dedicated");
    assert_eq!(s(&pod["serviceAccountName"]), "popup-sa");
    let tmeta = &deploy["spec"]["template"]["metadata"];
    assert_eq!(s(&tmeta["labels"]["team"]), "popup");
    assert_eq!(s(&tmeta["annotations"]["example.com/owner"]), "team-popup");

    // Namespaced mode: Role + RoleBinding in the watched namespace only.
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "watchNamespace set must not create cluster-wide RBAC"
    );
    let role = one(&docs, "Role");
    assert_eq!(s(&role["metadata"]["namespace"]), "shop");
    assert_rbac_matches_rules(role);
    let binding = one(&docs, "RoleBinding");
    assert_eq!(s(&binding["metadata"]["namespace"]), "shop");
    assert_eq!(s(&binding["roleRef"]["kind"]), "Role");
    assert_eq!(s(&binding["roleRef"]["name"]), s(&role["metadata"]["name"]));
    assert_eq!(s(&binding["subjects"][0]["name"]), "popup-sa");
    assert_eq!(s(&binding["subjects"][0]["namespace"]), RELEASE_NS);

    let sa = one(&docs, "ServiceAccount");
    assert_eq!(s(&sa["metadata"]["name"]), "popup-sa");
    assert_eq!(s(&sa["metadata"]["annotations"]["example.com/sa"]), "yes");

    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(9090));
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(s(&sm["apiVersion"]), "monitoring.coreos.com/v1");
    assert_eq!(s(&sm["metadata"]["labels"]["release"]), "kube-prometheus-stack");
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(s(&ep["port"]), "http");
    assert_eq!(s(&ep["path"]), "/metrics");
    assert_eq!(s(&ep["interval"]), "15s");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
        "ServiceMonitor must select the metrics Service"
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(svc["metadata"]["labels"].get(k), Some(v));
    }
}

#[test]
fn watch_namespaces_render_a_role_in_each_and_nothing_cluster_wide() {
    let o = template_raw(None, &["--set", "watchNamespaces={team-a,team-b}"]);
    assert!(o.status.success(), "{}", out_text(&o));
    let docs = parse_docs(&String::from_utf8(o.stdout).unwrap());
    assert_standard_labels(&docs);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "watchNamespaces must not create cluster-wide RBAC"
    );
    let sa = s(&one(&docs, "ServiceAccount")["metadata"]["name"]).to_owned();
    for kind in ["Role", "RoleBinding"] {
        let namespaces: Vec<&str> = of_kind(&docs, kind).iter().map(|d| s(&d["metadata"]["namespace"])).collect();
        assert_eq!(namespaces, ["team-a", "team-b"], "one {kind} per watched namespace");
    }
    for role in of_kind(&docs, "Role") {
        assert_rbac_matches_rules(role);
        let ns = s(&role["metadata"]["namespace"]);
        let binding = of_kind(&docs, "RoleBinding")
            .into_iter()
            .find(|b| s(&b["metadata"]["namespace"]) == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(s(&binding["roleRef"]["kind"]), "Role");
        assert_eq!(s(&binding["roleRef"]["name"]), s(&role["metadata"]["name"]));
        assert_eq!(s(&binding["subjects"][0]["name"]), sa);
        assert_eq!(
            s(&binding["subjects"][0]["namespace"]),
            RELEASE_NS,
            "the ServiceAccount lives in the release namespace"
        );
    }
    let deploy = one(&docs, "Deployment");
    assert_deployment_basics(deploy);
    // The binary reads the chart's WATCH_NAMESPACE as exactly these namespaces.
    let env = env_of(container(deploy), "WATCH_NAMESPACE");
    assert_eq!(env, "team-a,team-b");
    assert_eq!(WatchScope::from_flags(&[env]), Ok(WatchScope::Namespaces(vec!["team-a".into(), "team-b".into()])));
    // And the other modes' values mean what the chart's RBAC grants.
    let env_for = |extra: &[&str]| {
        let o = template_raw(None, extra);
        assert!(o.status.success(), "{}", out_text(&o));
        env_of(container(one(&parse_docs(&String::from_utf8(o.stdout).unwrap()), "Deployment")), "WATCH_NAMESPACE")
    };
    assert_eq!(WatchScope::from_flags(&[env_for(&[])]), Ok(WatchScope::Cluster));
    assert_eq!(
        WatchScope::from_flags(&[env_for(&["--set", "watchNamespace=shop"])]),
        Ok(WatchScope::Namespaces(vec!["shop".into()]))
    );

    // Both values at once is ambiguous: refused, naming both.
    let o = template_raw(None, &["--set", "watchNamespace=shop", "--set", "watchNamespaces={team-a}"]);
    assert!(!o.status.success(), "{}", out_text(&o));
    assert!(out_text(&o).contains("set watchNamespaces (a list) or watchNamespace"), "{}", out_text(&o));
    // Names that are not namespaces, and repeats, are refused by the schema.
    for bad in ["watchNamespaces={Team_A}", "watchNamespaces={a,a}"] {
        let o = template_raw(None, &["--set", bad]);
        assert!(!o.status.success() && out_text(&o).contains("watchNamespaces"), "{bad}: {}", out_text(&o));
    }
}

/// docs/security.md lists exactly the rules the operator is granted, each with its verbs.
#[test]
fn security_doc_lists_every_rbac_rule() {
    let doc = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let section = doc
        .split("### The rules and why each exists")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("docs/security.md has a section \"### The rules and why each exists\"");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    for r in RULES {
        let group = if r.api_group.is_empty() { "core" } else { r.api_group };
        let resources = r.resources.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ");
        let row = format!("| `{group}` | {resources} | {} |", r.verbs.join(", "));
        assert!(
            rows.iter().any(|l| l.starts_with(&row)),
            "docs/security.md has no row starting with {row:?}: its RBAC table is hand-maintained (not generated); edit it to match src/controller/rbac.rs"
        );
    }
    assert_eq!(
        rows.len(),
        RULES.len(),
        "docs/security.md's RBAC table has rows src/controller/rbac.rs does not (edit the table by hand): {rows:#?}"
    );
}

#[test]
fn bad_values_are_rejected_by_schema() {
    for (file, needle) in [
        ("bad-logformat.yaml", "logFormat"),
        ("bad-unknown-key.yaml", "replicas"),
        ("bad-replicas.yaml", "replicaCount"),
    ] {
        let p = values_file(file);
        for (what, o) in [("lint", lint(Some(&p))), ("template", template_raw(Some(&p), &[]))] {
            let text = out_text(&o);
            assert!(!o.status.success(), "helm {what} accepted {file}:\n{text}");
            assert!(
                text.contains("schema") && text.contains(needle),
                "helm {what} rejected {file}, but not via values.schema.json ({needle}):\n{text}"
            );
        }
    }
    // serviceMonitor without the metrics Service is a template-time error.
    let o =
        template_raw(None, &["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"]);
    assert!(!o.status.success(), "{}", out_text(&o));
    assert!(out_text(&o).contains("requires metrics.service.enabled"), "{}", out_text(&o));
}

#[test]
fn chart_crds_are_a_byte_copy_of_repo_crds() {
    let src = root().join("crds");
    let dst = chart_dir().join("crds");
    let list = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect()
    };
    let (a, b) = (list(&src), list(&dst));
    assert!(a.contains(CRD_FILE), "crds/{CRD_FILE} missing");
    assert_eq!(a, b, "crds/ and the chart's crds/ differ in files; run `bash hack/regen.sh`");
    for f in &a {
        let x = std::fs::read(src.join(f)).unwrap();
        let y = std::fs::read(dst.join(f)).unwrap();
        assert!(x == y, "charts/popup-operator/crds/{f} drifted from crds/{f}; run `bash hack/regen.sh`");
    }

    // And helm ships it with --include-crds.
    let o = template_raw(None, &["--include-crds"]);
    assert!(o.status.success(), "{}", out_text(&o));
    let docs = parse_docs(&String::from_utf8(o.stdout).unwrap());
    let crd = one(&docs, "CustomResourceDefinition");
    assert_eq!(s(&crd["metadata"]["name"]), "popupstores.popup.dev");
    assert_eq!(s(&crd["spec"]["group"]), "popup.dev");
    assert_eq!(s(&crd["spec"]["names"]["kind"]), "PopUpStore");
    assert_eq!(s(&crd["spec"]["scope"]), "Namespaced");
}

#[test]
fn values_schema_covers_values_yaml() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap())
            .expect("values.schema.json is valid JSON");
    assert_eq!(schema["additionalProperties"], serde_json::Value::Bool(false));
    let props = schema["properties"].as_object().expect("schema properties");
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap()).unwrap();
    for (k, _) in values.as_mapping().unwrap() {
        assert!(props.contains_key(s(k)), "values.yaml key {k:?} missing from values.schema.json");
    }
    let enums = |p: &str| -> Vec<String> {
        schema.pointer(p).and_then(|v| v.as_array()).unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(enums("/properties/logFormat/enum"), ["text", "json"]);
    assert_eq!(enums("/properties/image/properties/pullPolicy/enum"), ["Always", "IfNotPresent", "Never"]);
}
