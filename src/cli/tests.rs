//! Where the command line meets the store: the bounds and defaults of every number a store sets, as
//! the CRD, the operator's own check and the command line take them (`limits`).

use clap::Parser;

use super::{Cli, Command};
use crate::crd::{self, Engine, PopUpStore, PopUpStoreSpec};
use crate::limits::{self, FloatBounds};
use crate::render;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("popup-operator").chain(args.iter().copied())).map(|c| c.command)
}

/// The value a bounded flag was parsed into.
fn flag_value(command: &Command, flag: &str) -> f64 {
    match (command, flag) {
        (Command::Process(a), "--batch-size") => a.settings.batch_size.into(),
        (Command::Process(a), "--metrics-interval-seconds") => a.settings.metrics_interval_seconds,
        (Command::Simulate(a), "--stock") => a.stock as f64,
        (Command::Simulate(a), "--customers") => a.customers as f64,
        (Command::Simulate(a), "--max-arrival-millis") => a.max_arrival_millis as f64,
        (Command::Simulate(a), "--max-order-delay-millis") => a.max_order_delay_millis as f64,
        (Command::Simulate(a), "--rate") => a.rate.unwrap_or(f64::NAN),
        _ => panic!("no bounded flag {flag} in this command"),
    }
}

/// How the command line takes one bounded field of the spec.
enum Flag {
    /// No flag sets it, for the reason given.
    None(&'static str),
    /// `(subcommand, flag)` takes exactly the store's bounds.
    Same(&'static str, &'static str),
    /// `(subcommand, flag)` takes wider bounds on purpose: a constant of `limits::cli`, which says why.
    Wider(&'static str, &'static str, FloatBounds),
}

fn float(b: limits::Bounds) -> FloatBounds {
    FloatBounds { min: b.min as f64, max: b.max as f64 }
}

/// Every bounded field of the spec and its flag. `bounds_agree_for_every_field` fails for a field the
/// CRD bounds and this list leaves out.
fn flags() -> Vec<(&'static str, Flag)> {
    vec![
        ("spec.stock", Flag::Same("simulate", "--stock")),
        ("spec.saleRun", Flag::None("a run only names a sale; its Job joins the sale by id (--join-sale)")),
        ("spec.processing.batchSize", Flag::Same("process", "--batch-size")),
        (
            "spec.processing.metricsIntervalSeconds",
            Flag::Wider("process", "--metrics-interval-seconds", limits::cli::METRICS_INTERVAL_SECONDS),
        ),
        ("spec.processing.replicas", Flag::None("the processor Deployment's replicas, not a flag")),
        ("spec.simulator.customers", Flag::Same("simulate", "--customers")),
        (
            "spec.simulator.maxArrivalMillis",
            Flag::Wider("simulate", "--max-arrival-millis", float(limits::cli::DELAY_MILLIS)),
        ),
        (
            "spec.simulator.maxOrderDelayMillis",
            Flag::Wider("simulate", "--max-order-delay-millis", float(limits::cli::DELAY_MILLIS)),
        ),
        ("spec.simulator.ratePerSecond", Flag::Wider("simulate", "--rate", limits::cli::RATE_PER_SECOND)),
    ]
}

/// `spec.a.b` of the CRD's schema, and every bounded field's path below `node`.
fn schema_bounds(node: &serde_json::Value, path: &str, out: &mut Vec<(String, Option<f64>, Option<f64>)>) {
    let (min, max) = (node.get("minimum").and_then(|v| v.as_f64()), node.get("maximum").and_then(|v| v.as_f64()));
    if min.is_some() || max.is_some() {
        out.push((path.to_string(), min, max));
    }
    for (name, child) in node.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
        schema_bounds(child, &format!("{path}.{name}"), out);
    }
}

/// The default spec with every optional number set too.
fn full_spec() -> PopUpStoreSpec {
    let mut spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.simulator.rate_per_second = Some(500);
    spec
}

/// A store whose field at `path` holds `value`, or `None` where the field's type cannot hold it.
fn store_with_value(path: &str, value: i128) -> Option<PopUpStore> {
    let mut spec = serde_json::to_value(full_spec()).unwrap();
    let pointer = format!("/{}", path.trim_start_matches("spec.").replace('.', "/"));
    *spec.pointer_mut(&pointer).unwrap_or_else(|| panic!("{path}: not in a spec with every field set")) =
        serde_json::Value::Number(serde_json::Number::from_i128(value)?);
    let spec: PopUpStoreSpec = serde_json::from_value(spec).ok()?;
    Some(render::tests::store_with(Engine::Native, |s| *s = spec))
}

#[test]
fn bounds_agree_for_every_field() {
    let mut in_crd = Vec::new();
    schema_bounds(crd::schema_json().pointer("/properties/spec").unwrap(), "spec", &mut in_crd);
    let checked = render::bounded_numbers(&full_spec());
    let flags = flags();
    let names = |v: Vec<&str>| {
        let mut v: Vec<String> = v.into_iter().map(String::from).collect();
        v.sort();
        v
    };
    let crd_fields = names(in_crd.iter().map(|(p, _, _)| p.as_str()).collect());
    assert_eq!(crd_fields, names(checked.iter().map(|n| n.field).collect()), "render::validation checks them all");
    assert_eq!(crd_fields, names(flags.iter().map(|(p, _)| *p).collect()), "flags() lists them all");

    for n in &checked {
        let (field, b) = (n.field, n.bounds);
        let (_, min, max) = in_crd.iter().find(|(p, _, _)| p == field).unwrap();
        assert_eq!((*min, *max), (Some(b.min as f64), Some(b.max as f64)), "{field}: the CRD's bounds are limits'");

        // The operator's check takes the bounds and refuses one beyond (where the type can hold it).
        for inside in [b.min, b.max] {
            let store = store_with_value(field, inside.into()).unwrap();
            assert!(render::validate(&store).is_ok(), "{field} = {inside} is refused");
        }
        for outside in [i128::from(b.min) - 1, i128::from(b.max) + 1] {
            if let Some(store) = store_with_value(field, outside) {
                let errors = render::validate(&store).unwrap_err();
                assert_eq!(errors.fields(), [field], "{field} = {outside}");
            }
        }

        // Whatever a store may hold, its Job or processor may pass to the command line.
        let (_, flag) = flags.iter().find(|(p, _)| *p == field).unwrap();
        let (sub, name, cli_bounds) = match flag {
            Flag::None(why) => {
                assert!(!why.is_empty());
                continue;
            }
            Flag::Same(sub, name) => (*sub, *name, float(b)),
            Flag::Wider(sub, name, wider) => {
                assert!(wider.min <= b.min as f64 && b.max as f64 <= wider.max, "{field}: {name} takes it all");
                assert!(wider.min < b.min as f64 || wider.max > b.max as f64, "{field}: {name} is not wider");
                (*sub, *name, *wider)
            }
        };
        for inside in [b.min as f64, b.max as f64, cli_bounds.min, cli_bounds.max] {
            let arg = format!("{name}={inside}");
            let parsed = parse(&[sub, &arg]).unwrap_or_else(|e| panic!("{sub} {arg}: {e}"));
            assert_eq!(flag_value(&parsed, name), inside, "{sub} {arg}");
        }
        let below =
            if cli_bounds.min > 0.0 && cli_bounds.min < 1.0 { cli_bounds.min / 2.0 } else { cli_bounds.min - 1.0 };
        for outside in [below, cli_bounds.max + 1.0] {
            assert!(parse(&[sub, &format!("{name}={outside}")]).is_err(), "{sub} {name}={outside} is taken");
        }
    }
}

#[test]
fn defaults_agree_or_differ_as_named() {
    let spec = serde_json::to_value(serde_json::from_value::<PopUpStoreSpec>(serde_json::json!({})).unwrap()).unwrap();
    let crd_default = |pointer: &str| spec.pointer(pointer).and_then(|v| v.as_f64());
    let process = parse(&["process"]).unwrap();
    let simulate = parse(&["simulate"]).unwrap();
    // (the spec's field, its command's parse with no flags, the flag, the CLI's default where it differs)
    let cases = [
        ("/processing/batchSize", &process, "--batch-size", None),
        ("/processing/metricsIntervalSeconds", &process, "--metrics-interval-seconds", None),
        ("/simulator/customers", &simulate, "--customers", None),
        ("/simulator/maxArrivalMillis", &simulate, "--max-arrival-millis", None),
        ("/simulator/maxOrderDelayMillis", &simulate, "--max-order-delay-millis", None),
        ("/stock", &simulate, "--stock", Some(limits::cli::DEFAULT_STOCK as f64)),
    ];
    for (pointer, command, flag, differs) in cases {
        let store = crd_default(pointer).unwrap_or_else(|| panic!("{pointer} has a default"));
        assert_eq!(flag_value(command, flag), differs.unwrap_or(store), "{flag} and spec{pointer}");
    }
    assert_eq!(crd_default("/stock"), Some(limits::DEFAULT_STOCK as f64));
    assert_eq!(crd_default("/processing/replicas"), Some(limits::DEFAULT_REPLICAS.into()));
    assert_eq!(crd_default("/saleRun"), Some(0.0));
    let Command::Simulate(simulate) = simulate else { unreachable!() };
    assert_eq!((spec.pointer("/simulator/ratePerSecond"), simulate.rate), (None, None), "random arrivals");
}

// ---- the pods' command lines ---------------------------------------------------------------------------

/// The arguments of every container the operator runs from its own image, in a store's children.
fn operator_commands(children: &render::Children) -> Vec<Vec<String>> {
    let image = render::tests::inputs().operator_image;
    let pods = children.deployments.iter().filter_map(|d| d.spec.as_ref()?.template.spec.clone());
    let job = children.simulator_job.iter().filter_map(|j| j.spec.as_ref()?.template.spec.clone());
    pods.chain(job)
        .flat_map(|pod| pod.containers)
        .filter(|c| c.image.as_deref() == Some(image.as_str()))
        .map(|c| c.args.expect("the operator's containers name their subcommand"))
        .collect()
}

/// The password comes from the environment (`REDIS_PASSWORD`), which the test's own may set.
fn without_password(mut redis: crate::flags::RedisArgs) -> crate::flags::RedisArgs {
    redis.password = None;
    redis
}

#[test]
fn every_rendered_command_line_parses_back_into_the_store_settings() {
    type Edit = fn(&mut PopUpStoreSpec);
    let every_setting: Edit = |s| {
        s.stock = 4321;
        s.processing.batch_size = 17;
        s.processing.metrics_interval_seconds = 9;
        s.simulator.customers = 55;
        s.simulator.max_arrival_millis = limits::DELAY_MILLIS.max as u32;
        s.simulator.max_order_delay_millis = 0;
        s.simulator.rate_per_second = Some(limits::RATE_PER_SECOND.max as u32);
    };
    for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
        for edit in [(|_| {}) as Edit, every_setting] {
            let (store, children) = render::tests::build(engine, edit);
            let commands = operator_commands(&children);
            assert_eq!(commands.len(), if engine == Engine::Native { 2 } else { 1 }, "{engine}: {commands:?}");
            for argv in commands {
                let what = format!("{engine}: {argv:?}");
                let parsed = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>())
                    .unwrap_or_else(|e| panic!("{what} does not parse: {e}"));
                match parsed {
                    Command::Simulate(mut a) => {
                        a.redis = without_password(a.redis);
                        let s = &store.spec.simulator;
                        assert_eq!(a.redis.url, render::acl::url(&store, render::acl::Role::Simulator), "{what}");
                        assert_eq!(a.join_sale, Some(render::simulator::settings_hash(&store)), "{what}");
                        assert_eq!(a.customers, s.customers, "{what}");
                        assert_eq!(a.max_arrival_millis, u64::from(s.max_arrival_millis), "{what}");
                        assert_eq!(a.max_order_delay_millis, u64::from(s.max_order_delay_millis), "{what}");
                        assert_eq!(a.rate, s.rate_per_second.map(f64::from), "{what}");
                        assert!(!a.reset, "{what}: the operator started the sale");
                        assert_eq!(a, render::simulator::args(&store), "{what}: the flags the builder meant");
                    }
                    Command::Process(mut a) => {
                        a.redis = without_password(a.redis);
                        let p = &store.spec.processing;
                        assert_eq!(a.redis.url, render::acl::url(&store, render::acl::Role::Processor), "{what}");
                        assert_eq!(a.settings.batch_size, p.batch_size, "{what}");
                        assert_eq!(
                            a.settings.metrics_interval_seconds,
                            f64::from(p.metrics_interval_seconds),
                            "{what}"
                        );
                        assert_eq!(a.consumer.as_deref(), Some("$(POD_NAME)"), "{what}");
                        assert!(!a.no_sampler && !a.sample_only, "{what}: the pods sample too");
                        assert_eq!(a, render::processor::args(&store), "{what}: the flags the builder meant");
                    }
                    _ => panic!("{what}: neither simulate nor process"),
                }
            }
        }
    }
}

#[test]
fn to_args_writes_every_flag_it_was_given() {
    use crate::flags::{ProcessArgs, RedisArgs, SettingsArgs, SimulateArgs};
    let redis = RedisArgs::at("redis://someone@example:6379".into());
    let by_hand = SimulateArgs {
        stock: 7,
        customers: 9,
        max_arrival_millis: limits::cli::DELAY_MILLIS.max as u64,
        max_order_delay_millis: 3,
        rate: Some(0.25),
        reset: true,
        join_sale: None,
        wait_complete: Some(60),
        max_seconds: Some(5),
        reconnect_seconds: 0,
        json: true,
        ..SimulateArgs::joining(redis.clone(), String::new())
    };
    let joining = SimulateArgs { reconnect_seconds: 1, ..SimulateArgs::joining(redis.clone(), "abc".into()) };
    for args in [by_hand, joining] {
        let argv = args.to_args();
        let Command::Simulate(mut parsed) = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>()).unwrap() else {
            panic!("{argv:?}")
        };
        parsed.redis = without_password(parsed.redis);
        assert_eq!(parsed, args, "{argv:?}");
    }
    let process = ProcessArgs {
        redis,
        settings: SettingsArgs { batch_size: 10_000, metrics_interval_seconds: 0.001 },
        consumer: Some("worker-1".into()),
        no_sampler: true,
        sample_only: false,
    };
    let argv = process.to_args();
    let Command::Process(mut parsed) = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>()).unwrap() else {
        panic!("{argv:?}")
    };
    parsed.redis = without_password(parsed.redis);
    assert_eq!(parsed, process, "{argv:?}");
}
