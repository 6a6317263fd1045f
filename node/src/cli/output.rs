//! Result output: a table for people, JSON or YAML for scripts.

use serde::Serialize;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and text.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints `value` as JSON or YAML, or the text `table` builds.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) {
    match format {
        Format::Table => println!("{}", table()),
        Format::Json => match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: rendering JSON: {e}"),
        },
        Format::Yaml => match serde_yaml_ng::to_string(value) {
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("error: rendering YAML: {e}"),
        },
    }
}

/// A table with the given header and rows.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}
