//! The dashboard as a browser shows it: headless Chromium (Debian's `chromium`) renders a Grafana page, and
//! the page is read for its panels, its legends and Grafana's panel-error marks. Shared by
//! `tests/grafana_real.rs` (Grafana 8.3 on this host) and `tests/node.rs` (the managed Grafana pod, through
//! a port-forward).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// What each line of a time series panel is meant to be called: its `value` when the panel has one line,
/// "<legend> <value>" when it has several; an expression's line, its `displayName` override.
pub fn meant_names(panel: &Json) -> BTreeSet<String> {
    let visible: Vec<&Json> =
        panel["targets"].as_array().unwrap().iter().filter(|t| !t["hide"].as_bool().unwrap_or(false)).collect();
    visible
        .iter()
        .map(|t| {
            if t["datasource"]["type"] == "__expr__" {
                let o = panel["fieldConfig"]["overrides"].as_array().unwrap();
                let o = o.iter().find(|o| o["matcher"]["options"] == t["refId"]).unwrap();
                o["properties"][0]["value"].as_str().unwrap().to_string()
            } else if visible.len() == 1 {
                t["value"].as_str().unwrap().to_string()
            } else {
                format!("{} {}", t["legend"].as_str().unwrap(), t["value"].as_str().unwrap())
            }
        })
        .collect()
}

/// Every line name the dashboard means, over all its time series panels.
pub fn every_meant_name(dashboard: &Json) -> BTreeSet<String> {
    dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] == "timeseries").flat_map(meant_names).collect()
}

pub fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser"];
    let from_env = std::env::var_os("POPUP_CHROMIUM").map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).flat_map(|d| names.map(|n| d.join(n))).collect::<Vec<_>>())
        .unwrap_or_default();
    from_env.into_iter().chain(on_path).find(|p| p.is_file())
}

pub const WINDOW: &str = "1600,1250";

/// Headless Chromium on `url`; `--dump-dom` or `--screenshot=<png>`. Virtual time does not advance while
/// requests are pending, so the budget is time the page's own timers get, not a guess at the network.
pub fn chromium_run(browser: &Path, url: &str, output: &str, profile: &Path) -> std::process::Output {
    Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WINDOW}"))
        .arg("--virtual-time-budget=20000")
        .arg(output)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()))
}

/// Marks Grafana puts into a page for a panel that failed (8.x: the header's error corner; later
/// versions: a status button and a data-error message) or that has no plugin or datasource.
pub const PANEL_ERROR_MARKS: &[&str] = &[
    "Panel header error",
    "panel-info-corner--error",
    "Panel status error",
    "data-testid Panel status error",
    "Panel data error message",
    "Panel plugin not found",
    "Datasource named",
    "was not found",
];

/// What the rendered page shows: panel titles and legend names, or the panel error it found.
pub struct Page {
    pub panels: Vec<String>,
    pub legends: BTreeSet<String>,
    pub errors: Vec<String>,
}

pub fn read_page(dom: &str) -> Page {
    let between = |prefix: &str, suffix: &str| -> Vec<String> {
        dom.match_indices(prefix)
            .filter_map(|(i, _)| dom[i + prefix.len()..].split_once(suffix).map(|(name, _)| name.to_string()))
            .collect()
    };
    Page {
        panels: between("aria-label=\"", " panel\"").into_iter().filter(|p| !p.contains('"')).collect(),
        legends: between("aria-label=\"VizLegend series ", "\"").into_iter().collect(),
        errors: PANEL_ERROR_MARKS.iter().filter(|m| dom.contains(*m)).map(|m| m.to_string()).collect(),
    }
}

/// Renders the dashboard until every panel and every legend is on the page (a loaded machine may need a
/// second look), failing at once on a panel error; then takes the screenshot into `png`.
pub fn render_dashboard(browser: &Path, url: &str, dashboard: &Json, png: &Path) {
    let profile = png.with_extension("profile");
    let titles = dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").count();
    let meant = every_meant_name(dashboard);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = chromium_run(browser, url, "--dump-dom", &profile);
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let page = read_page(&dom);
        assert!(page.errors.is_empty(), "the page shows a panel error ({:?}); page:\n{dom}", page.errors);
        assert!(!page.legends.contains("Value"), "a line called Value: {:?}", page.legends);
        if page.panels.len() == titles && page.legends == meant {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed every panel and legend: panels {:?}, legends {:?} (meant {meant:?}); chromium: {}",
            page.panels,
            page.legends,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(png);
    let out = chromium_run(browser, url, &format!("--screenshot={}", png.display()), &profile);
    let _ = std::fs::remove_dir_all(&profile);
    let bytes = std::fs::read(png).unwrap_or_else(|e| {
        panic!("no screenshot at {} ({e}): {}", png.display(), String::from_utf8_lossy(&out.stderr))
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!(format!("{w},{h}"), WINDOW, "the whole window");
    // A blank or single-colour page compresses to a few KB; thirteen drawn panels do not.
    assert!(bytes.len() > 60_000, "the screenshot is nearly empty ({} bytes)", bytes.len());
}
