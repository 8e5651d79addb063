//! The dashboard: the panels of the Grafana dashboard every store gets (`panels`, read from
//! `grafana/popup-store.json`) and their queries run on a store's Redis (`read`), so that the terminal
//! view (`cli::dashboard_view`) shows what Grafana shows, from the same commands on the same keys. It
//! only reads (`GET`, `XLEN`, `TS.RANGE`): the store's read-only Grafana user is enough.
//!
//! A leaf module: `render::grafana` provisions the same file, the terminal view draws it.

pub mod expr;
pub mod panels;

use std::collections::BTreeMap;

use redis::Value;
use redis::aio::ConnectionLike;

use expr::Datum;
use panels::{Command, Kind, Panel, Query};

/// What one panel shows at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// A stat's number, or why there is none (a missing key).
    Stat(Result<f64, String>),
    /// A chart's lines, and notes on the ones that have no data.
    Chart { lines: Vec<Line>, notes: Vec<String> },
}

/// One line (or row of bars) of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    /// (timestamp in ms, value), oldest first: one point per bucket that has samples.
    pub points: Vec<(i64, f64)>,
}

/// Every panel at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the reading began (ms since the epoch): the charts' right edge.
    pub to_ms: i64,
    /// The charts' left edge: `to_ms` minus the time window.
    pub from_ms: i64,
    /// In the order of the panels.
    pub panels: Vec<Shown>,
}

/// Why a query has no answer: the key is not there (yet), or Redis refused it. The rest of the
/// dashboard goes on; a broken connection instead ends the whole reading (`read`'s `Err`).
fn no_data(query: &Query, e: &redis::RedisError) -> String {
    let what = query.command.describe(&query.key);
    if e.to_string().contains("key does not exist") {
        format!("no data yet: {} does not exist", query.key)
    } else {
        format!("{what}: {e}")
    }
}

/// A reply that a broken connection gives rather than Redis: drop the connection and retry.
fn connection_lost(e: &redis::RedisError) -> bool {
    // LOADING: a restarted Redis reading its data back; ask again later, like after a restart.
    e.code() == Some("LOADING")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.code().is_none()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::SimpleString(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Runs one query; `Ok(Err(note))` when this query has no data, `Err` when the connection failed.
async fn run<C: ConnectionLike>(
    conn: &mut C,
    query: &Query,
    from_ms: i64,
    to_ms: i64,
) -> Result<Result<Datum, String>, redis::RedisError> {
    let mut cmd = match &query.command {
        Command::Get => redis::cmd("GET"),
        Command::Xlen => redis::cmd("XLEN"),
        Command::TsRange { .. } => redis::cmd("TS.RANGE"),
    };
    cmd.arg(&query.key);
    if let Command::TsRange { aggregation, bucket_ms } = &query.command {
        cmd.arg(from_ms).arg(to_ms).arg("AGGREGATION").arg(aggregation).arg(bucket_ms);
    }
    let reply: Value = match cmd.query_async(conn).await {
        Ok(reply) => reply,
        Err(e) if connection_lost(&e) => return Err(e),
        Err(e) => return Ok(Err(no_data(query, &e))),
    };
    let odd = || format!("{}: unexpected reply {reply:?}", query.command.describe(&query.key));
    Ok(match (&query.command, &reply) {
        (Command::Get, Value::Nil) => Err(format!("no data yet: {} does not exist", query.key)),
        (Command::TsRange { .. }, Value::Array(samples)) => samples
            .iter()
            .map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some((number(&pair[0])? as i64, number(&pair[1])?)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Datum::Series)
            .ok_or_else(odd),
        (Command::TsRange { .. }, _) => Err(odd()),
        (_, v) => number(v).map(Datum::Number).ok_or_else(odd),
    })
}

/// Reads every panel from Redis at `to_ms` (ms since the epoch), charts over `window_ms` before it.
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
    panels: &[Panel],
    to_ms: i64,
    window_ms: i64,
) -> Result<Snapshot, redis::RedisError> {
    let from_ms = to_ms - window_ms;
    let mut shown = Vec::with_capacity(panels.len());
    for panel in panels {
        let mut answers = Vec::with_capacity(panel.queries.len());
        for query in &panel.queries {
            answers.push(run(conn, query, from_ms, to_ms).await?);
        }
        shown.push(show(panel, answers));
    }
    Ok(Snapshot { to_ms, from_ms, panels: shown })
}

/// What a panel shows from its queries' answers (in the order of its queries): a stat's number is
/// its expression's value when it has one, else its query's; a chart draws its shown queries, then
/// its expressions.
pub fn show(panel: &Panel, answers: Vec<Result<Datum, String>>) -> Shown {
    let mut vars = BTreeMap::new();
    let mut notes = Vec::new();
    let mut lines = Vec::new();
    let names = panel.line_names();
    let mut name = names.iter();
    for (query, answer) in panel.queries.iter().zip(answers) {
        let line_name = (!query.hidden).then(|| name.next().cloned().unwrap_or_default());
        match answer {
            Ok(datum) => {
                if let (Some(n), Datum::Series(points)) = (&line_name, &datum) {
                    lines.push(Line { name: n.clone(), points: points.clone() });
                }
                vars.insert(query.ref_id.clone(), datum);
            }
            Err(note) => notes.push(note),
        }
    }
    for expression in &panel.expressions {
        let line_name = name.next().cloned().unwrap_or_default();
        if !notes.is_empty() {
            continue; // an input is missing: its note says why
        }
        match expr::evaluate(&expression.text, &vars) {
            Ok(Datum::Series(points)) => lines.push(Line { name: line_name, points }),
            Ok(number) => {
                vars.insert(expression.ref_id.clone(), number);
            }
            Err(e) => notes.push(format!("expression {}: {e}", expression.text)),
        }
    }
    match panel.kind {
        Kind::Chart { .. } => Shown::Chart { lines, notes },
        Kind::Stat(_) => {
            if let Some(note) = notes.into_iter().next() {
                return Shown::Stat(Err(note));
            }
            // The last expression, else the only query: what Grafana's stat shows.
            let ref_id = panel.expressions.last().map(|e| &e.ref_id).or(panel.queries.first().map(|q| &q.ref_id));
            Shown::Stat(match ref_id.and_then(|r| vars.get(r)) {
                Some(Datum::Number(n)) => Ok(*n),
                Some(Datum::Series(s)) => s.last().map(|(_, v)| *v).ok_or_else(|| "no data".to_string()),
                None => Err("no data".into()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str, stat: bool) -> Panel {
        panels::panels().into_iter().find(|p| p.title == title && matches!(p.kind, Kind::Stat(_)) == stat).unwrap()
    }

    #[test]
    fn a_stat_with_an_expression_shows_its_value() {
        let shown = show(&panel("Percent Sold", true), vec![Ok(Datum::Number(30.0)), Ok(Datum::Number(10.0))]);
        assert_eq!(shown, Shown::Stat(Ok(75.0)));
    }

    #[test]
    fn a_missing_input_is_a_note_not_a_number() {
        let shown = show(
            &panel("Percent Sold", true),
            vec![Ok(Datum::Number(0.0)), Err("no data yet: product does not exist".into())],
        );
        assert_eq!(shown, Shown::Stat(Err("no data yet: product does not exist".into())));
    }

    #[test]
    fn charts_name_their_lines_and_keep_notes() {
        let shown = show(
            &panel("Backlog", false),
            vec![Ok(Datum::Series(vec![(0, 4.0)])), Err("no data yet: ts:len:queue:customers does not exist".into())],
        );
        assert_eq!(
            shown,
            Shown::Chart {
                lines: vec![Line { name: "orders queued".into(), points: vec![(0, 4.0)] }],
                notes: vec!["no data yet: ts:len:queue:customers does not exist".into()],
            }
        );
        let throughput = show(&panel("Throughput", false), vec![Ok(Datum::Series(vec![(0, 120.0)]))]);
        assert_eq!(
            throughput,
            Shown::Chart {
                lines: vec![Line { name: "orders per second".into(), points: vec![(0, 2.0)] }],
                notes: vec![],
            }
        );
    }
}
