//! A small reader for golden-file ("datadriven") tests, after the format of
//! `cockroachdb/datadriven` that etcd's raft uses: a file is a list of commands, each
//! followed by the output it is expected to print, so a reviewer reads a scenario as a
//! trace and any change of behaviour shows up as a diff of the file.
//!
//! ```text
//! # Comment lines start with `#`; blank lines separate cases.
//! committed cfg=(1,2,3) idx=(100,101,99)
//! ----
//! committed: 100
//!
//! # A command may take input lines before the separator.
//! propose
//! some payload
//! ----
//! output lines, up to the next blank line
//!
//! # Output that contains blank lines is fenced by a doubled separator.
//! show
//! ----
//! ----
//! first paragraph
//!
//! second paragraph
//! ----
//! ----
//! ```
//!
//! A command line is `name arg arg ...`, each argument `key`, `key=value` or
//! `key=(v1,v2,...)`; spaces inside the parentheses are allowed and trimmed.
//!
//! [`run_file`] runs every case through a closure and compares what it returns with the
//! file. With `REWRITE=1` in the environment it writes the actual outputs into the file
//! instead, so an intended change of behaviour regenerates the traces (review the diff).

use std::fmt;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::str::FromStr;

/// The separator between a command (and its input) and the expected output.
const SEPARATOR: &str = "----";

/// A command's arguments: each key with its values, in the order written.
pub(crate) type Args = Vec<(String, Vec<String>)>;

/// One case of a file: the command with its arguments and input lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TestCase {
    /// The command's name, the first word of its line.
    pub(crate) cmd: String,
    /// The arguments in the order written; a bare `key` has no values. Keys are unique.
    pub(crate) args: Args,
    /// The lines between the command line and the separator, joined by `\n`; usually
    /// empty.
    pub(crate) input: String,
    /// Where the command is, `file:line`, for messages.
    pub(crate) pos: String,
    /// The command line as written (trimmed), for messages.
    pub(crate) line: String,
}

impl TestCase {
    /// The values of argument `key`, if given.
    pub(crate) fn arg(&self, key: &str) -> Option<&[String]> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, vals)| vals.as_slice())
    }

    /// Whether argument `key` is given (with or without values).
    pub(crate) fn has_arg(&self, key: &str) -> bool {
        self.arg(key).is_some()
    }

    /// The values of argument `key` parsed as `T`, if given; panics on a value that does
    /// not parse.
    pub(crate) fn parse_args<T>(&self, key: &str) -> Option<Vec<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let vals = self.arg(key)?;
        Some(
            vals.iter()
                .map(|v| match v.parse() {
                    Ok(parsed) => parsed,
                    Err(e) => panic!("argument `{key}`: cannot parse `{v}`: {e}"),
                })
                .collect(),
        )
    }

    /// The single value of argument `key` parsed as `T`, if given; panics unless it has
    /// exactly one value and that value parses.
    pub(crate) fn parse_arg<T>(&self, key: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let mut vals = self.parse_args(key)?;
        match vals.len() {
            1 => vals.pop(),
            n => panic!("argument `{key}` wants one value, has {n}"),
        }
    }

    /// Panics if the case has an argument not in `allowed`: a misspelt key would
    /// otherwise be silently ignored and the case test less than it says.
    pub(crate) fn check_args(&self, allowed: &[&str]) {
        for (key, _) in &self.args {
            assert!(
                allowed.contains(&key.as_str()),
                "unknown argument `{key}` for `{}` (allowed: {allowed:?})",
                self.cmd
            );
        }
    }

    /// Panics if the case has input lines, for commands that take none: a forgotten
    /// separator would otherwise turn the next case into this one's input.
    pub(crate) fn check_no_input(&self) {
        assert!(
            self.input.is_empty(),
            "`{}` takes no input lines, got:\n{}",
            self.cmd,
            self.input
        );
    }
}

impl fmt::Display for TestCase {
    /// The command line as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// A case as read from a file, with what it expects and where that is written.
#[derive(Debug)]
struct Case {
    tc: TestCase,
    /// The expected output, lines joined by `\n`, without a trailing newline.
    expected: String,
    /// The lines (0-based, end exclusive) holding the output, replaced on rewrite.
    output_lines: Range<usize>,
}

/// Runs every case of the file at `path` through `f` and compares what `f` returns with
/// the expected output (trailing newlines of the return value are ignored). Panics with
/// the position, command, expected and actual output of every case that differs, or
/// naming the line if the file is malformed, or with the position if `f` panics. With
/// `REWRITE=1` set, writes the actual outputs into the file instead of comparing.
///
/// The cases run in file order on one `f`, so it may carry state from case to case (a
/// cluster that commands act on).
pub(crate) fn run_file(path: &Path, f: impl FnMut(&TestCase) -> String) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let name = path.display().to_string();
    let cases = parse(&name, &text).unwrap_or_else(|e| panic!("malformed test file: {e}"));
    let actual = run_cases(&cases, f);
    if rewrite_requested() {
        std::fs::write(path, rewrite(&text, &cases, &actual))
            .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
        return;
    }
    if let Some(report) = mismatches(&cases, &actual) {
        panic!("{report}");
    }
}

/// Whether the environment asks to rewrite the files (`REWRITE=1`).
fn rewrite_requested() -> bool {
    std::env::var_os("REWRITE").is_some_and(|v| v == "1")
}

/// Runs the cases in order, returning each one's output without trailing newlines. A
/// panic in `f` is re-raised with the case's position, which the panic alone lacks.
fn run_cases(cases: &[Case], mut f: impl FnMut(&TestCase) -> String) -> Vec<String> {
    cases
        .iter()
        .map(
            |case| match panic::catch_unwind(AssertUnwindSafe(|| f(&case.tc))) {
                Ok(out) => out.trim_end_matches('\n').to_owned(),
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(non-text panic)".to_owned());
                    panic!("{}: `{}` panicked: {msg}", case.tc.pos, case.tc)
                }
            },
        )
        .collect()
}

/// The report of the cases whose output differs from the expected, if any.
fn mismatches(cases: &[Case], actual: &[String]) -> Option<String> {
    let mut report = String::new();
    let mut count = 0;
    for (case, actual) in cases.iter().zip(actual) {
        if case.expected != *actual {
            count += 1;
            report.push_str(&format!(
                "\n{}: {}\nexpected:\n{}actual:\n{}",
                case.tc.pos,
                case.tc,
                indent(&case.expected),
                indent(actual)
            ));
        }
    }
    (count > 0).then(|| {
        format!(
            "{count} of {} cases differ (run with REWRITE=1 to record the actual outputs):\n{report}",
            cases.len()
        )
    })
}

/// `text` with each line indented for a report, or a marker if it is empty.
fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)\n".to_owned();
    }
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Reads the cases of a file; `name` prefixes the positions. On malformed input returns
/// a message naming the line.
fn parse(name: &str, text: &str) -> Result<Vec<Case>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_blank = |i: usize| lines[i].trim().is_empty();
    let mut cases = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is_blank(i) || lines[i].trim_start().starts_with('#') {
            i += 1;
            continue;
        }
        let pos = format!("{name}:{}", i + 1);
        let (cmd, args) = parse_command(lines[i]).map_err(|e| format!("{pos}: {e}"))?;
        if cmd == SEPARATOR {
            return Err(format!("{pos}: `{SEPARATOR}` without a command before it"));
        }

        // Input lines, up to the separator. A blank line or the end of the file first
        // means the separator is missing.
        let input_start = i + 1;
        let mut sep = input_start;
        while sep < lines.len() && lines[sep] != SEPARATOR {
            if is_blank(sep) {
                return Err(format!(
                    "{name}:{}: blank line before `{SEPARATOR}` of the command at line {}",
                    sep + 1,
                    i + 1
                ));
            }
            sep += 1;
        }
        if sep == lines.len() {
            return Err(format!(
                "{pos}: the file ends before the `{SEPARATOR}` of this command"
            ));
        }
        let input = lines[input_start..sep].join("\n");

        let out_start = sep + 1;
        let (expected, out_end) = if lines.get(out_start) == Some(&SEPARATOR) {
            // Fenced output: up to a doubled separator, blank lines included.
            let body = out_start + 1;
            let close = (body..lines.len().saturating_sub(1))
                .find(|&j| lines[j] == SEPARATOR && lines[j + 1] == SEPARATOR)
                .ok_or_else(|| {
                    format!(
                        "{name}:{}: fenced output (`{SEPARATOR}` twice) is not closed by `{SEPARATOR}` twice",
                        out_start + 1
                    )
                })?;
            let end = close + 2;
            if end < lines.len() && !is_blank(end) {
                return Err(format!(
                    "{name}:{}: expected a blank line after the fenced output",
                    end + 1
                ));
            }
            (lines[body..close].join("\n"), end)
        } else {
            let end = (out_start..lines.len())
                .find(|&j| is_blank(j))
                .unwrap_or(lines.len());
            (lines[out_start..end].join("\n"), end)
        };

        cases.push(Case {
            tc: TestCase {
                cmd,
                args,
                input,
                pos,
                line: lines[i].trim().to_owned(),
            },
            expected,
            output_lines: out_start..out_end,
        });
        i = out_end;
    }
    Ok(cases)
}

/// Splits a command line into the command and its arguments.
fn parse_command(line: &str) -> Result<(String, Args), String> {
    let mut words = split_words(line)?.into_iter();
    let cmd = words
        .next()
        .ok_or_else(|| "empty command line".to_owned())?;
    if cmd.contains(['=', '(', ')']) {
        return Err(format!("command `{cmd}` must be a plain word"));
    }
    let mut args: Args = Vec::new();
    for word in words {
        let (key, vals) = parse_arg(&word)?;
        if args.iter().any(|(k, _)| *k == key) {
            return Err(format!("argument `{key}` given twice"));
        }
        args.push((key, vals));
    }
    Ok((cmd, args))
}

/// Splits `line` at whitespace outside parentheses, so `cfg=(1, 2)` stays one word.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut open = false;
    for c in line.chars() {
        match c {
            '(' if open => return Err(format!("nested `(` in `{line}`")),
            '(' => open = true,
            ')' if !open => return Err(format!("`)` without `(` in `{line}`")),
            ')' => open = false,
            c if c.is_whitespace() && !open => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if open {
        return Err(format!("unclosed `(` in `{line}`"));
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// Parses one argument: `key`, `key=value` or `key=(v1,v2,...)`.
fn parse_arg(word: &str) -> Result<(String, Vec<String>), String> {
    let (key, value) = match word.split_once('=') {
        None => (word, None),
        Some((key, value)) => (key, Some(value)),
    };
    if key.is_empty() || key.contains(['(', ')']) {
        return Err(format!("bad argument key in `{word}`"));
    }
    let vals = match value {
        None => Vec::new(),
        Some("") => return Err(format!("argument `{word}` has no value")),
        Some(list) if list.starts_with('(') => {
            let inner = list
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| format!("text after `)` in `{word}`"))?;
            if inner.trim().is_empty() {
                Vec::new()
            } else {
                let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
                if vals.iter().any(String::is_empty) {
                    return Err(format!("empty value in `{word}`"));
                }
                vals
            }
        }
        Some(value) if value.contains(['(', ')']) => {
            return Err(format!("parentheses inside the value of `{word}`"))
        }
        Some(value) => vec![value.to_owned()],
    };
    Ok((key.to_owned(), vals))
}

/// `text` with each case's output replaced by `actual`, everything else kept.
fn rewrite(text: &str, cases: &[Case], actual: &[String]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len());
    let mut next = 0;
    for (case, actual) in cases.iter().zip(actual) {
        for line in &lines[next..case.output_lines.start] {
            out.push_str(line);
            out.push('\n');
        }
        // Fence output that the plain form cannot hold: blank lines would end it early,
        // and a leading separator would read as a fence.
        let fence =
            actual.lines().any(|l| l.trim().is_empty()) || actual.lines().next() == Some(SEPARATOR);
        if fence {
            out.push_str(SEPARATOR);
            out.push('\n');
        }
        if !actual.is_empty() {
            out.push_str(actual);
            out.push('\n');
        }
        if fence {
            out.push_str(SEPARATOR);
            out.push('\n');
            out.push_str(SEPARATOR);
            out.push('\n');
        }
        next = case.output_lines.end;
    }
    for line in &lines[next..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[(&str, &[&str])]) -> Args {
        list.iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn command_lines() {
        let (cmd, a) = parse_command("committed cfg=(1, 2 ,3) cfgj=zero idx=() flag").unwrap();
        assert_eq!(cmd, "committed");
        assert_eq!(
            a,
            args(&[
                ("cfg", &["1", "2", "3"]),
                ("cfgj", &["zero"]),
                ("idx", &[]),
                ("flag", &[]),
            ])
        );
        let (cmd, a) = parse_command("  tick  ").unwrap();
        assert_eq!((cmd.as_str(), a.len()), ("tick", 0));
    }

    #[test]
    fn malformed_command_lines() {
        for (line, msg) in [
            ("vote cfg=(1,2", "unclosed `(`"),
            ("vote cfg=1,2)", "`)` without `(`"),
            ("vote cfg=((1))", "nested `(`"),
            ("vote cfg=(1,2)x", "text after `)`"),
            ("vote cfg=(1,,2)", "empty value"),
            ("vote cfg=", "has no value"),
            ("vote cfg=1 cfg=2", "given twice"),
            ("vote =1", "bad argument key"),
            ("vote(1)", "must be a plain word"),
        ] {
            let err = parse_command(line).unwrap_err();
            assert!(err.contains(msg), "{line}: {err}");
        }
    }

    #[test]
    fn files() {
        let text = "# comment\n\
                    \n\
                    a x=1\n\
                    ----\n\
                    one\n\
                    two\n\
                    \n\
                    b\n\
                    in 1\n\
                    in 2\n\
                    ----\n\
                    \n\
                    c\n\
                    ----\n\
                    ----\n\
                    p1\n\
                    \n\
                    p2\n\
                    ----\n\
                    ----\n";
        let cases = parse("f.txt", text).unwrap();
        let got: Vec<_> = cases
            .iter()
            .map(|c| {
                (
                    c.tc.pos.as_str(),
                    c.tc.to_string(),
                    c.tc.input.as_str(),
                    c.expected.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("f.txt:3", "a x=1".to_owned(), "", "one\ntwo"),
                ("f.txt:8", "b".to_owned(), "in 1\nin 2", ""),
                ("f.txt:13", "c".to_owned(), "", "p1\n\np2"),
            ]
        );
    }

    #[test]
    fn malformed_files() {
        for (text, msg) in [
            (
                "a\n\n----\nx\n",
                "f.txt:2: blank line before `----` of the command at line 1",
            ),
            ("\na\nb\n", "f.txt:2: the file ends before the `----`"),
            ("----\nx\n", "f.txt:1: `----` without a command"),
            ("a\n----\n----\nx\n\n", "f.txt:3: fenced output"),
            (
                "a\n----\n----\nx\n----\n----\ny\n",
                "f.txt:7: expected a blank line",
            ),
            ("a x=(1\n----\n", "f.txt:1: unclosed `(`"),
        ] {
            let err = parse("f.txt", text).unwrap_err();
            assert!(err.contains(msg), "{text:?}: {err}");
        }
    }

    #[test]
    fn mismatch_report_names_the_case() {
        let cases = parse("f.txt", "# c\na k=(1,2)\n----\nold\n\nb\n----\nsame\n").unwrap();
        let actual = run_cases(&cases, |tc| match tc.cmd.as_str() {
            "a" => "new\n".to_owned(),
            _ => "same".to_owned(),
        });
        let report = mismatches(&cases, &actual).unwrap();
        assert!(report.starts_with("1 of 2 cases differ"), "{report}");
        assert!(
            report.contains("f.txt:2: a k=(1,2)\nexpected:\n    old\nactual:\n    new\n"),
            "{report}"
        );
        assert_eq!(
            mismatches(&cases, &["old".to_owned(), "same".to_owned()]),
            None
        );
    }

    #[test]
    fn panics_name_the_case() {
        let cases = parse("f.txt", "a\n----\n\nb k=x\n----\n").unwrap();
        let err = panic::catch_unwind(|| {
            run_cases(&cases, |tc| {
                let _: Option<u64> = tc.parse_arg("k");
                String::new()
            })
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with("f.txt:4: `b k=x` panicked: argument `k`: cannot parse `x`"),
            "{msg}"
        );
    }

    #[test]
    fn rewrite_keeps_all_but_the_outputs() {
        let text = "# head\n\
                    a\n\
                    ----\n\
                    \n\
                    # mid\n\
                    b\n\
                    in\n\
                    ----\n\
                    old 1\n\
                    old 2\n\
                    \n\
                    c\n\
                    ----\n\
                    ----\n\
                    x\n\
                    \n\
                    y\n\
                    ----\n\
                    ----\n\
                    \n\
                    # tail\n";
        let cases = parse("f.txt", text).unwrap();
        let actual = ["now some".to_owned(), "p\n\nq".to_owned(), String::new()];
        let new = rewrite(text, &cases, &actual);
        assert_eq!(
            new,
            "# head\na\n----\nnow some\n\n# mid\nb\nin\n----\n----\np\n\nq\n----\n----\n\n\
             c\n----\n\n# tail\n"
        );
        // The rewritten file reads back as what was written.
        let reread: Vec<_> = parse("f.txt", &new)
            .unwrap()
            .into_iter()
            .map(|c| c.expected)
            .collect();
        assert_eq!(reread, actual);
        // Rewriting with the expected outputs changes nothing.
        let same: Vec<_> = cases.iter().map(|c| c.expected.clone()).collect();
        assert_eq!(rewrite(text, &cases, &same), text);
    }

    #[test]
    fn arg_helpers() {
        let cases = parse("f.txt", "a n=7 l=(1,_,3) s=x\n----\n").unwrap();
        let tc = &cases[0].tc;
        assert_eq!(tc.parse_arg::<u64>("n"), Some(7));
        assert_eq!(tc.parse_arg::<u64>("missing"), None);
        assert_eq!(tc.arg("l").unwrap(), ["1", "_", "3"]);
        assert!(tc.has_arg("s") && !tc.has_arg("t"));
        tc.check_args(&["n", "l", "s"]);
        tc.check_no_input();
        let err = panic::catch_unwind(|| tc.check_args(&["n", "l"])).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("unknown argument `s` for `a`"), "{msg}");
    }
}
