//! TOML syntax and type errors, told without the text they are about.
//!
//! `toml`'s own `Display` prints the offending line under a caret, and serde's messages
//! quote the value (`invalid type: string "...", expected u64`): either can be a
//! collector's API key or a token. The [`ConfigError`] made here has the line and
//! column, the key (with its `[[activity]]` index) and the message with every value a
//! user wrote taken out: `FILE:LINE:COL: MESSAGE (key `a.b.c`)`.

use std::collections::HashMap;

use super::ConfigError;

/// `err`, found in `text`, as a [`ConfigError`] (whose `file` the caller sets).
pub(super) fn describe(mut err: toml::de::Error, text: &str) -> ConfigError {
    let message = scrub(err.message());
    let span = err.span();
    // Without its input, the error's `Display` ends with the keys it was found under
    // (in `host.otel.headers`), which `toml` has no getter for.
    err.set_input(None);
    let shown = err.to_string();
    let lines: Vec<&str> = shown.trim_end().lines().collect();
    let found_under: Vec<String> = match lines.as_slice() {
        [_, .., last] => last
            .strip_prefix("in `")
            .and_then(|keys| keys.strip_suffix('`'))
            .map(|keys| keys.split('.').map(str::to_owned).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let (position, key) = match span {
        Some(span) => {
            let offset = span.start.min(text.len());
            (
                Some(line_and_column(text, offset)),
                merge(key_at(text, offset), found_under),
            )
        }
        None => (None, found_under.join(".")),
    };
    ConfigError {
        file: std::path::PathBuf::new(),
        key,
        message,
        position,
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Takes the values out of a serde or TOML message: `invalid type: string "s3cret",
/// expected u64` becomes `invalid type: string, expected u64`, `unknown variant `xml``
/// becomes `unknown variant`. Names the schema gives (`expected `text` or `json``,
/// `unknown field `colour``) stay.
fn scrub(message: &str) -> String {
    // What serde puts before a value it quotes; strings are `Debug`-quoted, the rest in
    // backticks.
    const BEFORE_A_VALUE: [(&str, char); 6] = [
        ("string \"", '"'),
        ("integer `", '`'),
        ("floating point `", '`'),
        ("boolean `", '`'),
        ("character `", '`'),
        ("unknown variant `", '`'),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (marker, close) in BEFORE_A_VALUE {
            if let Some(after) = rest.strip_prefix(marker) {
                // Keep the word (`string`), drop ` "value"`.
                out.push_str(marker[..marker.len() - 2].trim_end());
                rest = skip_quoted(after, close);
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// `text` after the quoted value it starts inside of, closed by `close` (a `\` escapes).
fn skip_quoted(text: &str, close: char) -> &str {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            '\\' if close == '"' && !escaped => escaped = true,
            c if c == close && !escaped => return &text[at + c.len_utf8()..],
            _ => escaped = false,
        }
    }
    ""
}

/// One key of a path: its name, and how it is shown (`activity[1]` for the second
/// `[[activity]]`).
struct Segment {
    name: String,
    shown: String,
}

/// The key path at byte `offset` of `text`, as far as reading the lines up to it tells:
/// the table header in effect (array tables counted) and the key of the line (or of the
/// multi-line value) the offset is in.
fn key_at(text: &str, offset: usize) -> Vec<Segment> {
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut table: Vec<Segment> = Vec::new();
    let mut line_key: Vec<String> = Vec::new();
    let mut open = Open::default();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if start > offset {
            break;
        }
        start += line.len();
        if open.is_open() {
            // A line of the value the last key opened (an array, an inline table, a
            // multi-line string).
            open = open.scan(line);
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(inner) = trimmed.strip_prefix('[') {
            let array = inner.starts_with('[');
            let inner = inner.strip_prefix('[').unwrap_or(inner);
            if let Some((names, rest)) = dotted_key(inner)
                && rest.starts_with(']')
            {
                table = resolve(names, array, &mut arrays);
                line_key.clear();
            }
            continue;
        }
        if let Some((names, rest)) = dotted_key(trimmed)
            && let Some(value) = rest.strip_prefix('=')
        {
            line_key = names;
            open = Open::default().scan(value);
        }
    }
    table.extend(line_key.into_iter().map(|name| Segment {
        shown: name.clone(),
        name,
    }));
    table
}

/// What a value left open at the end of a line: brackets and braces, or a multi-line
/// string.
#[derive(Default, Clone, Copy)]
struct Open {
    depth: usize,
    string: Option<&'static str>,
}

impl Open {
    fn is_open(self) -> bool {
        self.depth > 0 || self.string.is_some()
    }

    /// What is still open after `text`, a line or the rest of one. A one-line string
    /// left unclosed ends with the line, as TOML's parser gives up on it there.
    fn scan(mut self, text: &str) -> Self {
        let mut rest = text;
        loop {
            if let Some(delimiter) = self.string {
                match rest.find(delimiter) {
                    Some(at) => {
                        rest = &rest[at + delimiter.len()..];
                        self.string = None;
                    }
                    None => return self,
                }
            }
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                return self;
            };
            rest = chars.as_str();
            match c {
                '#' => return self,
                '"' | '\'' => {
                    let (two, three) = if c == '"' {
                        ("\"\"", "\"\"\"")
                    } else {
                        ("''", "'''")
                    };
                    if let Some(after) = rest.strip_prefix(two) {
                        self.string = Some(three);
                        rest = after;
                    } else {
                        rest = skip_quoted(rest, c);
                    }
                }
                '[' | '{' => self.depth += 1,
                ']' | '}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// A table header's names as a path, counting `[[array]]` tables (and resolving the
/// index of an enclosing one: `[[activity.dir]]` is under the latest `[[activity]]`).
fn resolve(names: Vec<String>, array: bool, arrays: &mut HashMap<String, usize>) -> Vec<Segment> {
    let last = names.len().saturating_sub(1);
    let mut path = String::new();
    let mut segments = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        let plain = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if array && index == last {
            *arrays.entry(plain.clone()).or_default() += 1;
        }
        let shown = match arrays.get(&plain) {
            Some(count) => format!("{name}[{}]", count.saturating_sub(1)),
            None => name.clone(),
        };
        path = match arrays.get(&plain) {
            Some(count) => format!("{plain}[{}]", count.saturating_sub(1)),
            None => plain,
        };
        segments.push(Segment { name, shown });
    }
    segments
}

/// A dotted key at the start of `text` (bare, "basic" or 'literal' parts), and the text
/// after it and the spaces that follow.
fn dotted_key(text: &str) -> Option<(Vec<String>, &str)> {
    let mut names = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let (name, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let after = skip_quoted(quoted, '"');
            let length = quoted.len() - after.len();
            (quoted.get(..length.checked_sub(1)?)?.to_owned(), after)
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            let (name, after) = quoted.split_once('\'')?;
            (name.to_owned(), after)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            (rest[..end].to_owned(), &rest[end..])
        };
        names.push(name);
        rest = after.trim_start();
        match rest.strip_prefix('.') {
            Some(after) => rest = after.trim_start(),
            None => return Some((names, rest)),
        }
    }
}

/// The key of an error: the path read from the text (which knows array indices), told
/// by the path `toml` found the error under where that one goes further or differs.
fn merge(read: Vec<Segment>, found_under: Vec<String>) -> String {
    let common = read
        .iter()
        .zip(&found_under)
        .take_while(|(segment, name)| segment.name == **name)
        .count();
    let mut parts: Vec<String> = Vec::with_capacity(read.len().max(found_under.len()));
    if common == found_under.len() {
        parts.extend(read.into_iter().map(|segment| segment.shown));
    } else {
        parts.extend(read.into_iter().take(common).map(|segment| segment.shown));
        parts.extend(found_under.into_iter().skip(common));
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ConfigError {
        let err = toml::from_str::<super::super::RawConfig>(text)
            .err()
            .expect("the text should be refused");
        describe(err, text)
    }

    #[test]
    fn values_are_taken_out_of_messages() {
        assert_eq!(
            scrub(r#"invalid type: string "s3cr\"et", expected u64"#),
            "invalid type: string, expected u64"
        );
        assert_eq!(
            scrub("invalid value: integer `-1`, expected u64"),
            "invalid value: integer, expected u64"
        );
        assert_eq!(
            scrub("unknown variant `xml`, expected `text` or `json`"),
            "unknown variant, expected `text` or `json`"
        );
        assert_eq!(
            scrub("unknown field `colour`, expected `a`"),
            "unknown field `colour`, expected `a`"
        );
    }

    #[test]
    fn a_type_error_names_its_key_and_place_but_not_its_value() {
        let err = error("[host]\ncache_max_mb = \"SECRET-VALUE-123\"\n");
        assert_eq!(err.key, "host.cache_max_mb");
        assert_eq!(err.position, Some((2, 16)));
        assert!(!err.message.contains("SECRET"), "{}", err.message);
        let err = error(
            "[[activity]]\narn = \"a\"\nhandler = \"h\"\n[[activity]]\narn = \"b\"\nhandler = \"h\"\nworkers = \"SECRET\"\n",
        );
        assert_eq!(err.key, "activity[1].workers");
        assert!(!err.message.contains("SECRET"), "{}", err.message);
        let err = error("[host.otel]\nendpoint = \"http://c\"\nheaders = { \"x-api-key\" = 5 }\n");
        assert_eq!(err.key, "host.otel.headers.x-api-key");
    }

    #[test]
    fn a_syntax_error_names_its_key_and_place_but_not_its_line() {
        let after = "\n[[activity]]\narn = \"a\"\nhandler = \"h\"\n";
        for (value, line) in [
            (r#"{ "x-api-key" = "SECRET-VALUE-123" oops }"#, 3),
            // An unclosed inline table goes on over the next lines.
            (r#"{ "x-api-key" = "SECRET-VALUE-123 }"#, 5),
            // Brackets in comments and multi-line strings do not count.
            (
                "[\n  \"a\", # ]\n  '''\n]\n''', \"SECRET-VALUE-123\" oops ]",
                7,
            ),
        ] {
            let text = format!("[host.otel]\nendpoint = \"http://c\"\nheaders = {value}\n{after}");
            let err = error(&text);
            assert_eq!(err.key, "host.otel.headers", "{err:?}");
            assert_eq!(err.position.map(|(line, _)| line), Some(line), "{err:?}");
            assert!(!err.message.contains("SECRET"), "{}", err.message);
        }
    }
}
