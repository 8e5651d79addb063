//! Grafana's math expressions (`$A / ($A + $B) * 100`, `$A / 60`), evaluated the way Grafana's server
//! side expressions do: numbers combine as numbers, a number and a series combine point by point, two
//! series combine where their timestamps meet.

use std::collections::BTreeMap;

/// What a query or an expression answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Number(f64),
    /// (timestamp in ms, value), oldest first.
    Series(Vec<(i64, f64)>),
}

/// Evaluates `text` with `$X` standing for the answers of refId X.
pub fn evaluate(text: &str, vars: &BTreeMap<String, Datum>) -> Result<Datum, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens: &tokens, at: 0, vars };
    let value = parser.sum()?;
    match parser.tokens.get(parser.at) {
        None => Ok(value),
        Some(t) => Err(format!("unexpected {t:?} in {text:?}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Var(String),
    Op(char),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '+' | '-' | '*' | '/' => {
                chars.next();
                tokens.push(Token::Op(c));
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '$' => {
                chars.next();
                let mut name = String::new();
                while let Some(&c) = chars.peek().filter(|c| c.is_ascii_alphanumeric() || **c == '_') {
                    name.push(c);
                    chars.next();
                }
                if name.is_empty() {
                    return Err(format!("a lone $ in {text:?}"));
                }
                tokens.push(Token::Var(name));
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut number = String::new();
                while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit() || **c == '.') {
                    number.push(c);
                    chars.next();
                }
                tokens.push(Token::Number(number.parse().map_err(|_| format!("bad number {number:?} in {text:?}"))?));
            }
            other => return Err(format!("unexpected {other:?} in {text:?}")),
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    vars: &'a BTreeMap<String, Datum>,
}

impl Parser<'_> {
    fn next_op(&mut self, ops: &[char]) -> Option<char> {
        match self.tokens.get(self.at) {
            Some(Token::Op(c)) if ops.contains(c) => {
                self.at += 1;
                Some(*c)
            }
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Datum, String> {
        let mut left = self.product()?;
        while let Some(op) = self.next_op(&['+', '-']) {
            left = combine(left, op, self.product()?);
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Datum, String> {
        let mut left = self.unary()?;
        while let Some(op) = self.next_op(&['*', '/']) {
            left = combine(left, op, self.unary()?);
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Datum, String> {
        if self.next_op(&['-']).is_some() {
            return Ok(combine(Datum::Number(0.0), '-', self.unary()?));
        }
        let token = self.tokens.get(self.at).cloned().ok_or("the expression ends too early")?;
        self.at += 1;
        match token {
            Token::Number(n) => Ok(Datum::Number(n)),
            Token::Var(name) => self.vars.get(&name).cloned().ok_or_else(|| format!("${name} has no answer")),
            Token::Open => {
                let inner = self.sum()?;
                match self.tokens.get(self.at) {
                    Some(Token::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err("a ( without its )".into()),
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn apply(a: f64, op: char, b: f64) -> f64 {
    match op {
        '+' => a + b,
        '-' => a - b,
        '*' => a * b,
        _ => a / b,
    }
}

fn combine(left: Datum, op: char, right: Datum) -> Datum {
    match (left, right) {
        (Datum::Number(a), Datum::Number(b)) => Datum::Number(apply(a, op, b)),
        (Datum::Series(s), Datum::Number(b)) => {
            Datum::Series(s.into_iter().map(|(t, a)| (t, apply(a, op, b))).collect())
        }
        (Datum::Number(a), Datum::Series(s)) => {
            Datum::Series(s.into_iter().map(|(t, b)| (t, apply(a, op, b))).collect())
        }
        (Datum::Series(l), Datum::Series(r)) => {
            let right: BTreeMap<i64, f64> = r.into_iter().collect();
            Datum::Series(l.into_iter().filter_map(|(t, a)| right.get(&t).map(|b| (t, apply(a, op, *b)))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Datum)]) -> BTreeMap<String, Datum> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn percent_sold() {
        let v = vars(&[("A", Datum::Number(30.0)), ("B", Datum::Number(10.0))]);
        assert_eq!(evaluate("$A / ($A + $B) * 100", &v), Ok(Datum::Number(75.0)));
    }

    #[test]
    fn a_series_divided_by_a_number() {
        let v = vars(&[("A", Datum::Series(vec![(0, 120.0), (60_000, 30.0)]))]);
        assert_eq!(evaluate("$A / 60", &v), Ok(Datum::Series(vec![(0, 2.0), (60_000, 0.5)])));
    }

    #[test]
    fn two_series_meet_on_their_timestamps() {
        let v = vars(&[("A", Datum::Series(vec![(0, 1.0), (5, 2.0)])), ("B", Datum::Series(vec![(5, 3.0), (9, 4.0)]))]);
        assert_eq!(evaluate("$A + $B", &v), Ok(Datum::Series(vec![(5, 5.0)])));
    }

    #[test]
    fn precedence_and_unary_minus() {
        assert_eq!(evaluate("1 + 2 * 3 - -4 / 2", &BTreeMap::new()), Ok(Datum::Number(9.0)));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(evaluate("$A +", &vars(&[("A", Datum::Number(1.0))])).unwrap_err().contains("too early"));
        assert!(evaluate("$Z", &BTreeMap::new()).unwrap_err().contains("$Z"));
        assert!(evaluate("(1", &BTreeMap::new()).unwrap_err().contains(")"));
    }
}
