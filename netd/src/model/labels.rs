//! Labels and selectors: `key=value[,key=value...]`, the same characters
//! on both sides, for services, policies and endpoints alike.

use std::collections::BTreeMap;

use super::ModelError;

/// `key=value[,key=value...]`.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, ModelError> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(ModelError::invalid(
                "selector",
                format!("{part:?} is not key=value (e.g. app=web,tier=front)"),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(label_char) || !v.chars().all(label_char) {
            return Err(ModelError::invalid(
                "selector",
                format!("{part:?}: keys and values are letters, digits, '_', '.', '-', '/'"),
            ));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ModelError::invalid(
                "selector",
                format!("{k:?} is given twice"),
            ));
        }
    }
    Ok(labels)
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

/// Of a container's labels, those a selector can name (`key=value`, no
/// commas); the keys of the rest, left out, to be told.
pub fn selectable_labels(
    labels: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut left_out = Vec::new();
    for (k, v) in labels {
        let one = BTreeMap::from([(k.clone(), v.clone())]);
        match parse_selector(&format!("{k}={v}")) {
            Ok(parsed) if parsed == one => {
                kept.insert(k, v);
            }
            _ => left_out.push(k),
        }
    }
    (kept, left_out)
}
