//! `popup-operator dashboard`: the Grafana dashboard's panels, full screen in the terminal, redrawn
//! live from the store's Redis. The panels and their queries are `dashboard`'s (read from
//! grafana/popup-store.json); this file draws them (`draw`, pure: a [`Board`] onto a frame) and runs
//! the terminal: a reader task polls Redis and reconnects, the main loop redraws on each reading, key
//! and resize, and the terminal is restored however it ends.

use std::time::Duration;

use chrono::{Local, TimeZone};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Wrap};
use tokio::sync::{mpsc, watch};

use super::sale_commands::{DashboardArgs, WINDOWS};
use crate::dashboard::panels::{Kind, Panel, format_number};
use crate::dashboard::{self, Line, Shown, Snapshot};
use crate::sale::{connect_reader, redact};

/// The smallest terminal the panels fit in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;
/// Stat tiles sit in one row from this width, else in two.
const ONE_ROW_OF_TILES: u16 = 6 * 19;
/// How long one reading (or connecting) may take before Redis counts as unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a Redis that is away is tried again, at the least.
const RETRY: Duration = Duration::from_secs(1);

/// The error of `dashboard` without a terminal, naming the commands that work there (exit code 2).
pub fn not_a_terminal() -> String {
    "popup-operator dashboard draws on a terminal, and stdout is not one (a pipe, a file, CI). There, \
     follow the sale with `popup-operator sale --watch` (a line per change) or read it once with \
     `popup-operator sale --json`."
        .into()
}

/// What the screen shows: the panels, the latest reading, and what is wrong with Redis if anything.
pub struct Board {
    pub panels: Vec<Panel>,
    /// The Redis URL without its password.
    pub redis: String,
    /// Index into [`WINDOWS`].
    pub window: usize,
    pub interval: Duration,
    pub latest: Option<Snapshot>,
    /// Redis cannot be read: why (the latest reading, if any, stays on screen).
    pub trouble: Option<String>,
}

/// What the reader task tells the screen.
pub enum Reading {
    Read(Snapshot),
    Trouble(String),
}

impl Board {
    pub fn apply(&mut self, reading: Reading) {
        match reading {
            Reading::Read(snapshot) => {
                self.latest = Some(snapshot);
                self.trouble = None;
            }
            Reading::Trouble(why) => self.trouble = Some(why),
        }
    }
}

/// Runs the dashboard until `q`, Esc, Ctrl-C or SIGTERM. Stdout must be a terminal (`cli::main`
/// checks it first, to answer with exit code 2 and [`not_a_terminal`]).
pub async fn run(args: DashboardArgs) -> Result<(), String> {
    let panels = dashboard::panels::panels();
    let mut board = Board {
        panels: panels.clone(),
        redis: redact(&args.redis.url),
        window: args.window,
        interval: Duration::from_millis(args.interval_millis),
        latest: None,
        trouble: None,
    };
    let (window_tx, window_rx) = watch::channel(WINDOWS[args.window].1);
    let (readings_tx, mut readings) = mpsc::channel(4);
    let reader = tokio::spawn(read_redis(args, panels, window_rx, readings_tx));
    let mut keys = keys();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;

    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot take over the terminal: {e}"))?;
    let _restore = Restore;
    loop {
        terminal.draw(|f| draw(f, &board)).map_err(|e| format!("cannot draw on the terminal: {e}"))?;
        tokio::select! {
            Some(reading) = readings.recv() => board.apply(reading),
            Some(event) = keys.recv() => match action(&event) {
                Action::Quit => break,
                Action::Window(step) => {
                    board.window = (board.window as isize + step).clamp(0, WINDOWS.len() as isize - 1) as usize;
                    let _ = window_tx.send(WINDOWS[board.window].1);
                }
                Action::Redraw => {}
            },
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    reader.abort();
    Ok(())
}

/// Gives the terminal back (main screen, cooked mode, cursor) when the loop ends, by error too.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

enum Action {
    Quit,
    /// Move along [`WINDOWS`]: -1 shorter, +1 longer.
    Window(isize),
    Redraw,
}

fn action(event: &Event) -> Action {
    let Event::Key(KeyEvent { code, modifiers, kind: KeyEventKind::Press, .. }) = event else {
        return Action::Redraw; // a resize, or a key release
    };
    match code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Left | KeyCode::Char('-') => Action::Window(-1),
        KeyCode::Right | KeyCode::Char('+') | KeyCode::Char('=') => Action::Window(1),
        _ => Action::Redraw,
    }
}

/// Terminal events (keys, resizes) from a thread, since reading them blocks.
fn keys() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if tx.blocking_send(e).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                },
                Ok(false) => {}
                Err(_) => break,
            }
        }
    });
    rx
}

/// Reads every panel every interval; after a failure says why and connects again (at most every
/// [`RETRY`]). A changed window is read at once.
async fn read_redis(
    args: DashboardArgs,
    panels: Vec<Panel>,
    mut window: watch::Receiver<i64>,
    tx: mpsc::Sender<Reading>,
) {
    let interval = Duration::from_millis(args.interval_millis);
    let mut conn = None;
    loop {
        if conn.is_none() {
            conn = match tokio::time::timeout(
                READ_TIMEOUT,
                connect_reader(&args.redis.url, args.redis.password.as_deref()),
            )
            .await
            {
                Ok(Ok((c, _))) => Some(c),
                Ok(Err(e)) => {
                    let _ = tx.send(Reading::Trouble(format!("{e}"))).await;
                    None
                }
                Err(_) => {
                    let _ = tx.send(Reading::Trouble(format!("no answer within {} s", READ_TIMEOUT.as_secs()))).await;
                    None
                }
            };
        }
        if let Some(c) = conn.as_mut() {
            let now = chrono::Utc::now().timestamp_millis();
            let window_ms = *window.borrow_and_update();
            match tokio::time::timeout(READ_TIMEOUT, dashboard::read(c, &panels, now, window_ms)).await {
                Ok(Ok(snapshot)) => {
                    if tx.send(Reading::Read(snapshot)).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    conn = None;
                    let _ = tx.send(Reading::Trouble(format!("{e}"))).await;
                }
                Err(_) => {
                    conn = None;
                    let _ = tx.send(Reading::Trouble(format!("no answer within {} s", READ_TIMEOUT.as_secs()))).await;
                }
            }
        }
        let pause = if conn.is_some() { interval } else { interval.max(RETRY) };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = window.changed() => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

// ---- drawing ------------------------------------------------------------------------------------

/// Grafana's colour names as terminal colours.
fn color(name: &str) -> Color {
    match name {
        "red" => Color::Red,
        "orange" => Color::Indexed(208),
        "green" => Color::Green,
        "blue" => Color::Blue,
        "purple" => Color::Magenta,
        "yellow" => Color::Yellow,
        _ => Color::Reset,
    }
}

/// The colours of a chart's lines, in order (Grafana's classic palette, as terminals have it).
const LINE_COLORS: [Color; 4] = [Color::Green, Color::Yellow, Color::Cyan, Color::Magenta];

fn clock(ms: i64) -> String {
    Local.timestamp_millis_opt(ms).single().map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default()
}

/// Draws the whole board: a header, the stat tiles, the charts in their Grafana rows, a footer.
pub fn draw(frame: &mut Frame, board: &Board) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "The dashboard needs a terminal of at least {MIN_WIDTH}×{MIN_HEIGHT}; this one is {}×{}. \
             Make it larger (q quits), or follow the sale with `popup-operator sale --watch`.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let tiles_height = if area.width >= ONE_ROW_OF_TILES { 3 } else { 6 };
    let [header, tiles, charts, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(tiles_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(header_line(board), header);
    draw_tiles(frame, board, tiles);
    draw_charts(frame, board, charts);
    frame.render_widget(footer_line(board), footer);
}

fn header_line(board: &Board) -> Paragraph<'static> {
    let updated = match &board.latest {
        Some(s) => format!("updated {}", clock(s.to_ms)),
        None => "not read yet".into(),
    };
    Paragraph::new(TextLine::from(vec![
        Span::from(" Pop-up Store ").bold().reversed(),
        Span::from(format!(
            "  {updated}  ·  last {}  ·  every {} ms  ·  {}",
            WINDOWS[board.window].0,
            board.interval.as_millis(),
            board.redis,
        )),
    ]))
}

fn footer_line(board: &Board) -> Paragraph<'static> {
    match &board.trouble {
        Some(why) => {
            let since = match &board.latest {
                Some(s) => format!("the numbers shown are from {}", clock(s.to_ms)),
                None => "nothing read yet".into(),
            };
            Paragraph::new(format!(" Redis unreachable: {why}. Retrying every {} s; {since}.", RETRY.as_secs()))
                .style(Style::new().fg(Color::White).bg(Color::Red).bold())
        }
        None => Paragraph::new(" ←/→ or -/+: time window   q, Esc or Ctrl-C: quit   Grafana shows the same panels")
            .style(Style::new().dim()),
    }
}

fn shown(board: &Board, index: usize) -> Option<&Shown> {
    board.latest.as_ref().and_then(|s| s.panels.get(index))
}

fn draw_tiles(frame: &mut Frame, board: &Board, area: Rect) {
    let stats: Vec<(usize, &Panel)> =
        board.panels.iter().enumerate().filter(|(_, p)| matches!(p.kind, Kind::Stat(_))).collect();
    let per_row = if area.height >= 6 { stats.len().div_ceil(2) } else { stats.len() }.max(1);
    let rows = Layout::vertical(vec![Constraint::Length(3); stats.len().div_ceil(per_row)]).split(area);
    for (row, chunk) in rows.iter().zip(stats.chunks(per_row)) {
        let cells = Layout::horizontal(vec![Constraint::Fill(1); chunk.len()]).split(*row);
        for (cell, (index, panel)) in cells.iter().zip(chunk) {
            let Kind::Stat(style) = &panel.kind else { continue };
            let (text, look) = match shown(board, *index) {
                Some(Shown::Stat(Ok(v))) => {
                    let (text, colour) = style.show(*v);
                    (text, Style::new().fg(Color::Black).bg(color(&colour)).bold())
                }
                Some(Shown::Stat(Err(_))) => ("no data".to_string(), Style::new().dim()),
                _ => ("…".to_string(), Style::new().dim()),
            };
            let block = Block::bordered().title(TextLine::from(panel.title.clone()).centered()).style(look);
            frame.render_widget(Paragraph::new(text).alignment(Alignment::Center).block(block), *cell);
        }
    }
}

/// A Grafana row of charts: its title, and its panels with their index among all panels.
type ChartRow<'a> = (Option<&'a str>, Vec<(usize, &'a Panel)>);

fn draw_charts(frame: &mut Frame, board: &Board, area: Rect) {
    // Grafana's rows, in order, each holding its panels side by side.
    let mut rows: Vec<ChartRow> = Vec::new();
    for (index, panel) in board.panels.iter().enumerate().filter(|(_, p)| matches!(p.kind, Kind::Chart { .. })) {
        match rows.last_mut() {
            Some((row, members)) if *row == panel.row.as_deref() => members.push((index, panel)),
            _ => rows.push((panel.row.as_deref(), vec![(index, panel)])),
        }
    }
    let areas = Layout::vertical(vec![Constraint::Fill(1); rows.len()]).split(area);
    for (row_area, (row, members)) in areas.iter().zip(&rows) {
        let cells = Layout::horizontal(vec![Constraint::Fill(1); members.len()]).split(*row_area);
        for (cell, (index, panel)) in cells.iter().zip(members) {
            draw_chart(frame, board, *cell, panel, *row, shown(board, *index));
        }
    }
}

/// One chart panel: its lines over the window, and a legend line with each line's last, largest and
/// (for bars) total value over the window, as Grafana's legend calculations would give them.
fn draw_chart(frame: &mut Frame, board: &Board, area: Rect, panel: &Panel, row: Option<&str>, shown: Option<&Shown>) {
    let Kind::Chart { bars, points: dots } = panel.kind else { return };
    // The Grafana row in front of the title where it fits.
    let title = match row {
        Some(row) if usize::from(area.width) >= row.len() + panel.title.len() + 8 => format!("{row} › {}", panel.title),
        _ => panel.title.clone(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (lines, notes) = match shown {
        Some(Shown::Chart { lines, notes }) => (lines.as_slice(), notes.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let snapshot = board.latest.as_ref();
    let (from, to) = snapshot.map(|s| (s.from_ms, s.to_ms)).unwrap_or((0, WINDOWS[board.window].1));
    let window_s = (to - from) as f64 / 1000.0;
    let data: Vec<Vec<(f64, f64)>> = lines
        .iter()
        // A bucket that began before the window (TS.RANGE returns it) is drawn at the left edge.
        .map(|l| l.points.iter().map(|(t, v)| (((t - from) as f64 / 1000.0).max(0.0), *v)).collect())
        .collect();
    let top = data.iter().flatten().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let y_max = if top > 0.0 { top * 1.1 } else { 1.0 };

    // One legend entry per line, then the notes; on one row when they fit, else one row each.
    let mut entries: Vec<Vec<Span>> = Vec::new();
    let mut datasets = Vec::new();
    for (i, (line, points)) in lines.iter().zip(&data).enumerate() {
        let colour = LINE_COLORS[i % LINE_COLORS.len()];
        let graph = if bars { GraphType::Bar } else { GraphType::Line };
        let marker = if bars { Marker::HalfBlock } else { Marker::Braille };
        datasets.push(Dataset::default().graph_type(graph).marker(marker).style(Style::new().fg(colour)).data(points));
        if points_drawn(points, bars, dots) {
            datasets.push(
                Dataset::default()
                    .graph_type(GraphType::Scatter)
                    .marker(Marker::Dot)
                    .style(Style::new().fg(colour))
                    .data(points),
            );
        }
        entries.push(vec![
            Span::from("■ ").fg(colour),
            Span::from(format!("{}  {}   ", line.name, legend_values(line, bars))),
        ]);
    }
    if lines.is_empty() {
        let text = if notes.is_empty() {
            if snapshot.is_some() {
                "no data in this window".to_string()
            } else {
                "waiting for the first reading".to_string()
            }
        } else {
            notes.join("\n")
        };
        frame.render_widget(Paragraph::new(text).alignment(Alignment::Center).wrap(Wrap { trim: true }).dim(), inner);
        return;
    }
    entries.extend(notes.iter().map(|n| vec![Span::from(format!("{n}   ")).fg(Color::Yellow)]));
    let width: usize = entries.iter().flatten().map(Span::width).sum();
    let legend_rows: Vec<TextLine> = if width <= usize::from(inner.width) {
        vec![TextLine::from(entries.concat())]
    } else {
        entries.into_iter().map(TextLine::from).collect()
    };
    let [plot, legend] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(legend_rows.len() as u16)]).areas(inner);
    let x_labels = vec![Span::from(format!("-{}", WINDOWS[board.window].0)), Span::from("now")];
    let y_labels = vec![Span::from("0"), Span::from(format_number(round_label(y_max)))];
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(Axis::default().bounds([0.0, window_s]).labels(x_labels).style(Style::new().dim()))
        .y_axis(Axis::default().bounds([0.0, y_max]).labels(y_labels).style(Style::new().dim()));
    frame.render_widget(chart, plot);
    frame.render_widget(Paragraph::new(legend_rows), legend);
}

/// Dots on the samples where the panel asks for them, or where a lone sample would not draw a line.
fn points_drawn(points: &[(f64, f64)], bars: bool, always: bool) -> bool {
    !bars && (always || points.len() == 1)
}

/// The y axis' top label: the axis' top to two significant digits, so that it stays short.
fn round_label(v: f64) -> f64 {
    if v < 10.0 {
        return (v * 10.0).round() / 10.0;
    }
    let scale = 10f64.powi(v.log10().floor() as i32 - 1);
    (v / scale).round() * scale
}

/// A legend's numbers: `last` and `max`, and `total` for bars (what a bar chart's buckets add up to).
fn legend_values(line: &Line, bars: bool) -> String {
    let last = line.points.last().map(|(_, v)| *v);
    let max = line.points.iter().map(|(_, v)| *v).reduce(f64::max);
    let total: f64 = line.points.iter().map(|(_, v)| v).sum();
    let show = |v: Option<f64>| v.map(format_number).unwrap_or_else(|| "-".into());
    if bars {
        format!("total {}  max {}", format_number(total), show(max))
    } else {
        format!("last {}  max {}", show(last), show(max))
    }
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::dashboard::panels::panels;

    fn board(latest: Option<Snapshot>, trouble: Option<&str>) -> Board {
        Board {
            panels: panels(),
            redis: "redis://127.0.0.1:6379".into(),
            window: 1,
            interval: Duration::from_millis(500),
            latest,
            trouble: trouble.map(str::to_string),
        }
    }

    fn screen(board: &Board, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, board)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn sold_out() -> Snapshot {
        let to = 1_000_000;
        let series = |v: f64| vec![(to - 10_000, v), (to - 5_000, v)];
        let chart = |names: &[&str], v: f64| Shown::Chart {
            lines: names.iter().map(|n| Line { name: n.to_string(), points: series(v) }).collect(),
            notes: vec![],
        };
        Snapshot {
            from_ms: to - 300_000,
            to_ms: to,
            panels: vec![
                Shown::Stat(Ok(0.0)),
                Shown::Stat(Ok(100.0)),
                Shown::Stat(Ok(0.0)),
                Shown::Stat(Ok(0.0)),
                Shown::Stat(Ok(50.0)),
                Shown::Stat(Ok(10.0)),
                chart(&["arrived"], 30.0),
                chart(&["waiting"], 0.0),
                chart(&["queued"], 0.0),
                chart(&["completed"], 25.0),
                chart(&["orders per second"], 0.8),
                chart(&["rejected"], 5.0),
                chart(&["orders queued", "customers waiting"], 0.0),
            ],
        }
    }

    #[test]
    fn every_panel_is_drawn_with_its_title_and_numbers() {
        let text = screen(&board(Some(sold_out()), None), 140, 40);
        for title in ["Product Available", "Percent Sold", "Orders Processing", "Orders Completed", "Orders Rejected"] {
            assert!(text.contains(title), "{title} missing:\n{text}");
        }
        for title in
            ["Customers Overflow", "Orders In Queue", "Completed Flow", "Throughput", "Rejected Flow", "Backlog"]
        {
            assert!(text.contains(title), "{title} missing:\n{text}");
        }
        assert_eq!(text.matches("Customers Ordering").count(), 2, "{text}");
        assert!(text.contains("SOLD OUT") && text.contains("100.0%"), "{text}");
        assert!(text.contains("completed  total 50  max 25"), "{text}");
        assert!(text.contains("orders queued  last 0  max 0"), "{text}");
        assert!(text.contains("orders per second  last 0.8"), "{text}");
    }

    #[test]
    fn missing_keys_are_notes_not_numbers() {
        let mut snapshot = sold_out();
        snapshot.panels[0] = Shown::Stat(Err("no data yet: product does not exist".into()));
        snapshot.panels[8] =
            Shown::Chart { lines: vec![], notes: vec!["no data yet: ts:len:queue:orders does not exist".into()] };
        let text = screen(&board(Some(snapshot), None), 140, 40);
        assert!(text.contains("no data"), "{text}");
        assert!(text.contains("ts:len:queue:orders does not exist"), "{text}");
    }

    #[test]
    fn a_redis_that_went_away_is_said_and_the_last_numbers_stay() {
        let text = screen(&board(Some(sold_out()), Some("connection refused")), 140, 40);
        assert!(text.contains("Redis unreachable: connection refused. Retrying every 1 s"), "{text}");
        assert!(text.contains("SOLD OUT"), "{text}");
    }

    #[test]
    fn a_narrow_terminal_gets_two_rows_of_tiles_and_a_tiny_one_a_message() {
        let text = screen(&board(Some(sold_out()), None), 80, 24);
        assert!(text.contains("SOLD OUT") && text.contains("Rejected Flow"), "{text}");
        let tiny = screen(&board(None, None), 40, 10);
        assert!(tiny.contains("60×20") && tiny.contains("40×10"), "{tiny}");
    }

    #[test]
    fn keys() {
        let key = |code| Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
        assert!(matches!(action(&key(KeyCode::Char('q'))), Action::Quit));
        assert!(matches!(action(&key(KeyCode::Esc)), Action::Quit));
        assert!(matches!(action(&Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))), Action::Quit));
        assert!(matches!(action(&key(KeyCode::Right)), Action::Window(1)));
        assert!(matches!(action(&key(KeyCode::Char('-'))), Action::Window(-1)));
        assert!(matches!(action(&Event::Resize(100, 30)), Action::Redraw));
    }
}
