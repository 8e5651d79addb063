//! YAML that every Kubernetes reader takes the same way.
//!
//! `serde_yaml` writes YAML 1.2, where `yes`, `on`, `0o7` or `1:20` are plain strings. kubectl, helm and
//! the API server read YAML with go-yaml's 1.1 rules (via `sigs.k8s.io/yaml`), where those words are
//! booleans and numbers: `args: [--appendonly, yes]` came back as a bool and kubectl refused the object.
//! This writer never relies on a reader's resolution rules for a string: a string is written plain only
//! when it is a word that no YAML version or reader turns into anything else; otherwise it is
//! double-quoted (or, when it spans lines, a literal block, which no reader resolves).

use serde_json::Value;

/// Every document as YAML, each starting with `---`.
pub fn documents<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(v));
    }
    out
}

/// One document (a mapping at the top, as every Kubernetes object is; other values work too).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_entries(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => write_items(&mut out, a, 0, false),
        scalar => write_scalar(&mut out, scalar, 0),
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Mapping entries at column `at`; with `inline` the first one continues the current line (after `- `).
fn write_entries(out: &mut String, map: &serde_json::Map<String, Value>, at: usize, inline: bool) {
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, at);
        }
        write_key(out, k);
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_entries(out, m, at + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_items(out, a, at + 2, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, at + 2);
            }
        }
    }
}

fn write_items(out: &mut String, items: &[Value], at: usize, inline: bool) {
    for (i, v) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, at);
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => write_entries(out, m, at + 2, true),
            Value::Array(a) if !a.is_empty() => write_items(out, a, at + 2, true),
            scalar => write_scalar(out, scalar, at + 2),
        }
    }
}

fn write_key(out: &mut String, key: &str) {
    if is_plain_safe(key) {
        out.push_str(key);
    } else {
        write_double_quoted(out, key);
    }
}

/// A scalar (or an empty collection) and the end of its line; block content goes at column `at`.
fn write_scalar(out: &mut String, v: &Value, at: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            // Display never uses an exponent; YAML 1.1 floats need a dot.
            (None, None, Some(f)) if f.is_finite() => {
                let s = f.to_string();
                out.push_str(&s);
                if !s.contains('.') {
                    out.push_str(".0");
                }
            }
            _ => out.push_str("null"),
        },
        Value::String(s) if is_plain_safe(s) => out.push_str(s),
        Value::String(s) if is_literal_safe(s) => return write_literal(out, s, at),
        Value::String(s) => write_double_quoted(out, s),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
    out.push('\n');
}

/// Words that some reader resolves to a bool, null or float even without a digit: YAML 1.1 booleans
/// (`y`, `yes`, `on`, ...), nulls, and the spellings of infinity and NaN some readers accept without a dot.
/// Compared without case, so `yEs` is quoted too (harmless, and no reader's table needs to be trusted).
const RESERVED_WORDS: &[&str] =
    &["y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf", "infinity"];

/// A word every reader takes as this very string: it starts with a letter, `_` or `/` (or `-`/`--` and a
/// letter, as in `--reset`), so no number, date, sexagesimal or YAML indicator can begin it; it holds only
/// `[A-Za-z0-9_./:@+=-]` (no space, no `#`, no `: `); it does not end with `:`; and it is not a reserved word.
pub fn is_plain_safe(s: &str) -> bool {
    let b = s.as_bytes();
    let after_dashes = s.trim_start_matches('-');
    let start_ok = match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'/' => true,
        Some(b'-') => {
            s.len() - after_dashes.len() <= 2 && after_dashes.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        }
        _ => false,
    };
    start_ok
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_./:@+=-".contains(c))
        && !s.ends_with(':')
        && !RESERVED_WORDS.iter().any(|w| after_dashes.eq_ignore_ascii_case(w) || s.eq_ignore_ascii_case(w))
}

/// Characters a double-quoted scalar must escape: everything outside YAML's printable set, plus the
/// characters YAML 1.1 counts as line breaks (NEL, LS, PS) and the byte-order mark.
fn must_escape(c: char) -> bool {
    let printable =
        matches!(c, '\u{20}'..='\u{7E}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}') || c >= '\u{10000}';
    !printable || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if must_escape(c) => {
                // \u covers the BMP; anything else printable was written raw above.
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Multi-line text (scripts, dashboards) as a literal block, when the block reads back byte for byte:
/// no character that needs an escape, no carriage return, no tab or blank line a reader could take for
/// indentation, and a first line that starts with content (so the indentation is detected right).
fn is_literal_safe(s: &str) -> bool {
    let body = s.trim_end_matches('\n');
    body.contains('\n')
        && !body.starts_with([' ', '\t', '\n'])
        && !s.chars().any(|c| c != '\n' && c != '\t' && must_escape(c))
        && !body
            .split('\n')
            .any(|line| line.starts_with('\t') || (!line.is_empty() && line.trim_matches(' ').is_empty()))
}

fn write_literal(out: &mut String, s: &str, at: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    // Chomping: strip (no final newline), clip (one), keep (more).
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            indent(out, at);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// The largest input `render -f` reads: a store is about 1 KB, so this is tens of thousands of stores,
/// and memory stays bounded whatever the file.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// The deepest flow nesting (`[` and `{`) an input file may have. A PopUpStore needs 3 at most
/// (`metadata: {labels: {a: [x]}}`); serde_yaml gives up at 128 anyway, but only after its scanner has
/// done work that grows with the depth for every token: a 200 KB file of brackets took over a minute.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Where an input's flow nesting first went past [`MAX_FLOW_DEPTH`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based, as editors count.
    pub line: usize,
    pub limit: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: brackets nested more than {} deep ([ and {{); no PopUpStore comes near that, refusing to parse",
            self.line, self.limit
        )
    }
}

/// A linear pre-scan of YAML input for flow nesting deeper than `limit`, run before the parser.
///
/// It errs on the side of counting: every `[` or `{` outside a comment counts, also inside a quoted
/// string, because a quote this scan mistakes for a string's start (`a: it 's`) must not hide real
/// brackets. Only a string that opens and closes on one line gives back what it counted, and closing
/// brackets count only outside strings, so no string can lower the depth (`'x'']'`, `"\""`).
pub fn check_flow_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    // Inside a quoted string: its quote, the line it opened on and the depth before it.
    let mut quoted: Option<(u8, usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let prev = if i == 0 { b'\n' } else { bytes[i - 1] };
        match (quoted, c) {
            (_, b'\n') => {
                // A string still open at its line's end may be no string at all: what it holds counts.
                if quoted.is_some() && depth > limit {
                    return Err(TooDeep { line, limit });
                }
                line += 1;
            }
            (_, b'[' | b'{') => {
                depth += 1;
                if quoted.is_none() && depth > limit {
                    return Err(TooDeep { line, limit });
                }
            }
            (Some((b'"', ..)), b'\\') => {
                // An escaped character, a line break included.
                line += usize::from(bytes.get(i + 1) == Some(&b'\n'));
                i += 1;
            }
            (Some((b'\'', ..)), b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 1,
            (Some((q, opened, before)), c) if c == q => {
                quoted = None;
                if opened == line {
                    depth = before;
                }
            }
            (Some(_), _) => {}
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            // Where a string or a comment may begin: after a blank, an indicator or at a line's start.
            (None, b'"' | b'\'')
                if matches!(prev, b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'?' | b'-') =>
            {
                quoted = Some((c, line, depth))
            }
            (None, b'#') if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            (None, _) => {}
        }
        i += 1;
    }
    if depth > limit {
        return Err(TooDeep { line, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use granit_parser::{Event, Parser, ScalarStyle};
    use serde_json::json;

    /// How go-yaml (kubectl, helm, `sigs.k8s.io/yaml`) and the YAML 1.1 type repository resolve a plain
    /// scalar, widened to what any of them accepts: a reader that sees a bool, null, number, date, merge
    /// or value key where we meant a string changes the object.
    fn resolve_yaml11_plain(s: &str) -> Value {
        const BOOL_TRUE: &[&str] = &["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"];
        const BOOL_FALSE: &[&str] = &["n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"];
        if BOOL_TRUE.contains(&s) {
            return json!(true);
        }
        if BOOL_FALSE.contains(&s) {
            return json!(false);
        }
        if ["", "~", "null", "Null", "NULL"].contains(&s) {
            return Value::Null;
        }
        if ["<<", "="].contains(&s) {
            return json!(format!("!!non-string {s}"));
        }
        let unsigned = s.trim_start_matches(['+', '-']);
        let special_float = [".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"].contains(&unsigned);
        let no_underscores = s.replace('_', "");
        let digits = no_underscores.trim_start_matches(['+', '-']);
        let radix =
            |p: &str, ok: fn(char) -> bool| digits.strip_prefix(p).is_some_and(|d| !d.is_empty() && d.chars().all(ok));
        let int = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            || radix("0x", |c| c.is_ascii_hexdigit())
            || radix("0X", |c| c.is_ascii_hexdigit())
            || radix("0o", |c| c.is_digit(8))
            || radix("0b", |c| c.is_digit(2));
        // [-+]?([0-9]*\.[0-9.]*|[0-9]+)([eE][-+]?[0-9]+)? — YAML 1.1 and go-yaml together.
        let float = {
            let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
                Some((m, e)) => (m, Some(e.trim_start_matches(['+', '-']))),
                None => (digits, None),
            };
            exponent.is_none_or(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()))
                && mantissa.chars().any(|c| c.is_ascii_digit())
                && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
                && mantissa.matches('.').count() <= 1
        };
        // Sexagesimal: 1:20, 190:20:30.15.
        let sexagesimal = {
            let mut parts = digits.split(':');
            let first = parts.next().unwrap_or_default();
            let rest: Vec<&str> = parts.collect();
            !rest.is_empty()
                && !first.is_empty()
                && first.chars().all(|c| c.is_ascii_digit())
                && rest.iter().enumerate().all(|(i, p)| {
                    let p = if i == rest.len() - 1 { p.split('.').next().unwrap_or_default() } else { p };
                    (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit())
                })
        };
        let timestamp = s.len() >= 8
            && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && s.as_bytes()[4] == b'-'
            && s[5..].chars().next().is_some_and(|c| c.is_ascii_digit());
        if special_float || int || float || sexagesimal || timestamp {
            return json!(format!("!!non-string {s}"));
        }
        json!(s)
    }

    /// Loads YAML as a YAML 1.1 reader does: a real YAML parser for the structure, [`resolve_yaml11_plain`]
    /// for every plain scalar; quoted and block scalars are strings. Other non-strings come back as a
    /// `!!non-string` marker, which never equals the string that was meant.
    fn load_yaml11(text: &str) -> Vec<Value> {
        enum Frame {
            Seq(Vec<Value>),
            Map(serde_json::Map<String, Value>, Option<String>),
        }
        fn add(stack: &mut [Frame], docs: &mut Vec<Value>, v: Value) {
            match stack.last_mut() {
                None => docs.push(v),
                Some(Frame::Seq(items)) => items.push(v),
                Some(Frame::Map(m, key)) => match key.take() {
                    None => {
                        *key = Some(match v {
                            Value::String(s) => s,
                            other => format!("!!non-string-key {other}"),
                        })
                    }
                    Some(k) => {
                        m.insert(k, v);
                    }
                },
            }
        }
        let (mut docs, mut stack) = (Vec::new(), Vec::new());
        for event in Parser::new_from_str(text) {
            let (event, _) = event.unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"));
            match event {
                Event::Scalar(s, style, _, tag) => {
                    assert!(tag.is_none(), "no tags expected: {s}");
                    let v = if style == ScalarStyle::Plain {
                        match resolve_yaml11_plain(&s) {
                            // Plain decimal numbers, as the writer emits them, become JSON numbers.
                            Value::String(x) if x.starts_with("!!non-string") => {
                                let decimal = s.chars().all(|c| c.is_ascii_digit() || "-.".contains(c));
                                match (s.parse::<i64>(), s.parse::<f64>()) {
                                    (Ok(i), _) => json!(i),
                                    (_, Ok(f)) if decimal => json!(f),
                                    _ => json!(x),
                                }
                            }
                            other => other,
                        }
                    } else {
                        json!(s.into_owned())
                    };
                    add(&mut stack, &mut docs, v);
                }
                Event::SequenceStart(..) => stack.push(Frame::Seq(Vec::new())),
                Event::MappingStart(..) => stack.push(Frame::Map(serde_json::Map::new(), None)),
                Event::SequenceEnd | Event::MappingEnd => {
                    let v = match stack.pop().unwrap() {
                        Frame::Seq(items) => Value::Array(items),
                        Frame::Map(m, _) => Value::Object(m),
                    };
                    add(&mut stack, &mut docs, v);
                }
                _ => {}
            }
        }
        docs
    }

    /// Strings that some YAML reader turns into something else, or that break naive writers.
    pub(crate) const TRICKY: &[&str] = &[
        "yes",
        "Yes",
        "YES",
        "no",
        "NO",
        "y",
        "Y",
        "n",
        "N",
        "on",
        "On",
        "off",
        "OFF",
        "true",
        "False",
        "TRUE",
        "yEs",
        "~",
        "null",
        "Null",
        "NULL",
        "",
        " ",
        "0",
        "-1",
        "+1",
        "007",
        "0o7",
        "0O7",
        "0x1F",
        "0b101",
        "1_000",
        "1e3",
        "1E3",
        "-1e-3",
        "1.",
        ".5",
        "1.5",
        "1.2.3",
        ".inf",
        "-.inf",
        "+.INF",
        ".NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "1:20",
        "190:20:30.15",
        "-1:20",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "<<",
        "=",
        "-",
        "--",
        "---",
        "...",
        "- item",
        "? q",
        "key: value",
        "a #b",
        "#c",
        "trailing ",
        " leading",
        "[a]",
        "{a}",
        "a,b",
        "'q'",
        "\"dq\"",
        "&anchor",
        "*alias",
        "!tag",
        "%dir",
        "@at",
        "`bt",
        "|",
        ">",
        "a:",
        "a: b",
        "back\\slash",
        "tab\there",
        "a\nb",
        "a\n",
        "a\n\n",
        "\na",
        " a\nb",
        "a\n b\n",
        "\ta\nb",
        "x\r\ny",
        "nel\u{85}",
        "ls\u{2028}ps\u{2029}",
        "bom\u{FEFF}",
        "bell\u{7}",
        "del\u{7F}",
        "c1\u{9F}",
        "é ü 日本 🎉",
        "--appendonly",
        "--reset",
        "-c",
        "-.5",
        "--1",
        "redis:8.2.3",
        "ghcr.io/popup-operator/popup-operator:0.1.0",
        "http://x:3000/a?b=c",
        "/bin/sh",
        "app.kubernetes.io/name",
        "100m",
        "128Mi",
        "1Gi",
        "0.5",
        "10000",
    ];

    #[test]
    fn tricky_strings_read_back_as_the_same_strings_in_yaml_1_1_and_1_2() {
        for s in TRICKY {
            let v = json!({ "value": s, "list": [s, [s], {"k": s}], *s: "as key", "nested": {"deeper": {"v": s}} });
            let text = to_yaml(&v);
            assert_eq!(load_yaml11(&text), std::slice::from_ref(&v), "YAML 1.1 reading of {s:?}:\n{text}");
            let yaml12: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
            assert_eq!(yaml12, v, "YAML 1.2 reading of {s:?}:\n{text}");
        }
    }

    #[test]
    fn the_check_catches_what_serde_yaml_writes() {
        // The bug this module fixes: serde_yaml writes these plain, a YAML 1.1 reader gets another type.
        for s in ["yes", "on", "off", "y", "n", "NO", "1:20", "2001-12-14"] {
            let v = json!({ "args": ["--appendonly", s] });
            let text = serde_yaml::to_string(&v).unwrap();
            assert_ne!(load_yaml11(&text), std::slice::from_ref(&v), "{s:?} should be misread:\n{text}");
            assert_eq!(load_yaml11(&to_yaml(&v)), [v]);
        }
    }

    #[test]
    fn plain_words_stay_readable() {
        let v = json!({
            "args": ["--appendonly", "yes", "--port", "6379"],
            "image": "redis:8.2.3",
            "replicas": 1,
            "on": true,
            "ratio": 0.25,
            "none": null,
            "empty": {},
            "list": [],
            "script": "line one\n  indented\n\nlast\n",
        });
        let text = to_yaml(&v);
        assert_eq!(
            text,
            r#"args:
  - --appendonly
  - "yes"
  - --port
  - "6379"
empty: {}
image: redis:8.2.3
list: []
none: null
"on": true
ratio: 0.25
replicas: 1
script: |
  line one
    indented

  last
"#
        );
        assert_eq!(load_yaml11(&text), [v]);
    }

    #[test]
    fn documents_are_separated_and_numbers_keep_their_type() {
        let docs = [
            json!({"a": 1, "b": -2, "c": u64::MAX, "d": 1e-7, "e": [[1, [2]], {"x": [{"y": "z"}]}]}),
            json!({"k": "v"}),
        ];
        let text = documents(&docs);
        assert!(text.starts_with("---\n") && text.matches("---\n").count() == 2, "{text}");
        let back: Vec<Value> =
            serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
        assert_eq!(back, docs);
    }

    #[test]
    fn every_rendered_object_and_the_crd_read_back_unchanged_in_yaml_1_1() {
        use crate::crd::{Engine, GrafanaMode};
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            for mode in [GrafanaMode::Managed, GrafanaMode::Sidecar, GrafanaMode::None] {
                let (_, children) = crate::render::tests::build(engine, |s| {
                    s.grafana.mode = mode;
                    // A label value YAML 1.1 would read as a bool.
                    s.grafana.sidecar.label_value = "yes".into();
                });
                let values = children.to_values();
                let text = documents(&values);
                assert_eq!(load_yaml11(&text), values, "{engine} {mode:?}");
            }
        }
        let crd = serde_json::to_value(<crate::crd::PopUpStore as kube::CustomResourceExt>::crd()).unwrap();
        assert_eq!(load_yaml11(&crate::crd::crd_yaml()), [crd]);
    }

    #[test]
    fn flow_depth_counts_brackets_and_names_the_line() {
        assert_eq!(check_flow_depth("a: {b: [c, {d: e}]}\n", 3), Ok(()));
        assert_eq!(check_flow_depth("a: 1\nb: {b: [c, {d: e}]}\n", 2), Err(TooDeep { line: 2, limit: 2 }));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(check_flow_depth(&format!("a: 1\n\nb: {deep}\n"), 64), Err(TooDeep { line: 3, limit: 64 }));
        // Side by side is not nested.
        assert_eq!(check_flow_depth(&"[[x]], ".repeat(10_000), 2), Ok(()));
    }

    #[test]
    fn flow_depth_ignores_comments_and_strings_that_close_on_their_line() {
        let text = "# [[[[[[\na: \"[[[[[[\" # [[[[\nb: '[[[[[[ it''s [[[['\nc: [\"]]]]\", x]\n";
        assert_eq!(check_flow_depth(text, 1), Ok(()));
    }

    #[test]
    fn no_string_lowers_the_depth() {
        // Brackets closed inside strings (an escaped quote, a doubled single quote) close nothing.
        assert_eq!(check_flow_depth("[[[ \"\\\"]]]\", 'x'']]]', [x]]]]", 3), Err(TooDeep { line: 1, limit: 3 }));
        // A quote the scan takes for a string's start that does not end on its line keeps what it counted.
        assert_eq!(check_flow_depth("a: x 'y\nb: [[[[]]]]\nc: '\n", 3), Err(TooDeep { line: 2, limit: 3 }));
    }
}
