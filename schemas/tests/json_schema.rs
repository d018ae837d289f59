//! The checked-in JSON Schema files match the Rust types.

use std::path::PathBuf;

#[test]
fn json_schema_files_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in kiosk_schemas::schema::wire_schemas() {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schema files out of date: {stale:?}; run `UPDATE_SCHEMAS=1 cargo test -p kiosk-schemas`"
    );
}

#[test]
fn examples_validate_against_their_own_shape() {
    // Every example in README and examples/ must decode with the real types.
    let receipt =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/receipt.json"))
            .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&receipt).unwrap();
    let doc: kiosk_schemas::Document = serde_json::from_value(body["document"].clone()).unwrap();
    doc.validate().unwrap();
}
