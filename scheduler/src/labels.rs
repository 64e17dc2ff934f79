//! Label selectors: `zone=a`, `zone=a|b`, `zone!=c`, `ssd`, `!spot`.

use std::collections::BTreeMap;
use std::fmt;

/// One condition on a node's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTerm {
    /// The label has one of the values.
    In(String, Vec<String>),
    /// The label is absent or has none of the values.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

/// All terms must hold (a conjunction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The conditions.
    pub terms: Vec<LabelTerm>,
}

/// A selector string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad label selector term {term:?}: {why}")]
pub struct LabelParseError {
    /// The offending term.
    pub term: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl LabelSelector {
    /// Parses comma-separated terms: `k=v`, `k=v1|v2`, `k!=v`, `k`, `!k`.
    pub fn parse(s: &str) -> Result<LabelSelector, LabelParseError> {
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let err = |why| LabelParseError {
                term: raw.to_string(),
                why,
            };
            let values = |v: &str| -> Result<Vec<String>, LabelParseError> {
                let vals: Vec<String> = v.split('|').map(|x| x.trim().to_string()).collect();
                if vals.iter().any(String::is_empty) {
                    return Err(err("empty value"));
                }
                Ok(vals)
            };
            let term = if let Some((k, v)) = raw.split_once("!=") {
                LabelTerm::NotIn(key(k).ok_or_else(|| err("empty key"))?, values(v)?)
            } else if let Some((k, v)) = raw.split_once('=') {
                LabelTerm::In(key(k).ok_or_else(|| err("empty key"))?, values(v)?)
            } else if let Some(k) = raw.strip_prefix('!') {
                LabelTerm::DoesNotExist(key(k).ok_or_else(|| err("empty key"))?)
            } else {
                LabelTerm::Exists(key(raw).ok_or_else(|| err("empty key"))?)
            };
            terms.push(term);
        }
        Ok(LabelSelector { terms })
    }

    /// True if the labels satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            LabelTerm::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelTerm::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

fn key(k: &str) -> Option<String> {
    let k = k.trim();
    (!k.is_empty()).then(|| k.to_string())
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| match t {
                LabelTerm::In(k, v) => format!("{k}={}", v.join("|")),
                LabelTerm::NotIn(k, v) => format!("{k}!={}", v.join("|")),
                LabelTerm::Exists(k) => k.clone(),
                LabelTerm::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_match() {
        let sel = LabelSelector::parse("zone=a|b, !spot, ssd, tier!=cold").unwrap();
        assert_eq!(sel.to_string(), "zone=a|b,!spot,ssd,tier!=cold");
        assert!(sel.matches(&labels(&[("zone", "b"), ("ssd", "")])));
        assert!(!sel.matches(&labels(&[("zone", "c"), ("ssd", "")])));
        assert!(!sel.matches(&labels(&[("zone", "a"), ("ssd", ""), ("spot", "1")])));
        assert!(!sel.matches(&labels(&[("zone", "a"), ("ssd", ""), ("tier", "cold")])));
    }

    #[test]
    fn bad_terms_are_errors() {
        assert!(LabelSelector::parse("=a").is_err());
        assert!(LabelSelector::parse("zone=").is_err());
        assert!(LabelSelector::parse("!").is_err());
    }
}
