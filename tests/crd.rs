//! The CRD and the examples: generated file in sync, examples valid and fully understood, CEL rules.

use popup_operator::crd::{CRD_FILE_HEADER, PopUpStore, crd_file, crd_yaml, parse_stores};
use popup_operator::render;
use serde_json::{Value, json};

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/popupstores.popup.dev.yaml");

#[test]
fn crd_file_matches_the_rust_types() {
    let on_disk = std::fs::read_to_string(CRD_FILE).expect("crds/popupstores.popup.dev.yaml exists");
    assert!(
        on_disk.starts_with(CRD_FILE_HEADER) && on_disk == crd_file(),
        "crds/popupstores.popup.dev.yaml is out of date (or lost its header): run `bash hack/regen.sh`"
    );
}

#[test]
fn crd_names_and_printer_columns() {
    let crd: Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    assert_eq!(crd["metadata"]["name"], "popupstores.popup.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["popup"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Ready", "Engine", "Available", "Completed", "Age"]);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["engine"]["enum"], json!(["gears", "triggers", "native"]));
    assert_eq!(spec["stock"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(spec["stock"]["default"], 10000);
    assert_eq!(spec["processing"]["properties"]["batchSize"]["default"], 3);
    assert_eq!(spec["simulator"]["properties"]["maxArrivalMillis"]["default"], 100);
    assert_eq!(spec["grafana"]["properties"]["serviceType"]["enum"], json!(["ClusterIP", "NodePort", "LoadBalancer"]));
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every key the example sets must survive a parse → serialize round trip: a misspelt or unknown
/// field would silently vanish otherwise.
fn assert_contained(original: &Value, parsed: &Value, path: &str) {
    match original {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}.{k}");
                assert!(parsed.get(k).is_some(), "{p} is not a field of PopUpStore");
                assert_contained(v, &parsed[k], &p);
            }
        }
        other => assert_eq!(
            serde_json::to_string(other).unwrap().trim_matches('"'),
            serde_json::to_string(parsed).unwrap().trim_matches('"'),
            "{path}"
        ),
    }
}

#[test]
fn examples_round_trip_through_the_types_and_validate() {
    for name in ["popup.yaml", "popup-full.yaml"] {
        let text = example(name);
        let (stores, _) = parse_stores(&text).unwrap();
        assert_eq!(stores.len(), 1, "{name}");
        let original: Value = serde_yaml::from_str(text.split("\n---").next().unwrap()).unwrap();
        assert_contained(&original["spec"], &serde_json::to_value(&stores[0].spec).unwrap(), &format!("{name}: spec"));
        let v = render::validate(&stores[0]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(PopUpStore::validate_cel(&stores[0]).is_ok(), "{name}: CEL rules reject the example");
        let _ = v;
    }
    let (full, others) = parse_stores(&example("popup-full.yaml")).unwrap();
    assert_eq!(others, ["document 2: v1 Secret"]);
    // The full example really sets every spec field (no Option left at None).
    let spec = serde_json::to_value(&full[0].spec).unwrap();
    for section in ["redis", "processing", "grafana", "simulator"] {
        assert!(spec[section].as_object().unwrap().len() >= 3, "{section}");
    }
    assert_eq!(spec["redis"].as_object().unwrap().len(), 4, "redis: image, resources, storage, passwordSecretRef");
    assert_eq!(spec["networkPolicy"]["enabled"], true, "networkPolicy");
    let original: Value = serde_yaml::from_str(example("popup-full.yaml").split("\n---").next().unwrap()).unwrap();
    for section in ["redis", "processing", "grafana", "simulator", "networkPolicy"] {
        assert!(original["spec"][section].is_object(), "popup-full.yaml does not set spec.{section}");
    }
}

/// A store called `name` with `spec`, as the API server would hand it to the CEL rules.
fn store(spec: Value, name: &str) -> PopUpStore {
    serde_json::from_value(
        json!({"apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

#[test]
fn cel_rules_reject_what_the_api_server_would() {
    let ok = store(json!({}), "shop");
    assert!(PopUpStore::validate_cel(&ok).is_ok());

    let long = store(json!({}), &"x".repeat(41));
    let err = PopUpStore::validate_cel(&long).unwrap_err().to_string();
    assert!(err.contains("at most 40 characters"), "{err}");

    let bad_size = store(json!({"redis": {"storage": {"size": "lots"}}}), "shop");
    let err = PopUpStore::validate_cel(&bad_size).unwrap_err().to_string();
    assert!(err.contains("spec.redis.storage.size"), "{err}");

    let empty_image = store(json!({"redis": {"image": ""}}), "shop");
    assert!(PopUpStore::validate_cel(&empty_image).unwrap_err().to_string().contains("spec.redis.image"));

    // Transition rules: the engine and the storage are fixed once created.
    let triggers = store(json!({"engine": "triggers"}), "shop");
    let err = triggers.validate_cel_update(&ok).unwrap_err().to_string();
    assert!(err.contains("spec.engine cannot change"), "{err}");
    let with_storage = store(json!({"redis": {"storage": {"size": "1Gi"}}}), "shop");
    let err = with_storage.validate_cel_update(&ok).unwrap_err().to_string();
    assert!(err.contains("cannot be added or removed"), "{err}");
    let bigger = store(json!({"redis": {"storage": {"size": "2Gi"}}}), "shop");
    let err = bigger.validate_cel_update(&with_storage).unwrap_err().to_string();
    assert!(err.contains("spec.redis.storage cannot change"), "{err}");
    assert!(with_storage.validate_cel_update(&with_storage).is_ok());
}

#[test]
fn render_prints_valid_kubernetes_objects_for_both_examples() {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core, networking::v1 as net};
    for name in ["popup.yaml", "popup-full.yaml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_popup-operator"))
            .args(["render", "-f", &format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut kinds = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap().to_string();
            // Typed parse, then compare: a field Kubernetes does not know would be dropped and differ.
            let typed = match kind.as_str() {
                "Secret" => serde_json::to_value(serde_json::from_value::<core::Secret>(v.clone()).unwrap()),
                "ConfigMap" => serde_json::to_value(serde_json::from_value::<core::ConfigMap>(v.clone()).unwrap()),
                "Service" => serde_json::to_value(serde_json::from_value::<core::Service>(v.clone()).unwrap()),
                "StatefulSet" => serde_json::to_value(serde_json::from_value::<apps::StatefulSet>(v.clone()).unwrap()),
                "Deployment" => serde_json::to_value(serde_json::from_value::<apps::Deployment>(v.clone()).unwrap()),
                "Job" => serde_json::to_value(serde_json::from_value::<batch::Job>(v.clone()).unwrap()),
                "NetworkPolicy" => {
                    serde_json::to_value(serde_json::from_value::<net::NetworkPolicy>(v.clone()).unwrap())
                }
                other => panic!("{name}: unexpected kind {other}"),
            }
            .unwrap();
            assert_eq!(typed, v, "{name}: {kind} {}", v["metadata"]["name"]);
            kinds.push(kind);
        }
        for k in ["Secret", "ConfigMap", "Service", "NetworkPolicy", "StatefulSet", "Deployment", "Job"] {
            assert!(kinds.iter().any(|x| x == k), "{name}: no {k} rendered");
        }
    }
}

/// `popup-operator render -f` of a file holding `text` (the path it had, and what the command did).
fn render_text(name: &str, text: &str) -> (std::path::PathBuf, std::process::Output) {
    let dir = std::env::temp_dir().join(format!("popup-render-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popup-operator"))
        .args(["render", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (file, out)
}

#[test]
fn render_reports_a_bad_field_by_name() {
    let (_, out) = render_text(
        "bad",
        "apiVersion: popup.dev/v1alpha1\nkind: PopUpStore\nmetadata: {name: x}\nspec: {processing: {batchSize: 0}}\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.processing.batchSize"), "{err}");
}

#[test]
fn render_refuses_deeply_nested_yaml_before_parsing_it() {
    // 100,000 nested brackets: serde_yaml alone takes over a minute to say "recursion limit exceeded";
    // the pre-scan refuses the file at its line, naming the limit, before the parser sees it.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (file, out) = render_text(
        "deep",
        &format!("apiVersion: popup.dev/v1alpha1\nkind: PopUpStore\nmetadata: {{name: x}}\nspec: {deep}\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let wanted =
        format!("{}: line 4: brackets nested more than {} deep", file.display(), popup_operator::yaml::MAX_FLOW_DEPTH);
    assert!(err.contains(&wanted), "{err}");
    assert!(!err.contains("recursion limit"), "the parser ran: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn parse_stores_reports_every_problem_with_its_path() {
    let text = "apiVersion: popup.dev/v1alpha1\nkind: PopUpStore\nmetadata: {name: shop}\nspec:\n  engine: bogus\n  stock: many\n  processing: {batchSize: 0, replicaz: 2}\n  redis: {resources: {limits: {memory: lots}}, image: \"\"}\n  grafana: {sidecar: {labelValue: \"a b\"}}\n---\napiVersion: popup.dev/v1alpha1\nkind: PopUpStore\nmetadata: {name: my.store}\nspec: {}\n";
    let err = parse_stores(text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    for wanted in [
        "document 1 (shop): spec.engine: unknown value \"bogus\", expected one of gears, triggers, native",
        "document 1 (shop): spec.stock: must be an integer (got a string)",
        "document 1 (shop): spec.processing.batchSize: must be between 1 and 10000, got 0",
        "document 1 (shop): spec.processing.replicaz: unknown field; the fields here are batchSize, metricsIntervalSeconds, replicas",
        "document 1 (shop): spec.redis.resources.limits: every value must be a non-negative quantity",
        "document 1 (shop): spec.redis.image must be an image reference",
        "document 1 (shop): spec.grafana.sidecar.labelValue must be a label value",
        "document 2 (my.store): metadata.name must start with a lowercase letter",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(wanted)), "missing {wanted:?} in:\n{err}");
    }
    assert_eq!(lines.len(), 8, "one line per problem:\n{err}");

    // What the schema does not cover still names its path.
    let err = parse_stores("apiVersion: popup.dev/v1alpha1\nkind: PopUpStore\nmetadata: {name: x, labels: {a: [1]}}\n")
        .unwrap_err();
    assert!(err.contains("metadata.labels.a: invalid type"), "{err}");
    let err = parse_stores("apiVersion: popup.dev/v1\nkind: PopUpStore\nmetadata: {name: x}\n").unwrap_err();
    assert!(err.contains("apiVersion") && err.contains("popup.dev/v1alpha1"), "{err}");
}

#[test]
fn new_cel_rules_reject_bad_quantities_names_and_images() {
    let cases = [
        (json!({"redis": {"resources": {"requests": {"cpu": "lots"}}}}), "spec.redis.resources.requests"),
        (json!({"simulator": {"resources": {"limits": {"memory": "-1Mi"}}}}), "spec.simulator.resources.limits"),
        (json!({"grafana": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}), "must not exceed"),
        (json!({"grafana": {"resources": {"claims": [{"name": "x"}]}}}), "spec.grafana.resources.claims"),
        (json!({"redis": {"image": "a b"}}), "spec.redis.image"),
        (json!({"redis": {"passwordSecretRef": {"name": "UPPER"}}}), "spec.redis.passwordSecretRef.name"),
        (json!({"redis": {"passwordSecretRef": {"name": "ok", "key": "a/b"}}}), "spec.redis.passwordSecretRef.key"),
        (json!({"grafana": {"sidecar": {"dashboardLabel": "a b"}}}), "spec.grafana.sidecar.dashboardLabel"),
    ];
    for (spec, wanted) in cases {
        let err = PopUpStore::validate_cel(&store(spec.clone(), "shop")).expect_err(&spec.to_string()).to_string();
        assert!(err.contains(wanted), "{spec}: {err}");
    }
    let err = PopUpStore::validate_cel(&store(json!({}), "9lives")).unwrap_err().to_string();
    assert!(err.contains("DNS-1035"), "{err}");
    let good =
        json!({"redis": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}});
    assert!(PopUpStore::validate_cel(&store(good, "shop")).is_ok());
}
