//! The state of a run between its steps, with no Redis in it: who has arrived, which orders are due,
//! which batches are in flight, what was written and read, and when the sending is over.
//!
//! The driver (`simulate`, in the parent module) owns the Redis side: it starts writing the batches
//! this hands out, and feeds back how each ended and the sale's numbers it reads. Every step here is a
//! plain method, so each is tested on its own below.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use super::{
    Arrivals, BATCH, Batch, DEADLINE_GRACE, MAX_WAITING_ORDERS, MIN_TICK, PROGRESS_EVERY, Progress, RateWatch,
    SimulationSummary, SimulatorConfig, WINDOW, random_millis,
};
use crate::sale::SaleSnapshot;

/// An order waiting for its delay to pass: (due, customer number, customer entry id).
type DueOrder = Reverse<(tokio::time::Instant, u64, String)>;

/// A batch sent and not acknowledged yet; `task` is what the driver waits on for its outcome.
pub(super) struct InFlight<T> {
    first: u64,
    customers: u64,
    orders: u64,
    task: T,
}

/// How a batch in flight ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Written: the customers' entry ids, in order.
    Written(Vec<String>),
    /// Nothing written: Redis no longer holds the sale.
    SaleGone,
    /// Not written (or not known to be): why the run stops.
    Failed(String),
}

/// The numbers last read, counted from those at the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Tally {
    completed: u64,
    rejected: u64,
    product: Option<i64>,
}

/// How long the sending took, for the summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Timing {
    /// Until every customer and order was written.
    pub(super) send_secs: f64,
    /// Until the arrivals ended (or the last customer was written, if later).
    pub(super) arrival_secs: f64,
}

/// Where a run stands.
pub(super) struct RunState<T> {
    stock: i64,
    target_rate: Option<f64>,
    /// When the first customer could arrive (progress counts from here), and the same as a std instant.
    start: tokio::time::Instant,
    started: Instant,
    arrivals: Arrivals,
    /// Customers still arrive.
    arriving: bool,
    /// `--customers 0`: the arrivals end when `product` reaches 0.
    until_sold_out: bool,
    /// A reconnecting run: a sale read without `product` means Redis lost it.
    resilient: bool,
    max_delay_ms: u64,
    arrivals_ended: Option<Instant>,
    last_customer_write: Instant,
    due_orders: BinaryHeap<DueOrder>,
    /// Oldest first: batches are acknowledged in the order they were sent.
    in_flight: VecDeque<InFlight<T>>,
    next_batch: u64,
    /// Customers and orders written.
    customers: u64,
    orders: u64,
    /// Why the run stopped early; the first reason stays.
    stopped: Option<String>,
    /// Redis came back without the sale: what was last read about it is gone.
    lost: bool,
    /// What to say when that happens.
    lost_sale: String,
    rate_watch: Option<RateWatch>,
    next_reading: tokio::time::Instant,
    /// Completed and rejected before the run began.
    base: (u64, u64),
    last: Tally,
}

impl<T> RunState<T> {
    /// A run whose first customer may arrive at `start`. `base`: the decided counts before it;
    /// `reconnects`: the link's count so far (the rate is judged between outages).
    pub(super) fn new(
        cfg: &SimulatorConfig,
        stock: i64,
        base: (u64, u64),
        resilient: bool,
        lost_sale: String,
        reconnects: u64,
        start: tokio::time::Instant,
    ) -> Self {
        let started = start.into_std();
        // no stock, no sale: nobody is sent
        let arriving = stock > 0;
        RunState {
            stock,
            target_rate: cfg.rate,
            start,
            started,
            arrivals: Arrivals::new(cfg, start),
            arriving,
            until_sold_out: cfg.customers == 0,
            resilient,
            max_delay_ms: cfg.max_order_delay.as_millis() as u64,
            arrivals_ended: (!arriving).then_some(started),
            last_customer_write: started,
            due_orders: BinaryHeap::new(),
            in_flight: VecDeque::new(),
            next_batch: 1,
            customers: 0,
            orders: 0,
            stopped: None,
            lost: false,
            lost_sale,
            rate_watch: cfg.rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| RateWatch::new(r, reconnects)),
            next_reading: start,
            base,
            last: Tally::default(),
        }
    }

    pub(super) fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// Stop the run: nothing more is sent, the batches in flight are still awaited.
    pub(super) fn stop(&mut self, why: String) {
        self.stopped.get_or_insert(why);
    }

    fn lose_sale(&mut self) {
        self.stopped.get_or_insert_with(|| self.lost_sale.clone());
        self.lost = true;
    }

    fn end_arrivals(&mut self, at: Instant) {
        self.arriving = false;
        self.arrivals_ended = Some(at);
    }

    /// A stopped run lets nobody else in; `at` is when the arrivals end then.
    pub(super) fn end_arrivals_if_stopped(&mut self, at: Instant) {
        if self.arriving && self.stopped.is_some() {
            self.end_arrivals(at);
        }
    }

    /// The orders whose delay is over by `now`, earliest first, at most `max`.
    fn take_due_orders(&mut self, now: tokio::time::Instant, max: usize) -> Vec<(u64, String)> {
        let mut orders = Vec::new();
        while orders.len() < max && self.due_orders.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Some(Reverse((_, n, customer))) = self.due_orders.pop() else { break };
            orders.push((n, customer));
        }
        orders
    }

    /// Orders that will wait for their delay: those waiting now and those of customers in flight.
    fn waiting_orders(&self) -> usize {
        self.due_orders.len() + self.in_flight.iter().map(|b| b.customers as usize).sum::<usize>()
    }

    /// The next batch: the customers who have arrived by `now` and the orders due by then, while the
    /// window has room and the run goes on; `None` when nothing is due.
    fn next_batch(&mut self, now: tokio::time::Instant) -> Option<Batch> {
        if self.stopped.is_some() || self.in_flight.len() >= WINDOW {
            return None;
        }
        let first = self.arrivals.issued + 1;
        // arrivals pause while too many orders wait, so long order delays cannot eat the memory
        let room = MAX_WAITING_ORDERS.saturating_sub(self.waiting_orders()).min(BATCH);
        let customers = if self.arriving { self.arrivals.take(now, room as u64) } else { 0 };
        let orders = self.take_due_orders(now, BATCH);
        if customers == 0 && orders.is_empty() {
            return None;
        }
        let number = self.next_batch;
        self.next_batch += 1;
        Some(Batch { number, first, customers, orders })
    }

    /// Hand out everything due by `now` while the window has room; `send` starts writing one batch
    /// and returns what to wait on for its outcome.
    pub(super) fn send_due(&mut self, now: tokio::time::Instant, mut send: impl FnMut(Batch) -> T) {
        while let Some(batch) = self.next_batch(now) {
            let (first, customers, orders) = (batch.first, batch.customers, batch.orders.len() as u64);
            self.in_flight.push_back(InFlight { first, customers, orders, task: send(batch) });
        }
    }

    /// What to wait on for the oldest batch in flight.
    pub(super) fn oldest_task(&mut self) -> Option<&mut T> {
        self.in_flight.front_mut().map(|b| &mut b.task)
    }

    /// Called after sending what was due, so customers due before the deadline are not cut off: ends
    /// the arrivals when nobody else will arrive. Returns a warning when the deadline cut them short.
    pub(super) fn close_arrivals(&mut self, now: tokio::time::Instant, at: Instant) -> Option<&'static str> {
        if !self.arriving || !self.arrivals.over(now) {
            return None;
        }
        self.end_arrivals(at);
        (!self.arrivals.limit_reached()).then_some("max duration reached; stopping the arrival of customers")
    }

    /// Nothing is in flight and nothing is left to send (or the run stopped).
    pub(super) fn sending_over(&self) -> bool {
        self.in_flight.is_empty() && (self.stopped.is_some() || (!self.arriving && self.due_orders.is_empty()))
    }

    /// The next timed event after `now`: a reading of the sale (unless one is under way), an arrival,
    /// the deadline, an order's due time; never sooner than [`MIN_TICK`]. `None`: only a batch or a
    /// reading ending can move the run on.
    pub(super) fn wake(&self, now: tokio::time::Instant, reading: bool) -> Option<tokio::time::Instant> {
        if self.stopped.is_some() {
            return None;
        }
        let mut events = Vec::with_capacity(4);
        if !reading {
            events.push(self.next_reading);
        }
        // a full window sends nothing until a batch comes back, whatever is due
        if self.in_flight.len() < WINDOW {
            if self.arriving && self.waiting_orders() < MAX_WAITING_ORDERS {
                events.extend(self.arrivals.next_at());
                events.extend(self.arrivals.deadline.map(|d| if now < d { d } else { d + DEADLINE_GRACE }));
            }
            events.extend(self.due_orders.peek().map(|Reverse((due, ..))| *due));
        }
        events.into_iter().min().map(|w| w.max(now + MIN_TICK))
    }

    /// The oldest batch in flight ended at `acked`. Returns a warning when the rate cannot be held.
    pub(super) fn batch_done(
        &mut self,
        outcome: Outcome,
        acked: tokio::time::Instant,
        reconnects: u64,
    ) -> Option<String> {
        let batch = self.in_flight.pop_front().expect("only a batch in flight ends");
        match outcome {
            Outcome::Written(ids) => return self.written(batch, ids, acked, reconnects),
            Outcome::SaleGone => self.lose_sale(),
            Outcome::Failed(why) => self.stop(why),
        }
        None
    }

    fn written(
        &mut self,
        b: InFlight<T>,
        ids: Vec<String>,
        acked: tokio::time::Instant,
        reconnects: u64,
    ) -> Option<String> {
        self.customers += b.customers;
        self.orders += b.orders;
        if b.customers > 0 {
            self.last_customer_write = acked.into_std();
        }
        for (i, id) in ids.into_iter().enumerate() {
            let due = acked + random_millis(self.max_delay_ms);
            // after the deadline, pending orders go out at once rather than keeping the run alive
            let due = self.arrivals.deadline.map_or(due, |d| due.min(d));
            self.due_orders.push(Reverse((due, b.first + i as u64, id)));
        }
        self.rate_watch.as_mut().filter(|_| b.customers > 0)?.arrived(b.customers, reconnects)
    }

    /// Whether to start reading the sale at `now` (none is under way and the run goes on); the next
    /// reading is then due [`PROGRESS_EVERY`] later.
    pub(super) fn reading_due(&mut self, now: tokio::time::Instant, reading: bool) -> bool {
        if reading || self.stopped.is_some() || now < self.next_reading {
            return false;
        }
        self.next_reading = now + PROGRESS_EVERY;
        true
    }

    /// The sale was read while sending (at `at`). Without `--customers`, a sold-out sale ends the
    /// arrivals; a reconnecting run that finds no `product` stops (Redis lost the sale).
    pub(super) fn sale_read(&mut self, sale: &SaleSnapshot, at: Instant) {
        self.record(sale.completed, sale.rejected, sale.product);
        if !(self.arriving && self.until_sold_out) {
            return;
        }
        match sale.product {
            None if self.resilient => self.lose_sale(),
            v if v.unwrap_or(0) <= 0 => self.end_arrivals(at),
            _ => {}
        }
    }

    /// Numbers read from Redis; the run's own are what was added since it began.
    pub(super) fn record(&mut self, completed: u64, rejected: u64, product: Option<i64>) {
        self.last = Tally {
            completed: completed.saturating_sub(self.base.0),
            rejected: rejected.saturating_sub(self.base.1),
            product,
        };
    }

    /// Every order written was decided, by the last numbers read.
    pub(super) fn all_decided(&self) -> bool {
        self.last.completed + self.last.rejected >= self.orders
    }

    pub(super) fn progress(&self, sending: bool) -> Progress {
        Progress {
            customers: self.customers,
            orders: self.orders,
            product: self.last.product,
            completed: self.last.completed,
            rejected: self.last.rejected,
            elapsed_millis: self.start.elapsed().as_millis() as u64,
            sending,
        }
    }

    /// The sending is over: how long it took. Returns a warning when the run as a whole fell short
    /// of the rate.
    pub(super) fn end_sending(&mut self, reconnects: u64) -> (Timing, Option<String>) {
        let send_secs = self.started.elapsed().as_secs_f64();
        let arrivals_ended = self.arrivals_ended.unwrap_or_else(Instant::now).max(self.last_customer_write);
        let arrival_secs = (arrivals_ended - self.started).as_secs_f64();
        let warning = self.rate_watch.as_mut().and_then(|w| w.finish(self.customers, arrival_secs, reconnects));
        (Timing { send_secs, arrival_secs }, warning)
    }

    pub(super) fn summary(self, timing: Timing, all_processed: bool, reconnects: u64) -> SimulationSummary {
        let Tally { completed, rejected, product } = self.last;
        // a lost sale's stock went with it
        let product_left = if self.lost { None } else { product };
        SimulationSummary {
            stock: self.stock,
            customers: self.customers,
            orders: self.orders,
            orders_not_sent: self.customers.saturating_sub(self.orders),
            completed,
            rejected,
            product_left,
            all_processed,
            duration_secs: self.started.elapsed().as_secs_f64(),
            customers_per_sec: if timing.arrival_secs > 0.0 {
                self.customers as f64 / timing.arrival_secs
            } else {
                0.0
            },
            target_rate: self.target_rate,
            lowest_rate: self.rate_watch.as_ref().and_then(|w| w.lowest),
            behind_rate: self.rate_watch.as_ref().is_some_and(|w| w.behind),
            reconnects,
            error: self.stopped,
            arrival_secs: timing.arrival_secs,
            send_secs: timing.send_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LOST: &str = "the sale is gone";

    /// A run whose tasks are nothing: the tests play the batches' outcomes themselves.
    fn state(cfg: &SimulatorConfig, stock: i64, resilient: bool) -> (RunState<()>, tokio::time::Instant) {
        let start = tokio::time::Instant::now();
        (RunState::new(cfg, stock, (0, 0), resilient, LOST.into(), 0, start), start)
    }

    /// Everything the state hands out at `now`.
    fn sent(s: &mut RunState<()>, now: tokio::time::Instant) -> Vec<Batch> {
        let mut batches = Vec::new();
        s.send_due(now, |b| batches.push(b));
        batches
    }

    fn ids(first: u64, count: u64) -> Vec<String> {
        (first..first + count).map(|n| format!("{n}-0")).collect()
    }

    fn cfg(customers: u64, rate: Option<f64>) -> SimulatorConfig {
        SimulatorConfig {
            customers,
            rate,
            max_arrival: Duration::ZERO,
            max_order_delay: Duration::ZERO,
            ..Default::default()
        }
    }

    #[test]
    fn orders_go_out_once_their_delay_is_over_earliest_first_and_a_batch_at_most() {
        let (mut s, start) = state(&cfg(1, None), 10, false);
        let at = |ms| start + Duration::from_millis(ms);
        for (due, n) in [(30, 3), (10, 1), (20, 2), (40, 4)] {
            s.due_orders.push(Reverse((at(due), n, format!("{n}-0"))));
        }
        assert_eq!(s.take_due_orders(at(5), BATCH), vec![], "none is due yet");
        assert_eq!(s.take_due_orders(at(30), 2), vec![(1, "1-0".into()), (2, "2-0".into())], "capped, earliest first");
        assert_eq!(s.take_due_orders(at(30), BATCH), vec![(3, "3-0".into())], "due exactly at its time");
        assert_eq!(s.due_orders.len(), 1, "the order due later waits");
    }

    #[test]
    fn a_batch_carries_the_customers_who_arrived_and_the_orders_that_are_due() {
        let (mut s, start) = state(&cfg(0, Some(1000.0)), 10, false);
        let b = sent(&mut s, start + Duration::from_millis(10));
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].number, b[0].first, b[0].customers, b[0].orders.len()), (1, 1, 11, 0));
        assert_eq!(sent(&mut s, start + Duration::from_millis(10)).len(), 0, "nobody twice");

        // written at 12 ms with no order delay: the 11 orders are due at once, with the customers since
        let acked = start + Duration::from_millis(12);
        assert_eq!(s.batch_done(Outcome::Written(ids(1, 11)), acked, 0), None);
        let b = sent(&mut s, acked);
        assert_eq!((b[0].number, b[0].first, b[0].customers), (2, 12, 2));
        let orders: Vec<u64> = b[0].orders.iter().map(|(n, _)| *n).collect();
        assert_eq!(orders, (1..=11).collect::<Vec<_>>());
        assert_eq!(b[0].orders[0].1, "1-0", "an order names its customer's entry id");
        assert_eq!((s.customers, s.orders), (11, 0), "counted once written, not when sent");
    }

    #[test]
    fn at_most_a_window_of_batches_is_in_flight() {
        let (mut s, start) = state(&cfg(0, Some(1_000_000.0)), 10, false);
        let late = start + Duration::from_secs(10);
        let b = sent(&mut s, late);
        let firsts: Vec<u64> = b.iter().map(|b| b.first).collect();
        assert_eq!(firsts, [1, 501, 1001, 1501], "{WINDOW} full batches of {BATCH}");
        assert_eq!(sent(&mut s, late).len(), 0, "the window is full");
        assert_eq!(s.wake(late, true), None, "a full window waits for a batch, not for a timer");
        s.batch_done(Outcome::Written(ids(1, 500)), late, 0);
        let b = sent(&mut s, late);
        assert_eq!((b.len(), b[0].number, b[0].first, b[0].orders.len()), (1, 5, 2001, 500));
    }

    #[test]
    fn the_run_sends_until_every_customer_and_order_is_written() {
        let (mut s, start) = state(&cfg(3, None), 10, false);
        let b = sent(&mut s, start);
        assert_eq!((b.len(), b[0].customers), (1, 3));
        assert_eq!(s.close_arrivals(start, Instant::now()), None, "--customers reached: no warning");
        assert!(!s.arriving && !s.sending_over(), "a batch is in flight");
        s.batch_done(Outcome::Written(ids(1, 3)), start, 0);
        assert!(!s.sending_over(), "its orders are still to send");
        assert_eq!(sent(&mut s, start)[0].orders.len(), 3);
        s.batch_done(Outcome::Written(vec![]), start, 0);
        assert!(s.sending_over());
        let summary = s.summary(Timing { send_secs: 1.0, arrival_secs: 0.5 }, false, 0);
        assert_eq!((summary.customers, summary.orders, summary.orders_not_sent), (3, 3, 0));
        assert_eq!(summary.customers_per_sec, 6.0);
        assert_eq!(summary.error, None);
    }

    #[test]
    fn a_stopped_run_sends_nothing_more_and_ends_once_its_batches_are_back() {
        let (mut s, start) = state(&cfg(0, Some(1_000_000.0)), 10, false);
        let late = start + Duration::from_secs(1);
        assert_eq!(sent(&mut s, late).len(), WINDOW);
        s.batch_done(Outcome::Failed("Redis said no".into()), late, 0);
        s.batch_done(Outcome::Failed("a later reason".into()), late, 0);
        assert!(s.stopped() && !s.sending_over(), "two batches are still out");
        assert_eq!(sent(&mut s, late).len(), 0);
        assert_eq!(s.wake(late, false), None);
        assert!(!s.reading_due(late, false), "no reading after a stop");
        s.end_arrivals_if_stopped(Instant::now());
        assert!(!s.arriving);
        s.batch_done(Outcome::Written(ids(1001, 500)), late, 0);
        s.batch_done(Outcome::Written(ids(1501, 500)), late, 0);
        assert!(s.sending_over(), "due orders are not sent after a stop");
        let summary = s.summary(Timing { send_secs: 1.0, arrival_secs: 1.0 }, false, 0);
        assert_eq!(summary.error.as_deref(), Some("Redis said no"), "the first reason stays");
        assert_eq!((summary.customers, summary.orders_not_sent), (1000, 1000));
    }

    #[test]
    fn only_a_deadline_that_cuts_the_arrivals_warns() {
        let deadline = SimulatorConfig { max_duration: Some(Duration::from_secs(1)), ..cfg(0, Some(10.0)) };
        let (mut s, start) = state(&deadline, 10, false);
        let after = start + Duration::from_secs(1);
        sent(&mut s, start);
        assert_eq!(s.close_arrivals(start, Instant::now()), None, "not over before the deadline");
        assert!(s.arriving);
        sent(&mut s, after);
        assert!(s.close_arrivals(after, Instant::now()).is_some_and(|w| w.contains("max duration")));
        assert_eq!(s.close_arrivals(after, Instant::now()), None, "once");
        assert!(s.arrivals_ended.is_some());
    }

    #[test]
    fn orders_wait_at_most_until_the_deadline() {
        let long = SimulatorConfig {
            max_duration: Some(Duration::from_secs(1)),
            max_order_delay: Duration::from_secs(3600),
            ..cfg(0, Some(10.0))
        };
        let (mut s, start) = state(&long, 10, false);
        sent(&mut s, start);
        s.batch_done(Outcome::Written(ids(1, 1)), start, 0);
        let Some(Reverse((due, ..))) = s.due_orders.peek() else { panic!("the order waits") };
        assert!(*due <= start + Duration::from_secs(1), "{:?}", *due - start);
    }

    #[test]
    fn without_a_customer_count_a_sold_out_sale_ends_the_arrivals() {
        let sale = |product| SaleSnapshot { product, ..Default::default() };
        let (mut s, _) = state(&cfg(0, Some(10.0)), 10, true);
        s.sale_read(&sale(Some(3)), Instant::now());
        assert!(s.arriving);
        s.sale_read(&sale(Some(0)), Instant::now());
        assert!(!s.arriving && !s.stopped(), "sold out is the end, not an error");

        // a reconnecting run reading no product: Redis lost the sale
        let (mut s, _) = state(&cfg(0, Some(10.0)), 10, true);
        s.record(0, 0, Some(7));
        s.sale_read(&sale(None), Instant::now());
        assert!(s.stopped() && s.lost);
        let summary = s.summary(Timing { send_secs: 0.0, arrival_secs: 0.0 }, false, 0);
        assert_eq!((summary.error.as_deref(), summary.product_left), (Some(LOST), None));
        // a run on the caller's connection takes a missing product as sold out
        let (mut s, _) = state(&cfg(0, Some(10.0)), 10, false);
        s.sale_read(&sale(None), Instant::now());
        assert!(!s.arriving && !s.stopped());
        // with --customers the count alone ends the arrivals
        let (mut s, _) = state(&cfg(5, Some(10.0)), 10, true);
        s.sale_read(&sale(Some(0)), Instant::now());
        assert!(s.arriving);
    }

    #[test]
    fn a_sale_gone_stops_the_run_and_forgets_the_stock() {
        let (mut s, start) = state(&cfg(0, Some(10.0)), 10, true);
        sent(&mut s, start);
        s.record(0, 0, Some(9));
        s.batch_done(Outcome::SaleGone, start, 0);
        let summary = s.summary(Timing { send_secs: 0.0, arrival_secs: 0.0 }, false, 0);
        assert_eq!((summary.error.as_deref(), summary.product_left, summary.customers), (Some(LOST), None, 0));
    }

    #[test]
    fn progress_counts_what_this_run_added() {
        let (mut s, start) = state(&cfg(0, Some(10.0)), 10, false);
        s.base = (100, 40);
        sent(&mut s, start);
        s.batch_done(Outcome::Written(ids(1, 1)), start, 0);
        s.record(105, 41, Some(5));
        let p = s.progress(true);
        assert_eq!((p.customers, p.orders, p.completed, p.rejected, p.product, p.sending), (1, 0, 5, 1, Some(5), true));
        // a Redis that came back with shorter streams counts as nothing decided, not as a wrap-around
        s.record(3, 2, None);
        let p = s.progress(false);
        assert_eq!((p.completed, p.rejected, p.product, p.sending), (0, 0, None, false));
    }

    #[test]
    fn every_order_written_decided_is_the_end_of_the_wait() {
        let (mut s, start) = state(&cfg(2, None), 10, false);
        sent(&mut s, start);
        s.batch_done(Outcome::Written(ids(1, 2)), start, 0);
        sent(&mut s, start);
        s.batch_done(Outcome::Written(vec![]), start, 0);
        s.record(1, 0, Some(9));
        assert!(!s.all_decided());
        s.record(1, 1, Some(9));
        assert!(s.all_decided());
    }

    #[test]
    fn the_sale_is_read_every_interval_one_reading_at_a_time() {
        let (mut s, start) = state(&cfg(0, Some(10.0)), 10, false);
        assert!(s.reading_due(start, false), "the first reading is due at once");
        assert!(!s.reading_due(start + PROGRESS_EVERY / 2, false));
        assert!(!s.reading_due(start + PROGRESS_EVERY, true), "one under way");
        assert!(s.reading_due(start + PROGRESS_EVERY, false));
    }

    #[test]
    fn the_run_wakes_for_its_next_event_and_not_sooner_than_a_tick() {
        let (mut s, start) = state(&cfg(0, Some(10.0)), 10, false);
        sent(&mut s, start);
        assert_eq!(s.wake(start, false), Some(start + MIN_TICK), "the first reading is due now");
        assert_eq!(s.wake(start, true), Some(start + Duration::from_millis(100)), "the next customer at 10/s");
        s.batch_done(Outcome::Written(ids(1, 1)), start + Duration::from_millis(50), 0);
        assert_eq!(s.wake(start, true), Some(start + Duration::from_millis(50)), "its order, due on writing");
        s.stop("x".into());
        assert_eq!(s.wake(start, false), None);
    }

    #[test]
    fn the_arrivals_last_until_they_end_or_the_last_customer_was_written() {
        let (mut s, start) = state(&cfg(1, None), 10, false);
        sent(&mut s, start);
        let written = start + Duration::from_millis(300);
        s.batch_done(Outcome::Written(ids(1, 1)), written, 0);
        s.arrivals_ended = Some(start.into_std() + Duration::from_millis(100));
        let (timing, warning) = s.end_sending(0);
        assert_eq!(timing.arrival_secs, 0.3, "the write came after the end of the arrivals");
        assert_eq!(warning, None, "no rate asked");
        let (s, _) = state(&cfg(1, None), 0, false);
        assert!(!s.arriving && s.arrivals_ended == Some(s.started), "no stock: nobody arrives");
    }
}
