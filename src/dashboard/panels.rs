//! The panels of `grafana/popup-store.json`, read from the file itself: what the Grafana dashboard and
//! the terminal dashboard both show. Pure: parsing and Grafana's display rules (value mappings,
//! thresholds, decimals, line names), no Redis.

use serde_json::Value as Json;

/// The Grafana dashboard every store gets (provisioned by `render::grafana`), and the terminal
/// dashboard's list of panels.
pub const GRAFANA_DASHBOARD: &str = include_str!("../../grafana/popup-store.json");

/// One Grafana panel as the terminal shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    /// The Grafana row it sits under ("Customers", "Orders", "Sale health"); none for the stat tiles.
    pub row: Option<String>,
    pub kind: Kind,
    pub queries: Vec<Query>,
    pub expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// One number (Grafana's `stat`).
    Stat(StatStyle),
    /// Lines or bars over time (Grafana's `timeseries`); `points`: each sample drawn as a dot too.
    Chart { bars: bool, points: bool },
}

/// How a stat panel turns its number into text and a colour.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatStyle {
    pub percent: bool,
    pub decimals: Option<usize>,
    /// Threshold steps, lowest first: from `value` up (None: from minus infinity), the colour.
    pub thresholds: Vec<(Option<f64>, String)>,
    /// Exact values shown as a text in a colour (Product Available: 0 is "SOLD OUT", red).
    pub mappings: Vec<(f64, String, Option<String>)>,
}

/// One Redis query of a panel (the plugin's `command` + `keyName`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub ref_id: String,
    pub command: Command,
    pub key: String,
    /// The plugin's `legend` (the frame's name) and `value` (the field's name) of a time series.
    pub legend: Option<String>,
    pub value: Option<String>,
    /// An input of an expression, not drawn itself.
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `GET key`
    Get,
    /// `XLEN key`
    Xlen,
    /// `TS.RANGE key from to AGGREGATION aggregation bucket`
    TsRange { aggregation: String, bucket_ms: u64 },
}

/// A Grafana math expression over the panel's queries (`$A / 60`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    pub ref_id: String,
    pub text: String,
    /// The panel's `displayName` override for it; Grafana otherwise calls the line after its refId.
    pub display_name: Option<String>,
}

impl Command {
    /// The command as Redis sees it, for notes and docs: `TS.RANGE ts:len:queue:orders … AGGREGATION avg 5000`.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Command::Get => format!("GET {key}"),
            Command::Xlen => format!("XLEN {key}"),
            Command::TsRange { aggregation, bucket_ms } => {
                format!("TS.RANGE {key} <from> <to> AGGREGATION {aggregation} {bucket_ms}")
            }
        }
    }
}

/// Every panel of the embedded Grafana dashboard, in its order.
pub fn panels() -> Vec<Panel> {
    parse(GRAFANA_DASHBOARD).expect("grafana/popup-store.json is checked by the tests of this module")
}

/// The panels of a Grafana dashboard that uses only what the terminal can show: stat and time series
/// panels of `get`, `xlen` and `ts.range` queries and math expressions.
pub fn parse(dashboard: &str) -> Result<Vec<Panel>, String> {
    let json: Json = serde_json::from_str(dashboard).map_err(|e| format!("not JSON: {e}"))?;
    let mut row = None;
    let mut panels = Vec::new();
    for p in json["panels"].as_array().ok_or("no panels")? {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        let kind = match p["type"].as_str().unwrap_or_default() {
            "row" => {
                row = Some(title);
                continue;
            }
            "stat" => Kind::Stat(stat_style(&p["fieldConfig"]["defaults"])),
            "timeseries" => {
                let custom = &p["fieldConfig"]["defaults"]["custom"];
                Kind::Chart {
                    bars: custom["drawStyle"].as_str() == Some("bars"),
                    points: custom["showPoints"].as_str() == Some("always"),
                }
            }
            other => return Err(format!("panel {title:?}: the terminal cannot show a {other:?} panel")),
        };
        let mut queries = Vec::new();
        let mut expressions = Vec::new();
        for t in p["targets"].as_array().ok_or_else(|| format!("panel {title:?}: no targets"))? {
            let ref_id = t["refId"].as_str().unwrap_or_default().to_string();
            if t["type"].as_str() == Some("math") {
                expressions.push(Expression {
                    display_name: display_name(p, &ref_id),
                    text: t["expression"].as_str().unwrap_or_default().to_string(),
                    ref_id,
                });
                continue;
            }
            let command = match t["command"].as_str().unwrap_or_default() {
                "get" => Command::Get,
                "xlen" => Command::Xlen,
                "ts.range" => Command::TsRange {
                    aggregation: t["aggregation"].as_str().unwrap_or("avg").to_string(),
                    bucket_ms: t["bucket"]
                        .as_u64()
                        .ok_or_else(|| format!("panel {title:?}: ts.range without bucket"))?,
                },
                other => return Err(format!("panel {title:?}: the terminal cannot run {other:?}")),
            };
            let text = |name: &str| t[name].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            queries.push(Query {
                ref_id,
                command,
                key: t["keyName"].as_str().unwrap_or_default().to_string(),
                legend: text("legend"),
                value: text("value"),
                hidden: t["hide"].as_bool().unwrap_or(false),
            });
        }
        let row = matches!(kind, Kind::Chart { .. }).then(|| row.clone()).flatten();
        panels.push(Panel { title, row, kind, queries, expressions });
    }
    Ok(panels)
}

fn stat_style(defaults: &Json) -> StatStyle {
    let thresholds = defaults["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["value"].as_f64(), s["color"].as_str().unwrap_or_default().to_string()))
        .collect();
    let mut mappings = Vec::new();
    for m in defaults["mappings"].as_array().into_iter().flatten().filter(|m| m["type"] == "value") {
        for (value, shown) in m["options"].as_object().into_iter().flatten() {
            if let Ok(v) = value.parse::<f64>() {
                let color = shown["color"].as_str().map(str::to_string);
                mappings.push((v, shown["text"].as_str().unwrap_or_default().to_string(), color));
            }
        }
    }
    StatStyle {
        percent: defaults["unit"].as_str() == Some("percent"),
        decimals: defaults["decimals"].as_u64().map(|d| d as usize),
        thresholds,
        mappings,
    }
}

/// A `displayName` override of the frames of one refId.
fn display_name(panel: &Json, ref_id: &str) -> Option<String> {
    panel["fieldConfig"]["overrides"].as_array()?.iter().find_map(|o| {
        (o["matcher"]["id"] == "byFrameRefID" && o["matcher"]["options"] == ref_id).then(|| {
            o["properties"].as_array()?.iter().find(|p| p["id"] == "displayName")?["value"].as_str().map(str::to_string)
        })?
    })
}

impl StatStyle {
    /// The text and colour Grafana shows for `value`: a mapped text, else the number with the panel's
    /// decimals (and `%`), coloured by the highest threshold the value reaches.
    pub fn show(&self, value: f64) -> (String, String) {
        let color = self
            .thresholds
            .iter()
            .rfind(|(from, _)| from.is_none_or(|f| value >= f))
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        if let Some((_, text, mapped)) = self.mappings.iter().find(|(v, _, _)| *v == value) {
            return (text.clone(), mapped.clone().unwrap_or(color));
        }
        let number = match self.decimals {
            Some(d) => format!("{value:.d$}"),
            None => format_number(value),
        };
        (if self.percent { format!("{number}%") } else { number }, color)
    }
}

/// A number as Grafana's automatic decimals show it: whole numbers without a fraction, others with up
/// to two decimals.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() { "NaN".into() } else { value.to_string() };
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Panel {
    /// The names of the lines a chart draws, in order: each shown query's and each expression's, named
    /// as Grafana names them. A frame's field is named after the plugin's `value`; when the panel's
    /// frames have different names (`legend`), Grafana puts the frame's name in front ("orders
    /// queued"). An expression's line is named by its `displayName` override, else its refId.
    pub fn line_names(&self) -> Vec<String> {
        let shown: Vec<&Query> = self.queries.iter().filter(|q| !q.hidden).collect();
        let mut legends: Vec<&Option<String>> = shown.iter().map(|q| &q.legend).collect();
        legends.dedup();
        let prefix = legends.len() > 1;
        let mut names: Vec<String> = shown
            .iter()
            .map(|q| {
                let field = q.value.clone().or_else(|| q.legend.clone()).unwrap_or_else(|| "Value".into());
                match (&q.legend, prefix) {
                    (Some(legend), true) if legend != &field => format!("{legend} {field}"),
                    _ => field,
                }
            })
            .collect();
        names.extend(self.expressions.iter().map(|e| e.display_name.clone().unwrap_or_else(|| e.ref_id.clone())));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str, stat: bool) -> Panel {
        panels()
            .into_iter()
            .find(|p| p.title == title && matches!(p.kind, Kind::Stat(_)) == stat)
            .unwrap_or_else(|| panic!("no panel {title}"))
    }

    #[test]
    fn every_panel_of_the_grafana_dashboard_is_read() {
        let all = panels();
        let titles: Vec<&str> = all.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Product Available",
                "Percent Sold",
                "Customers Ordering",
                "Orders Processing",
                "Orders Completed",
                "Orders Rejected",
                "Customers Overflow",
                "Customers Ordering",
                "Orders In Queue",
                "Completed Flow",
                "Throughput",
                "Rejected Flow",
                "Backlog"
            ]
        );
        assert!(all[..6].iter().all(|p| matches!(p.kind, Kind::Stat(_)) && p.row.is_none()));
        let rows: Vec<Option<&str>> = all[6..].iter().map(|p| p.row.as_deref()).collect();
        assert_eq!(
            rows,
            [Some("Customers"), Some("Customers"), Some("Orders"), Some("Orders")]
                .into_iter()
                .chain([Some("Sale health"); 3])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn queries_are_the_grafana_ones() {
        let sold = panel("Percent Sold", true);
        assert_eq!(
            sold.queries.iter().map(|q| q.command.describe(&q.key)).collect::<Vec<_>>(),
            ["XLEN queue:complete", "GET product"]
        );
        assert!(sold.queries.iter().all(|q| q.hidden));
        assert_eq!(sold.expressions[0].text, "$A / ($A + $B) * 100");
        let overflow = panel("Customers Overflow", false);
        assert_eq!(overflow.kind, Kind::Chart { bars: true, points: false });
        assert_eq!(overflow.queries[0].command, Command::TsRange { aggregation: "sum".into(), bucket_ms: 5000 });
        assert_eq!(overflow.queries[0].key, "ts:enqueue:queue:customers");
        assert_eq!(panel("Backlog", false).kind, Kind::Chart { bars: false, points: false });
        assert_eq!(panel("Throughput", false).kind, Kind::Chart { bars: false, points: true });
    }

    #[test]
    fn lines_are_named_as_grafana_names_them() {
        let names = |t: &str| panel(t, false).line_names();
        assert_eq!(names("Customers Overflow"), ["arrived"]);
        assert_eq!(names("Customers Ordering"), ["waiting"]);
        assert_eq!(names("Orders In Queue"), ["queued"]);
        assert_eq!(names("Completed Flow"), ["completed"]);
        assert_eq!(names("Throughput"), ["orders per second"]);
        assert_eq!(names("Rejected Flow"), ["rejected"]);
        assert_eq!(names("Backlog"), ["orders queued", "customers waiting"]);
    }

    #[test]
    fn stats_show_grafana_texts_and_colours() {
        let style = |t: &str| match panel(t, true).kind {
            Kind::Stat(s) => s,
            _ => unreachable!(),
        };
        let available = style("Product Available");
        assert_eq!(available.show(0.0), ("SOLD OUT".into(), "red".into()));
        assert_eq!(available.show(42.0), ("42".into(), "orange".into()));
        assert_eq!(available.show(1000.0), ("1000".into(), "green".into()));
        let sold = style("Percent Sold");
        assert_eq!(sold.show(73.456), ("73.5%".into(), "blue".into()));
        assert_eq!(sold.show(100.0), ("100.0%".into(), "red".into()));
        assert_eq!(style("Orders Rejected").show(0.0).1, "green");
        assert_eq!(style("Orders Rejected").show(3.0), ("3".into(), "red".into()));
    }

    #[test]
    fn automatic_decimals() {
        assert_eq!(format_number(12.0), "12");
        assert_eq!(format_number(16.666), "16.67");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(f64::NAN), "NaN");
    }

    #[test]
    fn panels_the_terminal_cannot_show_are_named() {
        let e = parse(r#"{"panels":[{"type":"piechart","title":"Pie","targets":[]}]}"#).unwrap_err();
        assert!(e.contains("\"Pie\"") && e.contains("piechart"), "{e}");
    }
}
