//! How `sale --watch` shows its readings: on a terminal, a progress bar (completed of the stock)
//! and a status line redrawn in place; otherwise (CI, pipes, files) a plain `key=value` line per
//! change, without escape codes; with `--json`, one JSON object per reading.

use std::io::{self, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sale::watch::{WatchEnd, WatchReading};

const BAR_TEMPLATE: &str = "{bar:40.green/white} {prefix}\n{msg}";
/// The bar as it stays on screen above the summary.
const FINAL_TEMPLATE: &str = "{bar:40.green/white} {prefix}";

/// Where the readings go (always stdout, so `sale --watch > file` captures them all).
pub enum WatchView {
    Bar(ProgressBar),
    /// The last line written: an unchanged sale writes nothing.
    Lines(Option<String>),
    Json,
}

impl WatchView {
    /// JSON when asked for; otherwise a bar when stdout is a terminal, plain lines when not.
    pub fn new(json: bool) -> Self {
        if json {
            WatchView::Json
        } else if io::stdout().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stdout());
            bar.set_style(style(BAR_TEMPLATE));
            WatchView::Bar(bar)
        } else {
            WatchView::Lines(None)
        }
    }

    pub fn show(&mut self, r: &WatchReading) -> io::Result<()> {
        match self {
            WatchView::Bar(bar) => {
                draw(bar, r);
                Ok(())
            }
            WatchView::Lines(last) => {
                let line = line(r);
                if last.as_deref() != Some(line.as_str()) {
                    writeln!(io::stdout(), "{line}")?;
                    *last = Some(line);
                }
                Ok(())
            }
            WatchView::Json => writeln!(io::stdout(), "{}", json(r)),
        }
    }

    /// The final reading: the bar at its last state, then a summary line with the same fields
    /// and one line per problem (JSON: the reading with `"final": true`).
    pub fn finish(&mut self, r: &WatchReading, end: WatchEnd) -> io::Result<()> {
        match self {
            WatchView::Json => return writeln!(io::stdout(), "{}", json(r)),
            WatchView::Bar(bar) => {
                draw(bar, r);
                bar.set_style(style(FINAL_TEMPLATE));
                bar.finish();
            }
            WatchView::Lines(_) => {}
        }
        let ending = match end {
            WatchEnd::Over => "sale over",
            WatchEnd::Stopped => "stopped",
        };
        let mut out = io::stdout().lock();
        writeln!(out, "{ending}: {}", fields(r))?;
        for note in notes(r) {
            writeln!(out, "{note}")?;
        }
        Ok(())
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn draw(bar: &ProgressBar, r: &WatchReading) {
    let elapsed = r.elapsed_seconds as u64;
    match r.stock {
        Some(stock) => {
            let percent = r.completed.saturating_mul(100).checked_div(stock).unwrap_or(100);
            bar.set_length(stock);
            bar.set_position(r.completed);
            bar.set_prefix(format!("{}/{stock} sold ({percent}%), {elapsed}s", r.completed));
        }
        None => {
            bar.set_length(1);
            bar.set_position(0);
            bar.set_prefix(format!("waiting for a sale, {elapsed}s"));
        }
    }
    let mut status = fields(r);
    for note in notes(r) {
        status.push('\n');
        status.push_str(&note);
    }
    bar.set_message(status);
    // each setter may draw (or be skipped by the refresh limit): draw the whole reading once more
    bar.force_draw();
}

/// The numbers: `available=12 completed=88 rejected=40 customers_waiting=0 orders_waiting=3
/// orders_per_s=120.0` (`available=-` without a sale).
pub fn fields(r: &WatchReading) -> String {
    format!(
        "available={} completed={} rejected={} customers_waiting={} orders_waiting={} orders_per_s={:.1}",
        r.available.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
        r.completed,
        r.rejected,
        r.customers_waiting,
        r.orders_waiting,
        r.orders_per_second
    )
}

/// What else a reader should know: Redis unreachable, no sale yet, the engine's problems.
pub fn notes(r: &WatchReading) -> Vec<String> {
    let mut notes = Vec::new();
    match (&r.error, r.connected) {
        (Some(e), false) => notes.push(format!("Redis at {} unreachable, retrying: {e}", r.redis)),
        (Some(e), true) => notes.push(format!("cannot read the sale, retrying: {e}")),
        (None, _) if r.available.is_none() => {
            notes.push("no sale yet: no `product` key (popup-operator simulate starts one)".into())
        }
        (None, _) => {}
    }
    notes.extend(r.problems.iter().map(|p| format!("engine failing: {p}")));
    notes
}

/// One plain line: the fields, then the notes separated by ` | `.
pub fn line(r: &WatchReading) -> String {
    std::iter::once(fields(r)).chain(notes(r)).collect::<Vec<_>>().join(" | ")
}

fn json(r: &WatchReading) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> WatchReading {
        WatchReading {
            redis: "127.0.0.1:6379".into(),
            connected: true,
            error: None,
            available: Some(12),
            stock: Some(100),
            completed: 88,
            rejected: 40,
            customers_waiting: 0,
            orders_waiting: 3,
            orders_per_second: 120.0,
            over: false,
            problems: vec![],
            engine: None,
            elapsed_seconds: 3.2,
            last: false,
        }
    }

    #[test]
    fn plain_lines_name_every_number_and_what_is_wrong() {
        let r = reading();
        assert_eq!(
            line(&r),
            "available=12 completed=88 rejected=40 customers_waiting=0 orders_waiting=3 orders_per_s=120.0"
        );
        let away = WatchReading { connected: false, error: Some("connection refused".into()), ..r.clone() };
        assert_eq!(
            line(&away),
            "available=12 completed=88 rejected=40 customers_waiting=0 orders_waiting=3 orders_per_s=120.0 \
             | Redis at 127.0.0.1:6379 unreachable, retrying: connection refused"
        );
        let none = WatchReading { available: None, stock: None, problems: vec!["stalled".into()], ..r };
        let text = line(&none);
        assert!(text.starts_with("available=- "), "{text}");
        assert!(
            text.ends_with(
                " | no sale yet: no `product` key (popup-operator simulate starts one) | engine failing: stalled"
            ),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }
}
