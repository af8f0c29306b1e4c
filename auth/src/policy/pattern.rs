//! Match patterns: globs over a whole value, with named captures.
//!
//! `*` is any run of characters *including* `/` (so `spiffe://corp.example/ns/bi/*` matches
//! `spiffe://corp.example/ns/bi/sa/reporting`), `?` one character, `[abc]` / `[!abc]` a
//! character class, `{a,b}` an alternation. `{name}` (an identifier, no comma) captures one
//! non-empty run of characters other than `/` and `@`: one path segment of a URI, one
//! local part or label, never a separator, so a capture cannot swallow the structure
//! around it. Backslash is an ordinary character (RFC 4514 text uses it for escaping);
//! a literal metacharacter is written as a class, e.g. `[*]`, `[{]`.
//!
//! Patterns compile to anchored regular expressions.

use regex::{Regex, RegexBuilder};
use std::collections::BTreeMap;
use std::fmt;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: String,
    regex: Regex,
    captures: Vec<String>,
}

/// Why a pattern text is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatternError {
    #[error("unclosed '['")]
    UnclosedClass,
    #[error("unclosed '{{'")]
    UnclosedBrace,
    #[error("unmatched '}}'")]
    UnmatchedBrace,
    #[error("'{{' inside an alternation")]
    NestedBrace,
    #[error("capture {{{0}}} appears twice")]
    DuplicateCapture(String),
    #[error("{0:?} is not a capture name (letters, digits and '_', starting with a letter)")]
    BadCaptureName(String),
    #[error("{0}")]
    Regex(String),
}

/// The captures of one successful match, by name.
pub(crate) type Captures = BTreeMap<String, String>;

impl Pattern {
    pub(crate) fn compile(source: &str, case_insensitive: bool) -> Result<Pattern, PatternError> {
        let mut captures = Vec::new();
        let body = translate(source, &mut captures)?;
        let regex = RegexBuilder::new(&format!("^(?s:{body})$"))
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| PatternError::Regex(e.to_string()))?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
            captures,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The names this pattern captures.
    pub(crate) fn capture_names(&self) -> &[String] {
        &self.captures
    }

    pub(crate) fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    /// The captures when `value` matches.
    pub(crate) fn captures(&self, value: &str) -> Option<Captures> {
        let found = self.regex.captures(value)?;
        Some(
            self.captures
                .iter()
                .filter_map(|name| Some((name.clone(), found.name(name)?.as_str().to_owned())))
                .collect(),
        )
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Translates glob syntax to a regular expression; capture names go to `captures`.
fn translate(source: &str, captures: &mut Vec<String>) -> Result<String, PatternError> {
    let mut out = String::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => out.push_str(&class(&mut chars)?),
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        None => return Err(PatternError::UnclosedBrace),
                        Some('}') => break,
                        Some('{') => return Err(PatternError::NestedBrace),
                        Some(c) => inner.push(c),
                    }
                }
                if inner.contains(',') {
                    let alternatives = inner
                        .split(',')
                        .map(|alt| translate(alt, captures))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push_str(&format!("(?:{})", alternatives.join("|")));
                } else {
                    if !is_capture_name(&inner) {
                        return Err(PatternError::BadCaptureName(inner));
                    }
                    if captures.contains(&inner) {
                        return Err(PatternError::DuplicateCapture(inner));
                    }
                    out.push_str(&format!("(?P<{inner}>[^/@]+)"));
                    captures.push(inner);
                }
            }
            '}' => return Err(PatternError::UnmatchedBrace),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    Ok(out)
}

/// `[abc]`, `[!abc]`, `[a-z]` after the opening bracket.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, PatternError> {
    let mut out = String::from("[");
    if chars.peek() == Some(&'!') {
        chars.next();
        out.push('^');
    }
    let mut first = true;
    loop {
        match chars.next() {
            None => return Err(PatternError::UnclosedClass),
            // A `]` right after the opening bracket is a member, as in shell globs.
            Some(']') if !first => break,
            Some('-') if !first && chars.peek() != Some(&']') => out.push('-'),
            // `regex::escape` escapes every character that is special inside a class too.
            Some(c) => out.push_str(&regex::escape(&c.to_string())),
        }
        first = false;
    }
    out.push(']');
    Ok(out)
}

fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        Pattern::compile(pattern, false).unwrap().is_match(value)
    }

    #[test]
    fn star_crosses_slashes_and_matches_the_whole_value() {
        assert!(m(
            "spiffe://corp.example/ns/bi/*",
            "spiffe://corp.example/ns/bi/sa/reporting"
        ));
        assert!(!m(
            "spiffe://corp.example/ns/bi/*",
            "xspiffe://corp.example/ns/bi/a"
        ));
        assert!(m("*@corp.example", "alice@corp.example"));
        assert!(!m("*@corp.example", "alice@corp.example.evil"));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
    }

    #[test]
    fn classes_alternations_and_literal_backslashes() {
        assert!(m("[ab]x", "bx") && !m("[ab]x", "cx"));
        assert!(m("[!ab]x", "cx") && !m("[!ab]x", "ax"));
        assert!(m("[a-c]", "b") && m("[*]", "*") && !m("[*]", "x"));
        assert!(m("{dev,prod}_db", "prod_db") && !m("{dev,prod}_db", "test_db"));
        assert!(m(r"O=Corp\, Inc.", r"O=Corp\, Inc."));
        assert!(m("a.b", "a.b") && !m("a.b", "axb"));
    }

    #[test]
    fn a_capture_is_one_segment_never_a_slash_or_an_at_sign() {
        let p = Pattern::compile("spiffe://corp.example/ns/bi/sa/{name}", false).unwrap();
        assert_eq!(p.capture_names(), ["name"]);
        let got = p
            .captures("spiffe://corp.example/ns/bi/sa/reporting")
            .unwrap();
        assert_eq!(got["name"], "reporting");
        assert!(p.captures("spiffe://corp.example/ns/bi/sa/x/y").is_none());
        assert!(p.captures("spiffe://corp.example/ns/bi/sa/").is_none());
        let email = Pattern::compile("{user}@corp.example", false).unwrap();
        assert!(email.captures("alice@evil@corp.example").is_none());
        assert_eq!(
            email.captures("alice@corp.example").unwrap()["user"],
            "alice"
        );
    }

    #[test]
    fn dns_patterns_can_ignore_case() {
        let p = Pattern::compile("*.corp.example", true).unwrap();
        assert!(p.is_match("DB.Corp.Example"));
    }

    #[test]
    fn broken_patterns_are_refused() {
        let err = |p: &str| Pattern::compile(p, false).unwrap_err();
        assert_eq!(err("[ab"), PatternError::UnclosedClass);
        assert_eq!(err("{name"), PatternError::UnclosedBrace);
        assert_eq!(err("a}"), PatternError::UnmatchedBrace);
        assert_eq!(err("{a,{b}}"), PatternError::NestedBrace);
        assert_eq!(err("{x}/{x}"), PatternError::DuplicateCapture("x".into()));
        assert_eq!(err("{1x}"), PatternError::BadCaptureName("1x".into()));
    }
}
