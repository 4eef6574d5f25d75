//! The Dockerfile subset `berth build` understands, parsed into instructions. Pure.
//!
//! Syntax follows the Dockerfile reference: `#` comments, `\` line continuations,
//! case-insensitive instruction names, JSON (exec) or shell form for
//! `ENTRYPOINT`/`CMD`, `KEY=VALUE` pairs (or the legacy `KEY VALUE`) for `ENV`/`LABEL`,
//! and `$VAR`/`${VAR}` from earlier `ENV`s. Anything outside the subset is refused
//! with the line it is on.

use std::collections::BTreeMap;

/// Instructions `berth build` supports, for error messages.
pub const SUPPORTED: &str = "FROM, COPY, ADD, ENV, WORKDIR, ENTRYPOINT, CMD, EXPOSE, USER, LABEL";

/// One instruction with the 1-based line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub kind: InstructionKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    From(String),
    Copy {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
    },
    Add {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    Expose(Vec<String>),
    User(String),
    Label(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Joins continuation lines; returns (first line number, logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue; // comments inside a continued instruction are dropped
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let entry = current.get_or_insert_with(|| (n, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        if !continues {
            out.push(current.take().expect("set above"));
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

/// Expands `$VAR` and `${VAR}` (unknown variables expand to nothing, as Docker does).
fn substitute(s: &str, env: &BTreeMap<String, String>) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '\\' && i + 1 < b.len() && b[i + 1] == '$' {
            out.push('$');
            i += 2;
            continue;
        }
        if b[i] == '$' && i + 1 < b.len() {
            if b[i + 1] == '{' {
                if let Some(end) = b[i + 2..].iter().position(|&c| c == '}') {
                    let name: String = b[i + 2..i + 2 + end].iter().collect();
                    out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
                    i += end + 3;
                    continue;
                }
            } else if b[i + 1].is_ascii_alphabetic() || b[i + 1] == '_' {
                let len = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .count();
                let name: String = b[i + 1..i + 1 + len].iter().collect();
                out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
                i += len + 1;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Splits words honouring double and single quotes.
fn words(s: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(err(line, "unterminated quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn key_values(args: &str, line: usize, what: &str) -> Result<Vec<(String, String)>, ParseError> {
    let ws = words(args, line)?;
    if ws.is_empty() {
        return Err(err(line, format!("{what} needs at least one KEY=VALUE")));
    }
    if !ws[0].contains('=') {
        // legacy form: KEY VALUE...
        let (k, rest) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(line, format!("{what} {} has no value", ws[0])))?;
        return Ok(vec![(k.to_string(), rest.trim().to_string())]);
    }
    ws.into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| err(line, format!("{what} expects KEY=VALUE, got '{w}'")))?;
            if k.is_empty() {
                return Err(err(line, format!("{what} has an empty key")));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn exec_or_shell(args: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let t = args.trim();
    if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| {
            err(
                line,
                format!("exec form must be a JSON array of strings: {e}"),
            )
        })
    } else if t.is_empty() {
        Err(err(line, "needs a command"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
    }
}

fn copy_args(
    args: &str,
    line: usize,
    what: &str,
) -> Result<(Vec<String>, String, Option<String>), ParseError> {
    let mut chown = None;
    let mut rest = args.trim();
    while let Some(flag) = rest.strip_prefix("--") {
        let (f, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        match f.split_once('=') {
            Some(("chown", v)) => {
                let ok = v
                    .split(':')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    && v.split(':').count() <= 2;
                if !ok {
                    return Err(err(
                        line,
                        format!("{what} --chown={v}: only numeric uid[:gid] is supported"),
                    ));
                }
                chown = Some(v.to_string());
            }
            _ => {
                return Err(err(
                    line,
                    format!("{what} flag --{f} is not supported (only --chown=UID[:GID])"),
                ))
            }
        }
        rest = after.trim_start();
    }
    let parts = if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).map_err(|e| {
            err(
                line,
                format!("{what} JSON form must be an array of strings: {e}"),
            )
        })?
    } else {
        words(rest, line)?
    };
    if parts.len() < 2 {
        return Err(err(
            line,
            format!("{what} needs at least one source and a destination"),
        ));
    }
    let (dest, sources) = parts.split_last().expect("len >= 2");
    Ok((sources.to_vec(), dest.clone(), chown))
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut out: Vec<Instruction> = Vec::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (line, l) in logical_lines(text) {
        let (name, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let upper = name.to_ascii_uppercase();
        if out.is_empty() && upper != "FROM" {
            return Err(err(
                line,
                format!("the first instruction must be FROM, got {upper}"),
            ));
        }
        let sub = |s: &str| substitute(s, &env);
        let kind = match upper.as_str() {
            "FROM" => {
                if !out.is_empty() {
                    return Err(err(
                        line,
                        "multi-stage builds (a second FROM) are not supported",
                    ));
                }
                let ws = words(args, line)?;
                match ws.as_slice() {
                    [image] => InstructionKind::From(image.clone()),
                    [_, kw, _] if kw.eq_ignore_ascii_case("as") => {
                        return Err(err(
                            line,
                            "FROM ... AS (multi-stage builds) is not supported",
                        ))
                    }
                    _ => return Err(err(
                        line,
                        "FROM takes exactly one image (scratch or an image in berth's registry)",
                    )),
                }
            }
            "COPY" | "ADD" => {
                let (sources, dest, chown) = copy_args(args, line, &upper)?;
                let sources: Vec<String> = sources.iter().map(|s| sub(s)).collect();
                let dest = sub(&dest);
                if upper == "ADD" {
                    if let Some(url) = sources.iter().find(|s| s.contains("://")) {
                        return Err(err(
                            line,
                            format!("ADD from a URL is not supported; only local files ({url})"),
                        ));
                    }
                    InstructionKind::Add {
                        sources,
                        dest,
                        chown,
                    }
                } else {
                    InstructionKind::Copy {
                        sources,
                        dest,
                        chown,
                    }
                }
            }
            "ENV" => {
                let kvs: Vec<(String, String)> = key_values(args, line, "ENV")?
                    .into_iter()
                    .map(|(k, v)| (k, sub(&v)))
                    .collect();
                for (k, v) in &kvs {
                    env.insert(k.clone(), v.clone());
                }
                InstructionKind::Env(kvs)
            }
            "LABEL" => InstructionKind::Label(
                key_values(args, line, "LABEL")?
                    .into_iter()
                    .map(|(k, v)| (sub(&k), sub(&v)))
                    .collect(),
            ),
            "WORKDIR" => {
                let w = sub(args.trim());
                if w.is_empty() {
                    return Err(err(line, "WORKDIR needs a path"));
                }
                InstructionKind::Workdir(w)
            }
            "USER" => {
                let u = sub(args.trim());
                if u.is_empty() {
                    return Err(err(line, "USER needs a user"));
                }
                InstructionKind::User(u)
            }
            "EXPOSE" => {
                let mut ports = Vec::new();
                for w in words(&sub(args), line)? {
                    let (p, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if p.parse::<u16>().is_err()
                        || !matches!(proto.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(err(
                            line,
                            format!("EXPOSE {w}: expected PORT[/tcp|udp|sctp]"),
                        ));
                    }
                    ports.push(format!("{p}/{proto}"));
                }
                if ports.is_empty() {
                    return Err(err(line, "EXPOSE needs a port"));
                }
                InstructionKind::Expose(ports)
            }
            "ENTRYPOINT" => InstructionKind::Entrypoint(exec_or_shell(args, line)?),
            "CMD" => InstructionKind::Cmd(exec_or_shell(args, line)?),
            "RUN" => {
                return Err(err(
                    line,
                    format!("RUN is not supported yet (berth build supports {SUPPORTED})"),
                ))
            }
            other => {
                return Err(err(
                    line,
                    format!("{other} is not supported (berth build supports {SUPPORTED})"),
                ))
            }
        };
        out.push(Instruction { line, kind });
    }
    if out.is_empty() {
        return Err(err(
            1,
            "the Dockerfile has no instructions; it must start with FROM",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstructionKind::*;

    /// A typical Dockerfile: continuations, comments, forms, substitution.
    #[test]
    fn parses_the_subset() {
        let text = "# comment\nfrom scratch\nENV APP=/app NAME=\"my app\"\nENV LEGACY some value\nWORKDIR $APP\nCOPY --chown=1000:1000 a b ${APP}/\nADD x.tar.gz /\nLABEL k=v \\\n  k2=\"v 2\"\nEXPOSE 80 53/udp\nUSER 1000\nENTRYPOINT [\"/bin/busybox\"]\nCMD echo hi\n";
        let ins = parse(text).unwrap();
        assert_eq!(
            ins[0],
            Instruction {
                line: 2,
                kind: From("scratch".into())
            }
        );
        assert_eq!(
            ins[1].kind,
            Env(vec![
                ("APP".into(), "/app".into()),
                ("NAME".into(), "my app".into())
            ])
        );
        assert_eq!(
            ins[2].kind,
            Env(vec![("LEGACY".into(), "some value".into())])
        );
        assert_eq!(ins[3].kind, Workdir("/app".into()));
        assert_eq!(
            ins[4].kind,
            Copy {
                sources: vec!["a".into(), "b".into()],
                dest: "/app/".into(),
                chown: Some("1000:1000".into())
            }
        );
        assert_eq!(
            ins[6],
            Instruction {
                line: 8,
                kind: Label(vec![("k".into(), "v".into()), ("k2".into(), "v 2".into())])
            }
        );
        assert_eq!(ins[7].kind, Expose(vec!["80/tcp".into(), "53/udp".into()]));
        assert_eq!(ins[9].kind, Entrypoint(vec!["/bin/busybox".into()]));
        assert_eq!(
            ins[10].kind,
            Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
    }

    /// Everything outside the subset is refused with its line and a reason.
    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("FROM scratch\nRUN echo\n", 2, "RUN is not supported yet"),
            (
                "FROM scratch\nHEALTHCHECK NONE\n",
                2,
                "HEALTHCHECK is not supported",
            ),
            ("COPY a b\n", 1, "first instruction must be FROM"),
            ("FROM scratch\nFROM scratch\n", 2, "multi-stage"),
            ("FROM base AS b\n", 1, "multi-stage"),
            (
                "FROM scratch\nADD http://x/y /\n",
                2,
                "URL is not supported",
            ),
            ("FROM scratch\nCMD [\"a\",\n", 2, "JSON array"),
            ("FROM scratch\nCOPY --chown=app a /\n", 2, "numeric"),
            ("FROM scratch\nCOPY a\n", 2, "source and a destination"),
            ("FROM scratch\nEXPOSE http\n", 2, "EXPOSE http"),
            ("", 1, "no instructions"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(msg), "{text}: {}", e.message);
        }
    }
}
