//! The Dockerfile subset `berth build` understands, parsed into instructions. Pure.
//!
//! Syntax follows the Dockerfile reference: `#` comments, `\` line continuations,
//! case-insensitive instruction names, JSON (exec) or shell form for
//! `ENTRYPOINT`/`CMD`, `KEY=VALUE` pairs (or the legacy `KEY VALUE`) for `ENV`/`LABEL`,
//! and `$VAR`/`${VAR}` from earlier `ENV`s. Anything outside the subset is refused
//! with the line it is on.

use std::collections::BTreeMap;

/// Instructions `berth build` supports, for error messages.
pub const SUPPORTED: &str =
    "FROM, RUN, COPY, ADD, ENV, WORKDIR, ENTRYPOINT, CMD, EXPOSE, USER, LABEL";

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
    /// The argv of a `RUN`: the exec form as written, the shell form as
    /// `["/bin/sh", "-c", TEXT]`.
    Run(Vec<String>),
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

/// Instructions Docker has that `berth build` does not (yet): refused as "not
/// supported yet", anything else as unknown.
const UNSUPPORTED: [&str; 7] = [
    "ARG",
    "SHELL",
    "HEALTHCHECK",
    "ONBUILD",
    "STOPSIGNAL",
    "VOLUME",
    "MAINTAINER",
];

type Env = BTreeMap<String, String>;

/// Joins continuation lines as Docker does: the trailing `\` and the newline are
/// removed and the next line is appended as it is (`ENV A=a\` + `b` is `A=ab`);
/// comment and blank lines inside an instruction are skipped. Returns the line each
/// instruction starts on with its text.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = raw.trim_end();
        let (body, continues) = match body.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (body, false),
        };
        let entry = current.get_or_insert_with(|| (i + 1, String::new()));
        if entry.1.is_empty() {
            entry.1.push_str(body.trim_start());
        } else {
            entry.1.push_str(body);
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out.retain(|(_, l)| !l.trim().is_empty());
    out
}

/// Expands the `$...` at the start of `c`; returns the value and how many characters
/// it used. `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` as in the
/// Dockerfile reference ("Environment replacement"); unknown variables are empty.
fn dollar(c: &[char], env: &Env, line: usize) -> Result<(String, usize), ParseError> {
    match c.get(1) {
        Some('{') => {
            let end = c
                .iter()
                .position(|&x| x == '}')
                .ok_or_else(|| err(line, "unterminated ${ in variable substitution"))?;
            let inner: String = c[2..end].iter().collect();
            let split = inner
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(inner.len());
            let (name, rest) = inner.split_at(split);
            if name.is_empty() {
                return Err(err(line, format!("bad substitution ${{{inner}}}")));
            }
            let val = env.get(name).map(String::as_str).filter(|v| !v.is_empty());
            let out = if rest.is_empty() {
                val.unwrap_or("")
            } else if let Some(word) = rest.strip_prefix(":-") {
                val.unwrap_or(word)
            } else if let Some(word) = rest.strip_prefix(":+") {
                val.map_or("", |_| word)
            } else {
                return Err(err(
                    line,
                    format!(
                        "bad substitution ${{{inner}}} (supported: ${{VAR}}, ${{VAR:-default}}, ${{VAR:+alternative}})"
                    ),
                ));
            };
            Ok((out.to_string(), end + 1))
        }
        Some(&ch) if ch.is_ascii_alphabetic() || ch == '_' => {
            let len = c[1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count();
            let name: String = c[1..=len].iter().collect();
            Ok((env.get(&name).cloned().unwrap_or_default(), len + 1))
        }
        _ => Ok(("$".into(), 1)),
    }
}

/// One word processed as Docker's shell lexer does (moby/buildkit
/// `frontend/dockerfile/shell/lex.go`): single quotes are literal, double quotes
/// expand `$` and honour `\"`, `\$` and `\\`, a bare `\` escapes the next character.
fn word(s: &str, env: &Env, line: usize) -> Result<String, ParseError> {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\'' => {
                let end = c[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or_else(|| err(line, "unterminated single quote"))?;
                out.extend(&c[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                i += 1;
                loop {
                    match c.get(i) {
                        None => return Err(err(line, "unterminated double quote")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(c.get(i + 1), Some('"' | '$' | '\\')) => {
                            out.push(c[i + 1]);
                            i += 2;
                        }
                        Some('$') => {
                            let (v, n) = dollar(&c[i..], env, line)?;
                            out.push_str(&v);
                            i += n;
                        }
                        Some(&d) => {
                            out.push(d);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                out.extend(c.get(i + 1));
                i += 2;
            }
            '$' => {
                let (v, n) = dollar(&c[i..], env, line)?;
                out.push_str(&v);
                i += n;
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Splits on unquoted whitespace, keeping quotes and escapes in the words for
/// [`word`] to process (Docker's `parseWords`).
fn raw_words(s: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in s.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            continue;
        }
        match (quote, ch) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                cur.push(ch);
                escaped = true;
            }
            (None, '\'' | '"') => {
                quote = Some(ch);
                cur.push(ch);
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(err(
            line,
            if q == '"' {
                "unterminated double quote"
            } else {
                "unterminated single quote"
            },
        ));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `KEY=VALUE ...` or the legacy `KEY VALUE` of `ENV` and `LABEL`. Every pair is
/// expanded with the variables as they were before the instruction (Docker: `ENV
/// a=1 b=$a` sees the old `a`).
fn key_values(
    args: &str,
    env: &Env,
    line: usize,
    what: &str,
) -> Result<Vec<(String, String)>, ParseError> {
    let ws = raw_words(args, line)?;
    let Some(first) = ws.first() else {
        return Err(err(line, format!("{what} needs at least one KEY=VALUE")));
    };
    if !first.contains('=') {
        let t = args.trim();
        let (k, rest) = t.split_once(char::is_whitespace).ok_or_else(|| {
            err(
                line,
                format!("{what} {t} has no value; write {what} {t}=VALUE"),
            )
        })?;
        return Ok(vec![(word(k, env, line)?, word(rest.trim(), env, line)?)]);
    }
    ws.iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| err(line, format!("{what} expects KEY=VALUE, got '{w}'")))?;
            let k = word(k, env, line)?;
            if k.is_empty() {
                return Err(err(line, format!("{what} has an empty key in '{w}'")));
            }
            Ok((k, word(v, env, line)?))
        })
        .collect()
}

/// `ENTRYPOINT`/`CMD`: a JSON array (exec form) or a string run by `/bin/sh -c`.
/// Docker falls back to the shell form when the JSON is malformed; berth refuses it,
/// since a scratch image has no shell to run the fallback with.
fn exec_or_shell(args: &str, line: usize, what: &str) -> Result<Vec<String>, ParseError> {
    let t = args.trim();
    if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| {
            err(
                line,
                format!(
                    "{what} exec form must be a JSON array of strings in double quotes, e.g. [\"/app\", \"--flag\"]: {e}"
                ),
            )
        })
    } else if t.is_empty() {
        Err(err(line, format!("{what} needs a command")))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
    }
}

/// `RUN`: no flags (`--mount`, `--network`, `--security` are BuildKit's), no
/// heredocs; the exec form as a JSON array, else the text for `/bin/sh -c`. Nothing is
/// substituted: in the shell form the shell expands `$VAR` from the environment.
fn run_args(args: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let t = args.trim();
    if let Some(flag) = t.strip_prefix("--") {
        let name = flag
            .split(|c: char| c == '=' || c.is_whitespace())
            .next()
            .unwrap_or_default();
        return Err(err(
            line,
            format!("RUN --{name} is not supported (RUN takes no flags and always runs without network)"),
        ));
    }
    if has_heredoc(t) {
        return Err(err(
            line,
            "RUN with a heredoc is not supported; put the script in a file and COPY it",
        ));
    }
    let argv = exec_or_shell(t, line, "RUN")?;
    if argv.is_empty() || argv[0].is_empty() {
        return Err(err(line, "RUN needs a command"));
    }
    Ok(argv)
}

/// A heredoc as BuildKit recognises one: `<<WORD`, `<<-WORD`, `<<"WORD"`, `<<'WORD'`
/// anywhere in the line.
fn has_heredoc(s: &str) -> bool {
    s.match_indices("<<").any(|(i, _)| {
        let rest = &s[i + 2..];
        let rest = rest.strip_prefix('-').unwrap_or(rest);
        let rest = rest.trim_start_matches(['"', '\'']);
        rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
    })
}

type CopyArgs = (Vec<String>, String, Option<String>);

fn copy_args(args: &str, env: &Env, line: usize, what: &str) -> Result<CopyArgs, ParseError> {
    let mut chown = None;
    let mut rest = args.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let (f, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let (name, value) = f.split_once('=').map_or((f, None), |(n, v)| (n, Some(v)));
        match (name, value) {
            ("chown", Some(v)) => {
                let v = word(v, env, line)?;
                let parts: Vec<&str> = v.split(':').collect();
                let numeric = |p: &&str| !p.is_empty() && p.parse::<u32>().is_ok();
                if parts.len() > 2 || !parts.iter().all(numeric) {
                    return Err(err(
                        line,
                        format!(
                            "{what} --chown={v}: only a numeric UID[:GID] is supported (berth build cannot look up names)"
                        ),
                    ));
                }
                chown = Some(v);
            }
            // Layers berth builds never depend on the one below, which is what
            // --link asks for.
            ("link", None | Some("true")) => {}
            ("from", _) => {
                return Err(err(
                    line,
                    format!("{what} --from (multi-stage builds) is not supported"),
                ))
            }
            _ => {
                return Err(err(
                    line,
                    format!(
                        "{what} flag --{f} is not supported (only --chown=UID[:GID] and --link)"
                    ),
                ))
            }
        }
        rest = after.trim_start();
    }
    if rest.starts_with("<<") {
        return Err(err(
            line,
            format!("{what} with a heredoc is not supported; put the content in a file"),
        ));
    }
    let parts = if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).map_err(|e| {
            err(
                line,
                format!("{what} JSON form must be an array of strings in double quotes: {e}"),
            )
        })?
    } else {
        raw_words(rest, line)?
    };
    let parts = parts
        .iter()
        .map(|p| word(p, env, line))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((dest, sources)) = parts.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(err(
            line,
            format!("{what} needs at least one source and a destination"),
        ));
    };
    if let Some(url) = sources.iter().find(|s| is_url(s)) {
        return Err(err(
            line,
            if what == "ADD" {
                format!("ADD from a URL is not supported; only local files ({url})")
            } else {
                format!("COPY cannot fetch a URL ({url}); only local files")
            },
        ));
    }
    if dest.is_empty() {
        return Err(err(line, format!("{what} has an empty destination")));
    }
    Ok((sources.to_vec(), dest.clone(), chown))
}

fn is_url(s: &str) -> bool {
    s.starts_with("git@")
        || s.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
}

fn port_spec(w: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let bad = || {
        err(
            line,
            format!("EXPOSE {w}: expected PORT[-PORT][/tcp|udp|sctp]"),
        )
    };
    let (p, proto) = w.split_once('/').unwrap_or((w, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (lo, hi) = p.split_once('-').unwrap_or((p, p));
    let (lo, hi) = (
        lo.parse::<u16>().map_err(|_| bad())?,
        hi.parse::<u16>().map_err(|_| bad())?,
    );
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// Parses a Dockerfile. `$VAR` expands to what earlier `ENV`s set (else empty).
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    parse_with_env(text, &[])
}

/// [`parse`] with the base image's environment (its config's `Env`) visible to
/// substitution, as Docker does: `ENV PATH=/app/bin:$PATH` then extends the base
/// image's `PATH`. A caller that knows the base image re-parses with it.
pub fn parse_with_env(
    text: &str,
    base_env: &[(String, String)],
) -> Result<Vec<Instruction>, ParseError> {
    let mut out: Vec<Instruction> = Vec::new();
    let mut env: Env = base_env.iter().cloned().collect();
    for (line, l) in logical_lines(text) {
        let l = l.trim_start();
        let (name, args) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let upper = name.to_ascii_uppercase();
        if out.is_empty() && upper != "FROM" {
            let hint = if upper == "ARG" {
                "ARG is not supported yet, so the Dockerfile must start with FROM".to_string()
            } else {
                format!("the first instruction must be FROM, got {upper}")
            };
            return Err(err(line, hint));
        }
        let kind = match upper.as_str() {
            "FROM" => {
                if !out.is_empty() {
                    return Err(err(
                        line,
                        "a second FROM: multi-stage builds are not supported",
                    ));
                }
                if args.trim_start().starts_with("--") {
                    return Err(err(line, "FROM flags (--platform) are not supported"));
                }
                let ws = raw_words(args, line)?
                    .iter()
                    .map(|w| word(w, &env, line))
                    .collect::<Result<Vec<_>, _>>()?;
                match ws.as_slice() {
                    // A single stage may be named; nothing can refer to it.
                    [image] | [image, _, _]
                        if ws.len() == 1 || ws[1].eq_ignore_ascii_case("as") =>
                    {
                        if image.eq_ignore_ascii_case("scratch") {
                            InstructionKind::From("scratch".into())
                        } else {
                            InstructionKind::From(image.clone())
                        }
                    }
                    _ => {
                        return Err(err(
                            line,
                            "FROM takes one image: scratch or an image in berth's registry",
                        ))
                    }
                }
            }
            "COPY" | "ADD" => {
                let (sources, dest, chown) = copy_args(args, &env, line, &upper)?;
                if upper == "ADD" {
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
                let kvs = key_values(args, &env, line, "ENV")?;
                env.extend(kvs.iter().cloned());
                InstructionKind::Env(kvs)
            }
            "LABEL" => InstructionKind::Label(key_values(args, &env, line, "LABEL")?),
            "WORKDIR" => {
                let w = word(args.trim(), &env, line)?;
                if w.is_empty() {
                    return Err(err(line, "WORKDIR needs a path"));
                }
                InstructionKind::Workdir(w)
            }
            "USER" => {
                let u = word(args.trim(), &env, line)?;
                if u.is_empty() {
                    return Err(err(line, "USER needs a user"));
                }
                InstructionKind::User(u)
            }
            "EXPOSE" => {
                let mut ports = Vec::new();
                for w in raw_words(args, line)? {
                    for p in word(&w, &env, line)?.split_whitespace() {
                        ports.extend(port_spec(p, line)?);
                    }
                }
                if ports.is_empty() {
                    return Err(err(line, "EXPOSE needs a port"));
                }
                InstructionKind::Expose(ports)
            }
            "ENTRYPOINT" => InstructionKind::Entrypoint(exec_or_shell(args, line, &upper)?),
            "CMD" => InstructionKind::Cmd(exec_or_shell(args, line, &upper)?),
            "RUN" => InstructionKind::Run(run_args(args, line)?),
            other if UNSUPPORTED.contains(&other) => {
                return Err(err(
                    line,
                    format!("{other} is not supported yet (berth build supports {SUPPORTED})"),
                ))
            }
            other => {
                return Err(err(
                    line,
                    format!("unknown instruction {other} (berth build supports {SUPPORTED})"),
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
            (
                "FROM scratch\nSHELL [\"/bin/bash\"]\n",
                2,
                "SHELL is not supported yet",
            ),
            (
                "FROM scratch\nHEALTHCHECK NONE\n",
                2,
                "HEALTHCHECK is not supported",
            ),
            ("COPY a b\n", 1, "first instruction must be FROM"),
            ("FROM scratch\nFROM scratch\n", 2, "multi-stage"),
            ("FROM base AS b extra\n", 1, "FROM takes one image"),
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

    /// RUN in shell form keeps its text verbatim (no substitution, quotes and `$` left
    /// to the shell); the exec form is the JSON array; continuations join.
    #[test]
    fn run_forms() {
        let ins = parse(
            "FROM scratch\nENV X=1\nRUN echo \"$X\" > /a && \\\n    rm /b\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nrun true\n",
        )
        .unwrap();
        assert_eq!(
            ins[2],
            Instruction {
                line: 3,
                kind: Run(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo \"$X\" > /a &&     rm /b".into()
                ])
            }
        );
        assert_eq!(
            ins[3].kind,
            Run(vec![
                "/bin/busybox".into(),
                "--install".into(),
                "-s".into(),
                "/bin".into()
            ])
        );
        assert_eq!(
            ins[4],
            Instruction {
                line: 6,
                kind: Run(vec!["/bin/sh".into(), "-c".into(), "true".into()])
            }
        );
    }

    /// BuildKit's RUN flags, heredocs and empty commands are refused with their line.
    #[test]
    fn run_refusals() {
        let e = |text: &str| parse(text).unwrap_err();
        assert_eq!(
            e("FROM scratch\nRUN --mount=type=cache,target=/c make\n"),
            ParseError {
                line: 2,
                message: "RUN --mount is not supported (RUN takes no flags and always runs without network)".into()
            }
        );
        assert_eq!(
            e("FROM scratch\n\nRUN --network=host wget x\n"),
            ParseError {
                line: 3,
                message: "RUN --network is not supported (RUN takes no flags and always runs without network)".into()
            }
        );
        let heredoc = ParseError {
            line: 2,
            message: "RUN with a heredoc is not supported; put the script in a file and COPY it"
                .into(),
        };
        assert_eq!(e("FROM scratch\nRUN <<EOF\necho\nEOF\n"), heredoc);
        assert_eq!(e("FROM scratch\nRUN cat <<-'END' > /f\n"), heredoc);
        assert_eq!(
            e("FROM scratch\nRUN\n"),
            ParseError {
                line: 2,
                message: "RUN needs a command".into()
            }
        );
        assert_eq!(
            e("FROM scratch\nRUN []\n"),
            ParseError {
                line: 2,
                message: "RUN needs a command".into()
            }
        );
        // `<<` that is not a heredoc (arithmetic shift) is the shell's business.
        assert_eq!(
            parse("FROM scratch\nRUN echo $((1 << 2))\n").unwrap()[1].kind,
            Run(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $((1 << 2))".into()
            ])
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any one-line shell-form RUN without a flag or heredoc is handed to
            /// `/bin/sh -c` exactly as written (trimmed): nothing is expanded or unquoted.
            #[test]
            fn shell_form_is_verbatim(cmd in "[a-z$\"' |&;>=_{}()\\\\\\-]{0,8}[a-z][a-z$\"' |&;>=_{}()\\\\\\-]{0,40}") {
                prop_assume!(!cmd.trim_start().starts_with('['));
                prop_assume!(!cmd.trim_start().starts_with("--"));
                prop_assume!(!cmd.trim_end().ends_with('\\'));
                let ins = parse(&format!("FROM scratch\nRUN {cmd}\n")).unwrap();
                prop_assert_eq!(
                    &ins[1].kind,
                    &Run(vec!["/bin/sh".into(), "-c".into(), cmd.trim().to_string()])
                );
            }

            /// Any bytes after RUN either parse to a non-empty argv or fail on line 2; never a panic.
            #[test]
            fn run_never_panics(rest in "\\PC{0,64}") {
                match parse(&format!("FROM scratch\nRUN {rest}\n")) {
                    Ok(ins) => {
                        for i in &ins[1..] {
                            if let Run(argv) = &i.kind {
                                prop_assert!(!argv.is_empty() && !argv[0].is_empty());
                            }
                        }
                    }
                    Err(e) => prop_assert!(e.line >= 2),
                }
            }
        }
    }
}
