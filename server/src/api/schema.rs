//! Schemas that published events must satisfy: JSON Schema documents
//! (draft 2020-12 unless a document's `$schema` names another draft), each
//! for a topic pattern and optionally one event type, read from files named
//! in the configuration and compiled once at startup.
//!
//! Patterns match the topic as the publishing client names it (without its
//! tenant's prefix), so one rule covers every tenant's `orders.>`. An event
//! must satisfy every rule that matches it. Only external references are
//! refused: a schema is one self-contained document.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::broker::{validate_event_type, TopicPattern};
use jsonschema::Validator;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// One rule of the configuration: `[[schemas]]` with `topics`, optional
/// `type` and `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRule {
    /// A topic name or pattern (`orders.>`).
    pub topics: String,
    /// Only events of this type (unset: every type).
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    /// The JSON Schema document.
    pub file: PathBuf,
}

/// Most rules a configuration may have: each is tried on every publish.
pub(crate) const MAX_SCHEMA_RULES: usize = 256;

struct Compiled {
    pattern: TopicPattern,
    event_type: Option<String>,
    /// The rule as the operator wrote it, for error messages.
    name: String,
    validator: Validator,
}

/// The compiled rules.
#[derive(Default)]
pub(crate) struct Schemas {
    rules: Vec<Compiled>,
    /// Events refused, for `/metrics`.
    refused: AtomicU64,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Schemas").field("rules", &names).finish()
    }
}

/// Compiles one schema document.
fn compile_file(path: &Path) -> Result<Validator, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("{}: not a valid JSON Schema: {e}", path.display()))
}

/// `herald schema check`: every way the payload in file `data` breaks the
/// schema in file `schema`, one line each (none: it is valid). The error:
/// a file that cannot be read, or is not JSON, or not a schema.
pub fn check_file(schema: &Path, data: &Path) -> Result<Vec<String>, String> {
    let validator = compile_file(schema)?;
    let text = std::fs::read_to_string(data)
        .map_err(|e| format!("cannot read {}: {e}", data.display()))?;
    let data: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", data.display()))?;
    Ok(validator.iter_errors(&data).map(|e| describe(&e)).collect())
}

/// One violation: where (a JSON pointer into the payload), which keyword,
/// and why, without echoing the payload's values.
fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    let at = if at.is_empty() { "/".to_owned() } else { at };
    format!("at {at}: '{}': {}", e.kind().keyword(), e.masked())
}

impl Schemas {
    /// Events refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Compiles the configured rules; the error names the rule and why.
    pub(crate) fn compile(rules: &[SchemaRule]) -> Result<Schemas, String> {
        if rules.len() > MAX_SCHEMA_RULES {
            return Err(format!("schemas: at most {MAX_SCHEMA_RULES} rules"));
        }
        let compiled = rules
            .iter()
            .map(|rule| {
                let name = match &rule.event_type {
                    Some(t) => format!("{} {t}", rule.topics),
                    None => rule.topics.clone(),
                };
                let pattern = TopicPattern::parse(&rule.topics)
                    .map_err(|e| format!("schemas: rule {name:?}: {e}"))?;
                if let Some(t) = &rule.event_type {
                    validate_event_type(t).map_err(|e| format!("schemas: rule {name:?}: {e}"))?;
                }
                let validator =
                    compile_file(&rule.file).map_err(|e| format!("schemas: rule {name:?}: {e}"))?;
                Ok(Compiled {
                    pattern,
                    event_type: rule.event_type.clone(),
                    name,
                    validator,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Schemas {
            rules: compiled,
            refused: AtomicU64::new(0),
        })
    }

    /// Checks an event's payload (valid JSON already) against every rule
    /// for its topic (as the client names it) and type. The payload is
    /// decoded only if a rule applies.
    pub(crate) fn check(
        &self,
        topic: &str,
        event_type: &str,
        payload: &[u8],
    ) -> Result<(), ApiError> {
        let mut applicable = self.rules.iter().filter(|r| {
            r.event_type.as_deref().is_none_or(|t| t == event_type) && r.pattern.matches(topic)
        });
        let Some(first) = applicable.next() else {
            return Ok(());
        };
        let data: Value = serde_json::from_slice(payload)
            .map_err(|e| ApiError::Internal(format!("a checked payload did not decode: {e}")))?;
        for rule in std::iter::once(first).chain(applicable) {
            // The first violation: enough to fix, and bounded.
            if let Some(e) = rule.validator.iter_errors(&data).next() {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::Unprocessable(format!(
                    "'data' does not match the schema of {:?}: {}",
                    rule.name,
                    describe(&e)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(dir: &Path, list: &[(&str, Option<&str>, &str)]) -> Result<Schemas, String> {
        let rules: Vec<SchemaRule> = list
            .iter()
            .enumerate()
            .map(|(i, (topics, event_type, schema))| {
                let file = dir.join(format!("{i}.json"));
                std::fs::write(&file, schema).unwrap();
                SchemaRule {
                    topics: (*topics).to_owned(),
                    event_type: event_type.map(str::to_owned),
                    file,
                }
            })
            .collect();
        Schemas::compile(&rules)
    }

    #[test]
    fn every_matching_rule_applies_and_errors_name_path_and_keyword() {
        let dir = tempfile::tempdir().unwrap();
        let order = r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer","minimum":1}}}"#;
        let schemas = rules(
            dir.path(),
            &[
                ("orders.>", Some("order.created"), order),
                ("orders.eu", None, r#"{"not":{"type":"null"}}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            schemas.check("orders.us", "order.created", br#"{"id":3}"#),
            Ok(())
        );
        let e = schemas
            .check("orders.us", "order.created", br#"{"id":0}"#)
            .unwrap_err();
        assert_eq!(e.status().0, 422);
        assert!(e.message().contains("at /id: 'minimum'"), "{e}");
        assert!(e.message().contains(r#""orders.> order.created""#), "{e}");
        let e = schemas
            .check("orders.us", "order.created", b"{}")
            .unwrap_err();
        assert!(e.message().contains("at /: 'required'"), "{e}");
        // Other types and topics are not checked by the first rule.
        assert_eq!(schemas.check("orders.us", "order.paid", b"{}"), Ok(()));
        assert_eq!(schemas.check("invoices.us", "order.created", b"{}"), Ok(()));
        // Both rules apply to orders.eu.
        assert!(schemas.check("orders.eu", "order.paid", b"null").is_err());
        assert!(schemas.check("orders.eu", "order.created", b"{}").is_err());
        assert_eq!(
            schemas.check("orders.eu", "order.created", br#"{"id":1}"#),
            Ok(())
        );
    }

    #[test]
    fn bad_rules_are_refused_at_startup_naming_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let e = rules(dir.path(), &[("orders.>", None, r#"{"type":"nonsense"}"#)]).unwrap_err();
        assert!(
            e.contains(r#"rule "orders.>""#) && e.contains("not a valid JSON Schema"),
            "{e}"
        );
        let e = rules(dir.path(), &[("orders.>", None, "{")]).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = rules(dir.path(), &[("orders.>.x", None, "{}")]).unwrap_err();
        assert!(e.contains("'>' may only be the last token"), "{e}");
        let e = rules(dir.path(), &[("a", Some("bad type"), "{}")]).unwrap_err();
        assert!(e.starts_with(r#"schemas: rule "a bad type""#), "{e}");
        // A reference outside the document is refused, not fetched.
        let e = rules(
            dir.path(),
            &[("a", None, r#"{"$ref":"https://example.com/s.json"}"#)],
        )
        .unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }
}
