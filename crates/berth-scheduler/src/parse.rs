//! The cluster query language parser: text → [`Expr`], never panicking, every error
//! naming the byte offset where it was found.
//!
//! Grammar (precedence `not` > `and` > `or`, binary operators left-associative):
//!
//! ```text
//! expr  := and (("or" | "||") and)*
//! and   := unary (("and" | "&&") unary)*
//! unary := ("not" | "!") unary | "(" expr ")" | subject op [arg]
//! arg   := value | "[" value ("," value)* "]"
//! value := bare word | 'single quoted' | "double quoted"   (\\ escapes \ and quotes)
//! ```
//!
//! Operators are the documented ones (`==`, `!=`, `>`, `>=`, `<`, `<=`, `=~`, `!~`,
//! `in`, `not_in`/`!in`, `exists`, `not_exists`/`!exists`), each allowed only for the
//! subjects the guide lists it for. Values of `registeredAt` must be one of the
//! documented date formats; they are checked here so evaluation cannot fail.

use crate::query::{is_bare_char, Arg, Expr, Op, Subject};

/// ECS's limit on a constraint expression (PlacementConstraint.expression).
pub const MAX_EXPRESSION_LEN: usize = 2000;
/// Nesting limit, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why an expression does not parse; `at` is a byte offset into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expression is empty")]
    Empty,
    #[error("expression is {len} bytes long; the limit is {MAX_EXPRESSION_LEN}")]
    TooLong { len: usize },
    #[error("unexpected character {ch:?} at byte {at}")]
    UnexpectedChar { ch: char, at: usize },
    #[error("quoted value starting at byte {at} is not closed")]
    UnterminatedQuote { at: usize },
    #[error("expected {expected} at byte {at}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
        at: usize,
    },
    #[error("unknown subject {name:?} at byte {at} (expected attribute:NAME, ec2InstanceId, registeredAt, task:group, agentConnected or runningTasksCount)")]
    UnknownSubject { name: String, at: usize },
    #[error("invalid attribute name {name:?} at byte {at} (letters, digits, '-', '_', '/', '.')")]
    InvalidAttributeName { name: String, at: usize },
    #[error("operator {op} cannot be used with {subject} (byte {at})")]
    OperatorNotAllowed {
        op: &'static str,
        subject: String,
        at: usize,
    },
    #[error("{value:?} at byte {at} is not a date (2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, 2018-06-18T22:28:28 or 2018-06-18)")]
    InvalidDate { value: String, at: usize },
    #[error("{value:?} at byte {at} is not a {expected}")]
    InvalidValue {
        value: String,
        expected: &'static str,
        at: usize,
    },
    #[error("expression nests deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
}

/// Parses a cluster query expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() > MAX_EXPRESSION_LEN {
        return Err(ParseError::TooLong { len: input.len() });
    }
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut p = Parser {
        tokens,
        pos: 0,
        end: input.len(),
    };
    let expr = p.or(0)?;
    if let Some(t) = p.peek() {
        return Err(ParseError::Expected {
            expected: "'and', 'or' or the end",
            found: t.tok.describe(),
            at: t.at,
        });
    }
    Ok(expr)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// `==`, `!=`, `=~`, `!~`, `>`, `>=`, `<`, `<=`, `&&`, `||`, `!`
    Sym(&'static str),
    Word(String),
    Quoted(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::Word(w) => format!("{w:?}"),
            Tok::Quoted(w) => format!("quoted {w:?}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "=~", "!~", ">=", "<=", "&&", "||", ">", "<", "!",
];

fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            chars.next();
            out.push(Token { tok, at });
            continue;
        }
        if c == '\'' || c == '"' {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                if d == '\\' {
                    match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => break,
                    }
                } else if d == c {
                    closed = true;
                    break;
                } else {
                    value.push(d);
                }
            }
            if !closed {
                return Err(ParseError::UnterminatedQuote { at });
            }
            out.push(Token {
                tok: Tok::Quoted(value),
                at,
            });
            continue;
        }
        if let Some(sym) = SYMBOLS.iter().find(|s| input[at..].starts_with(**s)) {
            for _ in 0..sym.len() {
                chars.next();
            }
            out.push(Token {
                tok: Tok::Sym(sym),
                at,
            });
            continue;
        }
        if is_bare_char(c) {
            let mut word = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if !is_bare_char(d) {
                    break;
                }
                word.push(d);
                chars.next();
            }
            out.push(Token {
                tok: Tok::Word(word),
                at,
            });
            continue;
        }
        return Err(ParseError::UnexpectedChar { ch: c, at });
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end".to_owned(), |t| t.tok.describe())
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        ParseError::Expected {
            expected,
            found: self.found(),
            at: self.here(),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x == w)
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Sym(x), .. }) if *x == s)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.and(depth)?;
        while self.is_word("or") || self.is_sym("||") {
            self.next();
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.unary(depth)?;
        while self.is_word("and") || self.is_sym("&&") {
            self.next();
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(ParseError::TooDeep { at: self.here() });
        }
        if self.is_word("not") || self.is_sym("!") {
            self.next();
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if matches!(
            self.peek(),
            Some(Token {
                tok: Tok::LParen,
                ..
            })
        ) {
            self.next();
            let inner = self.or(depth + 1)?;
            match self.peek() {
                Some(Token {
                    tok: Tok::RParen, ..
                }) => {
                    self.next();
                    return Ok(inner);
                }
                _ => return Err(self.expected("')'")),
            }
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let (subject, subject_at) = match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                at,
            }) => {
                let (w, at) = (w.clone(), *at);
                (subject(&w, at)?, at)
            }
            _ => return Err(self.expected("a subject such as attribute:NAME")),
        };
        self.next();
        let op_at = self.here();
        let op = self.operator()?;
        if !allowed(&subject, op) {
            return Err(ParseError::OperatorNotAllowed {
                op: op.as_str(),
                subject: subject.to_string(),
                at: op_at,
            });
        }
        let _ = subject_at;
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => {
                if !matches!(
                    self.peek(),
                    Some(Token {
                        tok: Tok::LBracket,
                        ..
                    })
                ) {
                    return Err(self.expected("'[' starting a list"));
                }
                self.next();
                let mut items = Vec::new();
                loop {
                    items.push(self.value(&subject)?);
                    match self.next() {
                        Some(Token {
                            tok: Tok::Comma, ..
                        }) => continue,
                        Some(Token {
                            tok: Tok::RBracket, ..
                        }) => break,
                        _ => {
                            self.pos -= 1;
                            return Err(self.expected("',' or ']'"));
                        }
                    }
                }
                Arg::List(items)
            }
            _ => Arg::Value(self.value(&subject)?),
        };
        Ok(Expr::Cmp { subject, op, arg })
    }

    fn operator(&mut self) -> Result<Op, ParseError> {
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Sym("==")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym("=~")) => Op::Matches,
            Some(Tok::Sym("!~")) => Op::NotMatches,
            Some(Tok::Word(w)) if w == "in" => Op::In,
            Some(Tok::Word(w)) if w == "not_in" => Op::NotIn,
            Some(Tok::Word(w)) if w == "exists" => Op::Exists,
            Some(Tok::Word(w)) if w == "not_exists" => Op::NotExists,
            Some(Tok::Sym("!")) => {
                let op = match self.tokens.get(self.pos + 1).map(|t| &t.tok) {
                    Some(Tok::Word(w)) if w == "in" => Op::NotIn,
                    Some(Tok::Word(w)) if w == "exists" => Op::NotExists,
                    _ => return Err(self.expected("an operator")),
                };
                self.pos += 2;
                return Ok(op);
            }
            _ => return Err(self.expected("an operator")),
        };
        self.next();
        Ok(op)
    }

    fn value(&mut self, subject: &Subject) -> Result<String, ParseError> {
        let (v, at) = match self.peek() {
            Some(Token {
                tok: Tok::Word(w) | Tok::Quoted(w),
                at,
            }) => (w.clone(), *at),
            _ => return Err(self.expected("a value")),
        };
        match subject {
            Subject::RegisteredAt if parse_date(&v).is_none() => {
                return Err(ParseError::InvalidDate { value: v, at });
            }
            Subject::RunningTasksCount if v.parse::<u32>().is_err() => {
                return Err(ParseError::InvalidValue {
                    value: v,
                    expected: "task count",
                    at,
                });
            }
            Subject::AgentConnected if v != "true" && v != "false" => {
                return Err(ParseError::InvalidValue {
                    value: v,
                    expected: "boolean (true or false)",
                    at,
                });
            }
            _ => {}
        }
        self.next();
        Ok(v)
    }
}

fn subject(word: &str, at: usize) -> Result<Subject, ParseError> {
    Ok(match word {
        "ec2InstanceId" => Subject::Ec2InstanceId,
        "registeredAt" => Subject::RegisteredAt,
        "task:group" => Subject::TaskGroup,
        "agentConnected" => Subject::AgentConnected,
        "runningTasksCount" => Subject::RunningTasksCount,
        _ => match word.strip_prefix("attribute:") {
            Some(name) => {
                if !is_attribute_name(name) {
                    return Err(ParseError::InvalidAttributeName {
                        name: name.to_owned(),
                        at,
                    });
                }
                Subject::Attribute(name.to_owned())
            }
            None => {
                return Err(ParseError::UnknownSubject {
                    name: word.to_owned(),
                    at,
                })
            }
        },
    })
}

/// ECS attribute names: up to 128 letters, digits, hyphens, underscores, slashes,
/// periods (back slashes are also allowed by ECS but cannot appear unquoted here).
pub(crate) fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/.".contains(c))
}

/// Which operators the guide lists for each subject.
fn allowed(subject: &Subject, op: Op) -> bool {
    use Op::*;
    match subject {
        Subject::Attribute(_) => true,
        Subject::Ec2InstanceId | Subject::TaskGroup | Subject::AgentConnected => {
            matches!(op, Eq | Ne | In | NotIn | Matches | NotMatches)
        }
        Subject::RegisteredAt | Subject::RunningTasksCount => {
            matches!(op, Eq | Ne | Gt | Ge | Lt | Le)
        }
    }
}

/// Parses the documented `registeredAt` formats into seconds since the Unix epoch:
/// `2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28` (UTC),
/// `2018-06-18` (midnight UTC).
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if b.len() == 10 {
        return Some(secs);
    }
    if b.len() < 19 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    secs += hh * 3600 + mm * 60 + ss;
    match &b[19..] {
        [] | [b'Z'] => Some(secs),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(20..22)?, num(23..25)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            Some(if *sign == b'+' {
                secs - offset
            } else {
                secs + offset
            })
        }
        _ => None,
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmp(subject: Subject, op: Op, arg: Arg) -> Expr {
        Expr::Cmp { subject, op, arg }
    }

    fn attr(name: &str) -> Subject {
        Subject::Attribute(name.into())
    }

    /// The guide's own examples parse to the trees they mean.
    #[test]
    fn guide_examples_parse() {
        assert_eq!(
            parse("attribute:ecs.instance-type == t2.small"),
            Ok(cmp(
                attr("ecs.instance-type"),
                Op::Eq,
                Arg::Value("t2.small".into())
            ))
        );
        assert_eq!(
            parse("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']"),
            Ok(cmp(
                Subject::Ec2InstanceId,
                Op::In,
                Arg::List(vec!["i-abcd1234".into(), "i-wxyx7890".into()])
            ))
        );
        assert_eq!(
            parse("not(task:group == database)"),
            Ok(Expr::Not(Box::new(cmp(
                Subject::TaskGroup,
                Op::Eq,
                Arg::Value("database".into())
            ))))
        );
        assert_eq!(
            parse("task:group == service:production"),
            Ok(cmp(
                Subject::TaskGroup,
                Op::Eq,
                Arg::Value("service:production".into())
            ))
        );
        assert!(parse(
            "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d"
        )
        .is_ok());
        assert!(parse("registeredAt < 2018-07-01").is_ok());
        assert!(parse("attribute:stack exists").is_ok());
        assert!(parse("attribute:stack !exists").is_ok());
        assert!(parse("attribute:ecs.os-type !in [windows]").is_ok());
    }

    /// `and` binds tighter than `or`, `not` tighter than both, and both associate left.
    #[test]
    fn precedence_and_associativity() {
        let a = || cmp(attr("a"), Op::Exists, Arg::None);
        let b = || cmp(attr("b"), Op::Exists, Arg::None);
        let c = || cmp(attr("c"), Op::Exists, Arg::None);
        assert_eq!(
            parse("attribute:a exists or attribute:b exists and attribute:c exists"),
            Ok(Expr::Or(
                Box::new(a()),
                Box::new(Expr::And(Box::new(b()), Box::new(c())))
            ))
        );
        assert_eq!(
            parse("(attribute:a exists || attribute:b exists) && attribute:c exists"),
            Ok(Expr::And(
                Box::new(Expr::Or(Box::new(a()), Box::new(b()))),
                Box::new(c())
            ))
        );
        assert_eq!(
            parse("!attribute:a exists and attribute:b exists"),
            Ok(Expr::And(Box::new(Expr::Not(Box::new(a()))), Box::new(b())))
        );
    }

    /// Each error names what was wrong and the byte offset where it was found.
    #[test]
    fn errors_name_the_position() {
        assert_eq!(parse("  "), Err(ParseError::Empty));
        assert_eq!(
            parse("attribute:a =="),
            Err(ParseError::Expected {
                expected: "a value",
                found: "the end".into(),
                at: 14
            })
        );
        assert_eq!(
            parse("colour == red"),
            Err(ParseError::UnknownSubject {
                name: "colour".into(),
                at: 0
            })
        );
        assert_eq!(
            parse("ec2InstanceId > i-1"),
            Err(ParseError::OperatorNotAllowed {
                op: ">",
                subject: "ec2InstanceId".into(),
                at: 14
            })
        );
        assert_eq!(
            parse("registeredAt < yesterday"),
            Err(ParseError::InvalidDate {
                value: "yesterday".into(),
                at: 15
            })
        );
        assert_eq!(
            parse("attribute:a == 'x"),
            Err(ParseError::UnterminatedQuote { at: 15 })
        );
        assert_eq!(
            parse("(attribute:a exists"),
            Err(ParseError::Expected {
                expected: "')'",
                found: "the end".into(),
                at: 19
            })
        );
        assert_eq!(
            parse("attribute:a in x"),
            Err(ParseError::Expected {
                expected: "'[' starting a list",
                found: "\"x\"".into(),
                at: 15
            })
        );
        assert_eq!(
            parse("attribute:a exists attribute:b exists"),
            Err(ParseError::Expected {
                expected: "'and', 'or' or the end",
                found: "\"attribute:b\"".into(),
                at: 19
            })
        );
        assert_eq!(
            parse("attribute: == x"),
            Err(ParseError::InvalidAttributeName {
                name: "".into(),
                at: 0
            })
        );
        assert_eq!(
            parse("agentConnected == yes"),
            Err(ParseError::InvalidValue {
                value: "yes".into(),
                expected: "boolean (true or false)",
                at: 18
            })
        );
        assert_eq!(
            parse("attribute:a == x or"),
            Err(ParseError::Expected {
                expected: "a subject such as attribute:NAME",
                found: "the end".into(),
                at: 19
            })
        );
        assert_eq!(
            parse("attribute:a == x \\"),
            Err(ParseError::UnexpectedChar { ch: '\\', at: 17 })
        );
        assert_eq!(
            parse(&"x".repeat(2001)),
            Err(ParseError::TooLong { len: 2001 })
        );
        assert_eq!(parse(&"(".repeat(100)), Err(ParseError::TooDeep { at: 64 }));
    }

    /// All four documented date formats parse to the right instant.
    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2018-06-18T22:28:28Z"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-06-18T22:28:28"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-06-18T23:28:28+01:00"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-06-18T21:28:28-01:00"), Some(1_529_360_908));
        assert_eq!(parse_date("2018-02-30"), None);
        assert_eq!(parse_date("2018-06-18T24:00:00"), None);
        assert_eq!(parse_date("2018-06-18 22:28:28"), None);
    }

    fn arb_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9.*:_-]{1,12}",
            any::<String>().prop_map(|s| s.chars().take(12).collect()),
            Just("and".to_owned()),
            Just(String::new()),
        ]
    }

    fn arb_cmp() -> impl Strategy<Value = Expr> {
        let attr_cmp = (
            "[a-zA-Z0-9._/-]{1,20}",
            prop_oneof![
                Just(Op::Eq),
                Just(Op::Ne),
                Just(Op::Gt),
                Just(Op::Ge),
                Just(Op::Lt),
                Just(Op::Le),
                Just(Op::Matches),
                Just(Op::NotMatches),
                Just(Op::In),
                Just(Op::NotIn),
                Just(Op::Exists),
                Just(Op::NotExists),
            ],
            arb_value(),
            proptest::collection::vec(arb_value(), 1..4),
        )
            .prop_map(|(name, op, v, list)| {
                let arg = match op {
                    Op::Exists | Op::NotExists => Arg::None,
                    Op::In | Op::NotIn => Arg::List(list),
                    _ => Arg::Value(v),
                };
                cmp(Subject::Attribute(name), op, arg)
            });
        let group = arb_value().prop_map(|v| cmp(Subject::TaskGroup, Op::Eq, Arg::Value(v)));
        let date = (0i64..4_000_000_000).prop_map(|s| {
            let days = s / 86_400;
            // Any valid date string works; build one from the day count.
            let (y, m, d) = civil_from_days(days);
            cmp(
                Subject::RegisteredAt,
                Op::Ge,
                Arg::Value(format!("{y:04}-{m:02}-{d:02}")),
            )
        });
        let count = (0u32..100).prop_map(|n| {
            cmp(
                Subject::RunningTasksCount,
                Op::Lt,
                Arg::Value(n.to_string()),
            )
        });
        prop_oneof![attr_cmp, group, date, count]
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        arb_cmp().prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    proptest! {
        /// The parser returns (never panics) on arbitrary text.
        #[test]
        fn never_panics_on_arbitrary_text(s in any::<String>()) {
            let _ = parse(&s);
        }

        /// …nor on text made of the language's own pieces, which gets deeper.
        #[test]
        fn never_panics_on_token_soup(parts in proptest::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("["), Just("]"), Just(","), Just("not"), Just("!"),
            Just("and"), Just("or"), Just("=="), Just("!~"), Just("in"), Just("exists"),
            Just("attribute:a"), Just("task:group"), Just("registeredAt"), Just("'x"),
            Just("\"y\""), Just("2018-01-01"), Just(" "),
        ], 0..40)) {
            let _ = parse(&parts.join(" "));
        }

        /// A printed expression parses back to the same tree.
        #[test]
        fn printed_expressions_reparse(e in arb_expr()) {
            let text = e.to_string();
            prop_assert_eq!(parse(&text), Ok(e), "printed as {}", text);
        }
    }
}
