//! How `simulate` shows its progress on stderr (stdout keeps only the summary, so `--json` output
//! stays one JSON document): on a terminal, a progress bar and a status line redrawn in place,
//! warnings printed above them; otherwise (CI, pipes, files, the simulator Job's log) a plain line
//! about once a second, without escape codes.

use std::collections::VecDeque;
use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sale::simulator::{Progress, SimulationSummary, Warn, log_warning};

const BAR_TEMPLATE: &str = "{bar:40.green/white} {prefix}\n{msg}";
/// Plain lines come at most this often.
const LINE_EVERY: Duration = Duration::from_secs(1);
/// The rate shown is measured over about this long.
const RATE_WINDOW_MILLIS: u64 = 1000;

/// What the bar counts: customers sent of `--customers N`, or units sold of the stock when the
/// run goes on until the product is sold out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    Customers(u64),
    SoldOut(u64),
}

pub struct SimulateView {
    bar: Option<ProgressBar>,
    goal: Goal,
    /// (elapsed ms, customers) of recent readings, for the rate.
    recent: VecDeque<(u64, u64)>,
    /// Elapsed ms of the last plain line (the first comes after a second).
    last_line: u64,
}

impl SimulateView {
    /// A bar when stderr is a terminal, plain lines when not.
    pub fn new(customers: u64, stock: i64) -> Self {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(BAR_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar
        });
        Self::with_bar(bar, customers, stock)
    }

    fn with_bar(bar: Option<ProgressBar>, customers: u64, stock: i64) -> Self {
        let goal = if customers > 0 { Goal::Customers(customers) } else { Goal::SoldOut(stock.max(0) as u64) };
        SimulateView { bar, goal, recent: VecDeque::new(), last_line: 0 }
    }

    /// Where the simulator's warnings go: above the bar (a plain write would be overdrawn by its
    /// next redraw), else the usual log line.
    pub fn warner(&self) -> Warn {
        match self.bar.clone() {
            Some(bar) => Arc::new(move |message: &str| {
                if tracing::enabled!(tracing::Level::WARN) {
                    bar.println(format!("warning: {message}"));
                }
            }),
            None => Arc::new(log_warning),
        }
    }

    pub fn show(&mut self, p: &Progress) {
        let rate = self.rate(p);
        match &self.bar {
            Some(bar) => self.draw(bar, p, status(p, rate)),
            None => {
                if p.elapsed_millis < self.last_line + LINE_EVERY.as_millis() as u64 {
                    return;
                }
                self.last_line = p.elapsed_millis;
                eprintln!("{}", line(p, rate));
            }
        }
    }

    /// Removes the bar (the run failed before it had numbers worth keeping).
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Leaves the bar at the run's final numbers (the summary follows on stdout).
    pub fn finish(&mut self, s: &SimulationSummary) {
        if let Some(bar) = &self.bar {
            let p = Progress {
                customers: s.customers,
                orders: s.orders,
                product: s.product_left,
                completed: s.completed,
                rejected: s.rejected,
                elapsed_millis: (s.duration_secs * 1000.0) as u64,
                sending: false,
            };
            let rate = format!("{} customers/s over {:.1}s of arrivals", s.customers_per_sec.round(), s.arrival_secs);
            self.draw(bar, &p, format!("{} | {rate}", numbers(&p)));
            bar.finish();
        }
    }

    fn draw(&self, bar: &ProgressBar, p: &Progress, status: String) {
        let (position, length) = self.position(p);
        bar.set_prefix(self.prefix(p));
        bar.set_message(status);
        bar.set_length(length.max(1));
        bar.set_position(position);
        // each setter may draw (or be skipped by the refresh limit): draw the whole reading once more
        bar.force_draw();
    }

    /// Customers per second over the last second or so of readings.
    fn rate(&mut self, p: &Progress) -> f64 {
        self.recent.push_back((p.elapsed_millis, p.customers));
        while self.recent.len() > 2 && self.recent[1].0 + RATE_WINDOW_MILLIS <= p.elapsed_millis {
            self.recent.pop_front();
        }
        match (self.recent.front(), self.recent.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => (c1.saturating_sub(c0)) as f64 * 1000.0 / (t1 - t0) as f64,
            _ => 0.0,
        }
    }

    fn position(&self, p: &Progress) -> (u64, u64) {
        match self.goal {
            Goal::Customers(n) => (p.customers.min(n), n),
            Goal::SoldOut(stock) => {
                let left = p.product.map_or(stock, |v| v.clamp(0, stock as i64) as u64);
                (stock - left, stock)
            }
        }
    }

    fn prefix(&self, p: &Progress) -> String {
        let (position, length) = self.position(p);
        let percent = position.saturating_mul(100).checked_div(length).unwrap_or(100);
        let elapsed = p.elapsed_millis / 1000;
        match self.goal {
            Goal::Customers(n) => format!("{}/{n} customers ({percent}%), {elapsed}s", p.customers),
            Goal::SoldOut(stock) => format!("{position}/{stock} sold ({percent}%), {elapsed}s"),
        }
    }
}

/// The status line under the bar.
fn status(p: &Progress, rate: f64) -> String {
    if p.sending {
        format!("{} | {} customers/s", numbers(p), rate.round())
    } else {
        format!("{} | waiting for the orders to be decided", numbers(p))
    }
}

fn numbers(p: &Progress) -> String {
    format!(
        "customers {} orders {} completed {} rejected {} product {}",
        p.customers,
        p.orders,
        p.completed,
        p.rejected,
        product(p)
    )
}

/// One plain progress line, e.g. `customers 2000 orders 1990 completed 0 rejected 0 product 100
/// customers/s 2000 elapsed 1.0s`.
fn line(p: &Progress, rate: f64) -> String {
    let mut line = format!("{} ", numbers(p));
    if p.sending {
        line.push_str(&format!("customers/s {} ", rate.round()));
    } else {
        line.push_str("waiting ");
    }
    line.push_str(&format!("elapsed {:.1}s", p.elapsed_millis as f64 / 1000.0));
    line
}

fn product(p: &Progress) -> String {
    p.product.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(elapsed_millis: u64, customers: u64) -> Progress {
        Progress {
            customers,
            orders: customers.saturating_sub(10),
            product: Some(100),
            completed: 0,
            rejected: 0,
            elapsed_millis,
            sending: true,
        }
    }

    #[test]
    fn plain_lines_name_the_numbers_and_the_rate() {
        let mut view = SimulateView::with_bar(None, 0, 100);
        view.rate(&progress(0, 0));
        let p = progress(1000, 2000);
        let rate = view.rate(&p);
        assert_eq!(rate, 2000.0);
        let text = line(&p, rate);
        assert_eq!(text, "customers 2000 orders 1990 completed 0 rejected 0 product 100 customers/s 2000 elapsed 1.0s");
        assert!(!text.contains('\x1b'));
        let waiting = line(&Progress { sending: false, product: None, ..p }, rate);
        assert!(waiting.ends_with("product - waiting elapsed 1.0s"), "{waiting}");
    }

    #[test]
    fn the_rate_covers_about_the_last_second() {
        let mut view = SimulateView::with_bar(None, 10, 100);
        for (t, c) in [(0, 0), (200, 100), (400, 200), (600, 300), (800, 400), (1000, 500), (1200, 1600)] {
            view.rate(&progress(t, c));
        }
        // the readings from 200 ms on: 1500 customers in 1 s
        assert_eq!(view.recent.front().map(|r| r.0), Some(200));
        assert_eq!(view.rate(&progress(1200, 1600)), 1500.0);
    }

    #[test]
    fn the_bar_counts_customers_or_units_sold() {
        let view = SimulateView::with_bar(None, 300, 100);
        assert_eq!(view.position(&progress(0, 150)), (150, 300));
        assert_eq!(view.prefix(&progress(2500, 150)), "150/300 customers (50%), 2s");
        let view = SimulateView::with_bar(None, 0, 100);
        let p = Progress { product: Some(40), ..progress(0, 500) };
        assert_eq!(view.position(&p), (60, 100));
        assert_eq!(view.prefix(&p), "60/100 sold (60%), 0s");
        assert_eq!(view.position(&Progress { product: None, ..p }), (0, 100));
        assert_eq!(SimulateView::with_bar(None, 0, 0).prefix(&p), "0/0 sold (100%), 0s");
    }
}
