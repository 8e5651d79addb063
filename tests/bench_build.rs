//! What building one store's children costs the operator: the build stage (`render::build_children`,
//! through `controller::render_offline`, which also makes the store's passwords as `render` does) of a
//! store with every component, timed over many stores. A benchmark, run by hand (docs/benchmarks.md):
//!
//!     cargo test --release --test bench_build -- --ignored --nocapture

use std::time::Instant;

use popup_operator::controller::{self, Config};
use popup_operator::crd::PopUpStore;

#[test]
#[ignore = "benchmark: run by hand, see docs/benchmarks.md"]
fn build_cost_per_store() {
    let config = Config {
        operator_image: "popup.local/popup-operator:bench".into(),
        redis_address_template: None,
        operator_pods: None,
        rotation_grace: controller::users::ROTATION_GRACE,
        grafana_address_template: None,
    };
    for example in ["popup.yaml", "popup-full.yaml"] {
        let text = std::fs::read_to_string(format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // The file's first document is the store (popup-full.yaml also holds its password Secret).
        let first = serde_yaml::Deserializer::from_str(&text).next().unwrap();
        let mut store: PopUpStore = serde::Deserialize::deserialize(first).unwrap();
        store.metadata.namespace.get_or_insert_with(|| "bench".into());
        let validated = popup_operator::render::validate(&store).unwrap();
        let children = controller::render_offline(&config, &validated);
        assert!(children.secrets.len() >= 4, "a store with every component");
        let rounds = 2000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(controller::render_offline(&config, std::hint::black_box(&validated)));
        }
        let per_store = start.elapsed() / rounds;
        println!("{example}: {per_store:?} per store ({rounds} builds, wall time on one core)");
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(popup_operator::render::grafana::dashboard_json(std::hint::black_box(&validated)));
        }
        println!("  of which the store's copy of the Grafana dashboard: {:?}", start.elapsed() / rounds);
    }
}
