//! Where YAML 1.1 and YAML 1.2 readers disagree on a form. kubectl, Argo CD and Flux read YAML 1.1 (go-yaml v2
//! through sigs.k8s.io/yaml): an unquoted `011002` is a number (even octal), `yes` a boolean, and `<<` merges a
//! mapping; a YAML 1.2 reader (ours, and the planner's view of a file) keeps strings. The same file would mean two
//! things, so `validate` refuses each such plain scalar with its field and line, wherever it stands: block or flow
//! style, before a comment, in a list. (A plain date such as `2026-04-01` is a timestamp in YAML 1.1, but
//! sigs.k8s.io/yaml hands it to the API server as the string it was: checked on the real API server, so not refused.)
//!
//! This reads the parser's events, which carry each scalar's style and position (serde's view of the document no
//! longer knows whether a value was quoted).

use crate::domain::problem::Problem;
use granit_parser::{Event, Parser, ScalarStyle};

/// Fields whose values are strings of digits (or digits and dashes).
const DIGIT_STRING_FIELDS: [&str; 3] = ["lgCode", "corporateNumber", "phone"];

/// Whether a YAML 1.1 reader resolves this plain scalar to an integer: an optional sign, then digits (underscores
/// allowed), or 0x / 0o forms. `011-000-0000` stays a string there (a dash inside is no number).
pub fn reads_as_yaml11_number(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let hex = digits.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == '_'));
    hex || (digits.starts_with(|c: char| c.is_ascii_digit()) && digits.chars().all(|c| c.is_ascii_digit() || c == '_'))
}

/// YAML 1.1's booleans (the 1.2 core schema knows only true and false).
fn reads_as_yaml11_bool(value: &str) -> bool {
    matches!(value, "y" | "Y" | "yes" | "Yes" | "YES" | "n" | "N" | "no" | "No" | "NO" | "on" | "On" | "ON" | "off" | "Off" | "OFF")
}

/// One step of the path to the current node.
enum Step {
    /// In a mapping: the key just read, or `None` while the next scalar is a key.
    Map(Option<String>),
    Seq(usize),
}

fn path(stack: &[Step]) -> String {
    let mut out = String::new();
    for step in stack {
        match step {
            Step::Map(Some(key)) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Map(None) => {}
            Step::Seq(i) => out.push_str(&format!("[{}]", i.saturating_sub(1))),
        }
    }
    out
}

/// Whether `text` may hold such a scalar at all: a `<<`, one of YAML 1.1's boolean words as a whole token, or a
/// digit field with an all-digit value. Most forms hold none, and a regular expression over the text costs a
/// fraction of parsing it again (`validate` of 5,000 registrations: tests/validate_speed.rs).
pub fn may_hold_ambiguous_scalars(text: &str) -> bool {
    static CANDIDATES: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = CANDIDATES.get_or_init(|| {
        regex::Regex::new(
            r#"<<|(?:^|[\s\[{,:-])(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)[ \t]*(?:$|[,\]}#\r\n])|(?:lgCode|corporateNumber|phone)["']?[ \t]*:\s*[+-]?(?:0x)?[0-9A-Fa-f_]+[ \t]*(?:$|[,}#\r\n])"#,
        )
        .ok()
    });
    re.as_ref().is_none_or(|re| re.is_match(text))
}

/// Problems per document (1-based), for every plain scalar that YAML 1.1 and 1.2 read differently.
pub fn ambiguous_scalars(text: &str) -> Vec<(usize, Problem)> {
    if !may_hold_ambiguous_scalars(text) {
        return Vec::new();
    }
    scan_events(text)
}

/// [`ambiguous_scalars`] without the quick look first (the `yaml` fuzz target checks the quick look misses nothing).
pub fn scan_events(text: &str) -> Vec<(usize, Problem)> {
    let mut out = Vec::new();
    let mut document = 0;
    let mut stack: Vec<Step> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break }; // syntax errors are the reader's to report
        // A node that is a value advances its parent: a sequence counts it, a mapping goes back to its next key.
        let is_key = matches!(stack.last(), Some(Step::Map(None)));
        match &event {
            Event::DocumentStart(..) => {
                document += 1;
                stack.clear();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) | Event::Scalar(..) | Event::Alias(..) => {
                if let Some(Step::Seq(i)) = stack.last_mut() {
                    *i += 1;
                }
            }
            _ => {}
        }
        match event {
            Event::MappingStart(..) => stack.push(Step::Map(None)),
            Event::SequenceStart(..) => stack.push(Step::Seq(0)),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if let Some(Step::Map(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            Event::Scalar(value, style, _, tag) if is_key => {
                if style == ScalarStyle::Plain && tag.is_none() && value == "<<" {
                    let field = path(&stack);
                    out.push((document, Problem::error(if field.is_empty() { "<<".into() } else { format!("{field}.<<") }, format!(
                        "line {}: a merge key (<<): YAML 1.1 readers such as kubectl merge the mapping, YAML 1.2 readers keep a key named <<; write the fields out",
                        span.start.line()
                    ))));
                }
                if let Some(Step::Map(key)) = stack.last_mut() {
                    *key = Some(value.into_owned());
                }
            }
            Event::Scalar(value, style, _, tag) => {
                let field = path(&stack);
                let last = stack.iter().rev().find_map(|s| match s {
                    Step::Map(Some(k)) => Some(k.as_str()),
                    _ => None,
                });
                if style == ScalarStyle::Plain && tag.is_none() {
                    let line = span.start.line();
                    let what = if last.is_some_and(|k| DIGIT_STRING_FIELDS.contains(&k)) && reads_as_yaml11_number(&value) {
                        Some("a number (011002 even as octal)")
                    } else if reads_as_yaml11_bool(&value) {
                        Some("a boolean")
                    } else {
                        None
                    };
                    if let Some(what) = what {
                        out.push((
                            document,
                            Problem::error(
                                field,
                                format!("line {line}: unquoted {value}: YAML 1.1 readers such as kubectl take it for {what} (quote it: \"{value}\")"),
                            ),
                        ));
                    }
                }
                if let Some(Step::Map(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            Event::Alias(..) => {
                if let Some(Step::Map(key)) = stack.last_mut() {
                    *key = None;
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<String> {
        ambiguous_scalars(text).into_iter().map(|(_, p)| p.field).collect()
    }

    #[test]
    fn digit_strings_dates_and_booleans_are_found_in_any_style() {
        assert_eq!(fields("spec:\n  lgCode: 011002\n"), ["spec.lgCode"]);
        assert_eq!(fields("spec: {displayName: x, lgCode: 011002}\n"), ["spec.lgCode"], "flow style");
        assert_eq!(fields("spec:\n  lgCode: 011002  # 札幌市\n"), ["spec.lgCode"], "before a comment");
        assert_eq!(fields("spec:\n  contacts:\n  - {phone: \"0110\"}\n  - phone: 0112345678\n"), ["spec.contacts[1].phone"]);
        assert!(fields("spec:\n  accessStartDate: 2026-04-01\n").is_empty(), "sigs.k8s.io/yaml keeps a date the string it was");
        assert_eq!(fields("spec:\n  officialSealAffixed: yes\n"), ["spec.officialSealAffixed"]);
        assert_eq!(fields("spec:\n  <<: {a: 1}\n"), ["spec.<<"]);
        // Quoted, or strings in YAML 1.1 too: nothing to say.
        assert!(fields("spec:\n  lgCode: \"011002\"\n  accessStartDate: '2026-04-01'\n  phone: 011-000-0000\n  seal: true\n  name: 011002\n").is_empty());
    }

    #[test]
    fn the_quick_look_never_misses_what_the_events_find() {
        for text in [
            "spec:\n  lgCode: 011002\n",
            "spec: {displayName: x, lgCode: 011002}\n",
            "spec:\n  lgCode: 011002  # c\n",
            "spec:\n  contacts:\n  - phone: 0112345678\n",
            "spec:\n  officialSealAffixed: yes\n",
            "spec: {a: [on, x]}\n",
            "- no\n",
            "spec:\n  <<: {a: 1}\n",
            "spec:\n  corporateNumber: 0x1F\n",
            "spec:\n  \"lgCode\": 011002\n",
            "spec:\n  lgCode:\n    011002\n",
        ] {
            assert!(may_hold_ambiguous_scalars(text), "{text:?}");
            assert!(!fields(text).is_empty(), "{text:?}");
        }
        assert!(!may_hold_ambiguous_scalars("spec:\n  lgCode: \"011002\"\n  phone: 011-000-0000\n  note: based on the form\n"));
    }

    #[test]
    fn documents_are_counted() {
        let found = ambiguous_scalars("a: 1\n---\nb: 2\n---\nspec: {lgCode: 011002}\n");
        assert_eq!(found.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn only_values_yaml_11_reads_as_numbers_are_flagged() {
        for number in ["011002", "0112345678", "+81112345678", "1_000", "0x1F"] {
            assert!(reads_as_yaml11_number(number), "{number}");
        }
        for string in ["011-000-0000", "0120-00-0000", "-", "", "01a"] {
            assert!(!reads_as_yaml11_number(string), "{string}");
        }
    }
}
