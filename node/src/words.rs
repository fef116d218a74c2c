//! How enums read in tables, logs and metric labels: as the word their JSON uses.

/// A serde unit variant as its JSON word (`Role::Active` → `active`); empty for anything else.
pub fn json_word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
