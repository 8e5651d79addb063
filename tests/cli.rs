//! Hostile command lines against the real binary: every numeric flag of `load`, `process`,
//! `simulate` and `sale` is refused by the parser with a message naming the flag and its range
//! (exit code 2), never a panic (exit code 101). No Redis is needed: `--redis` points at a closed
//! port, and a value the parser accepts ends in a clean connection error instead.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_popup-operator");
/// Nothing listens on port 1.
const CLOSED: &str = "redis://127.0.0.1:1";

/// Environment variables the binary reads; cleared so the caller's shell cannot change a result.
const ENV: [&str; 6] = [
    "REDIS_URL",
    "REDIS_PASSWORD",
    "POPUP_ENGINE",
    "POPUP_BATCH_SIZE",
    "POPUP_METRICS_INTERVAL_SECONDS",
    "POPUP_CONSUMER",
];

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for k in ENV {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied());
    // A parser that accepted the value would try Redis and fail at once on the closed port; the
    // timeout only keeps a regression (e.g. an endless sleep) from hanging the test run.
    cmd.env("RUST_LOG", "warn");
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("popup-operator {args:?} did not finish within 60s");
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The parser refused `value` for `flag` with a message naming the flag and the allowed range.
fn assert_refused(out: &Output, what: &str, flag: &str) {
    let (stdout, stderr) = text(out);
    assert_ne!(out.status.code(), Some(101), "{what}: panicked\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected the parser to refuse it\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("invalid value") && stderr.contains(&format!("'{flag} <")),
        "{what}: message does not name {flag}:\n{stderr}"
    );
    assert!(stderr.contains(" from ") && stderr.contains(" to "), "{what}: message does not give the range:\n{stderr}");
}

/// Values no numeric flag accepts.
const HOSTILE: [&str; 12] = [
    "1e300",
    "-1",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "abc",
    "18446744073709551616",   // u64::MAX + 1
    "-9223372036854775809",   // i64::MIN - 1
    "1000000000000000000000", // far beyond every bound
];

/// (subcommand, flag, extra values refused for this flag only, e.g. just outside its range)
const FLAGS: &[(&str, &str, &[&str])] = &[
    ("load", "--batch-size", &["0", "10001", "1.5", "1e3"]),
    ("load", "--metrics-interval-seconds", &["0", "0.0009", "1e-300", "86400.5", "1e308"]),
    ("process", "--batch-size", &["0", "10001"]),
    ("process", "--metrics-interval-seconds", &["0", "1e-300", "86401"]),
    ("simulate", "--stock", &["1000000001", "0.5", "9223372036854775807"]),
    ("simulate", "--customers", &["1000000001", "1.5"]),
    ("simulate", "--max-arrival-millis", &["3600001", "1.5"]),
    ("simulate", "--max-order-delay-millis", &["3600001", "1.5"]),
    ("simulate", "--rate", &["0", "1e-300", "0.0009", "1000000.5", "1e300", "-0.5"]),
    ("simulate", "--wait-complete", &["86401", "1.5"]),
    ("simulate", "--max-seconds", &["0", "604801", "1.5"]),
    ("simulate", "--reconnect-seconds", &["3601", "1.5"]),
];

#[test]
fn every_numeric_flag_refuses_hostile_values_without_panicking() {
    for (sub, flag, extra) in FLAGS {
        for value in HOSTILE.iter().chain(extra.iter()) {
            // `--flag=value` so that values like "-1" or "" reach the flag's parser
            let arg = format!("{flag}={value}");
            let out = run(&[sub, "--redis", CLOSED, &arg], &[]);
            assert_refused(&out, &format!("{sub} {arg}"), flag);
        }
    }
}

#[test]
fn sale_watch_refuses_a_bad_interval_and_an_interval_without_watch() {
    for value in HOSTILE.iter().chain(&["0", "9", "60001", "1.5"]) {
        let arg = format!("--interval-millis={value}");
        let out = run(&["sale", "--watch", "--redis", CLOSED, &arg], &[]);
        assert_refused(&out, &format!("sale --watch {arg}"), "--interval-millis");
    }
    let out = run(&["sale", "--redis", CLOSED, "--interval-millis", "100"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "--interval-millis only means something with --watch: {stderr}");
    assert!(stderr.contains("--watch"), "{stderr}");
}

#[test]
fn negative_numbers_as_separate_arguments_reach_the_parser() {
    // `--stock -1` (not `--stock=-1`) must be read as a value, not as an unknown flag
    for (sub, flag) in [("simulate", "--stock"), ("simulate", "--rate"), ("load", "--batch-size")] {
        let out = run(&[sub, "--redis", CLOSED, flag, "-1"], &[]);
        assert_refused(&out, &format!("{sub} {flag} -1"), flag);
    }
}

#[test]
fn environment_values_go_through_the_same_parsers() {
    let cases = [
        ("load", "POPUP_METRICS_INTERVAL_SECONDS", "1e300", "--metrics-interval-seconds"),
        ("process", "POPUP_METRICS_INTERVAL_SECONDS", "NaN", "--metrics-interval-seconds"),
        ("load", "POPUP_BATCH_SIZE", "0", "--batch-size"),
        ("process", "POPUP_BATCH_SIZE", "-3", "--batch-size"),
    ];
    for (sub, var, value, flag) in cases {
        let out = run(&[sub, "--redis", CLOSED], &[(var, value)]);
        assert_refused(&out, &format!("{var}={value} {sub}"), flag);
    }
    let out = run(&["process", "--redis", CLOSED], &[("POPUP_CONSUMER", "")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "an empty consumer name is refused: {stderr}");
    assert!(stderr.contains("--consumer"), "{stderr}");
}

#[test]
fn accepted_extremes_reach_redis_and_fail_cleanly() {
    // the bounds themselves are valid: the command gets past the parser and reports the closed port
    let cases: &[&[&str]] = &[
        &["load", "--engine", "native", "--batch-size", "10000", "--metrics-interval-seconds", "0.001"],
        &["load", "--engine", "gears", "--batch-size", "1", "--metrics-interval-seconds", "86400"],
        &["process", "--metrics-interval-seconds", "86400"],
        &["process", "--metrics-interval-seconds", "0.001", "--sample-only"],
        &[
            "simulate",
            "--stock",
            "1000000000",
            "--customers",
            "1000000000",
            "--rate",
            "1000000",
            "--max-arrival-millis",
            "3600000",
            "--max-order-delay-millis",
            "3600000",
            "--wait-complete",
            "86400",
            "--max-seconds",
            "604800",
            "--reconnect-seconds",
            "3600",
        ],
        &["simulate", "--stock", "0", "--rate", "0.001", "--max-seconds", "1", "--reconnect-seconds", "0"],
        &["sale", "--engine", "native", "--json"],
        &["sale", "--watch", "--interval-millis", "10", "--json"],
        &["sale", "--watch", "--interval-millis", "60000", "--engine", "native"],
    ];
    for args in cases {
        let mut full = args.to_vec();
        full.extend(["--redis", CLOSED]);
        let out = run(&full, &[]);
        let (_, stderr) = text(&out);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: expected a connection error\n{stderr}");
        assert!(stderr.contains("cannot connect to Redis at 127.0.0.1:1"), "{args:?}: {stderr}");
    }
}

#[test]
fn hostile_redis_addresses_and_engines_fail_cleanly() {
    for url in ["", " ", "not a url", "redis://127.0.0.1:99999", "redis://:@", "redis://[::1", "http://127.0.0.1:1"] {
        for sub in ["load", "process", "simulate", "sale"] {
            let engine: &[&str] = if sub == "load" { &["--engine", "triggers"] } else { &[] };
            let out = run(&[&[sub, "--redis", url][..], engine].concat(), &[]);
            let (_, stderr) = text(&out);
            assert!(!stderr.contains("panicked"), "{sub} --redis {url:?}: {stderr}");
            assert_eq!(out.status.code(), Some(1), "{sub} --redis {url:?}: {stderr}");
            assert!(stderr.contains("Redis"), "{sub} --redis {url:?}: the message names the problem: {stderr}");
        }
    }
    for sub in ["load", "sale"] {
        let out = run(&[sub, "--redis", CLOSED, "--engine", "bogus"], &[]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--engine") && stderr.contains("native"), "{stderr}");
    }
}

#[test]
fn load_has_no_default_engine() {
    // The engine must be the one of the Redis (a store's spec.engine defaults to gears): `load` asks.
    let out = run(&["load", "--redis", CLOSED], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "load without --engine is refused: {stderr}");
    assert!(stderr.contains("--engine"), "{stderr}");
    for engine in ["gears", "triggers", "native"] {
        let by_flag = run(&["load", "--engine", engine, "--redis", CLOSED], &[]);
        let by_env = run(&["load", "--redis", CLOSED], &[("POPUP_ENGINE", engine)]);
        for out in [by_flag, by_env] {
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{engine}: past the parser, to the closed port: {stderr}");
            assert!(stderr.contains("cannot connect to Redis at 127.0.0.1:1"), "{engine}: {stderr}");
        }
    }
}
