//! What `carrierctl` prints: aligned tables and field lists for people, JSON for scripts.
//!
//! Results go to stdout, everything else (progress, notes, errors) to stderr, so
//! `carrierctl --json ... | jq` always reads one clean document. A closed stdout (`| head`)
//! ends the program quietly instead of panicking.

use std::io::Write;

use serde_json::Value;

/// Writes `text` and a newline to stdout; exits quietly when stdout is closed.
pub fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|_| stdout.flush());
    if let Err(error) = written {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("carrierctl: cannot write the output: {error}");
        std::process::exit(1);
    }
}

/// One JSON document, pretty-printed.
pub fn json(value: &Value) {
    line(&serde_json::to_string_pretty(value).expect("JSON values serialize"));
}

/// One JSON document on one line (JSON lines).
pub fn json_line(value: &Value) {
    line(&serde_json::to_string(value).expect("JSON values serialize"));
}

/// A JSON value as a table cell: strings without quotes, `-` for null or missing.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) if text.is_empty() => "-".to_string(),
        Value::String(text) => text.clone(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        other => other.to_string(),
    }
}

/// Columns aligned by the widest cell, two spaces apart, headers in capitals.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.rows {
            for (column, text) in row.iter().enumerate().take(columns) {
                widths[column] = widths[column].max(single_line(text).chars().count());
            }
        }
        let mut lines = Vec::new();
        let headers: Vec<String> = self.headers.iter().map(|header| header.to_string()).collect();
        for row in std::iter::once(&headers).chain(self.rows.iter()) {
            let mut text = String::new();
            for (column, width) in widths.iter().enumerate() {
                let value = single_line(row.get(column).map(String::as_str).unwrap_or(""));
                if column + 1 == columns {
                    text.push_str(&value);
                } else {
                    text.push_str(&value);
                    let padding = width - value.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', padding));
                }
            }
            lines.push(text.trim_end().to_string());
        }
        lines.join("\n")
    }
}

/// `label  value` lines, the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| {
            let padding = width - label.chars().count() + 2;
            format!("{label}{}{}", " ".repeat(padding), single_line(value))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Line breaks inside a cell would break the table: they become spaces.
fn single_line(text: &str) -> String {
    if text.contains(['\n', '\r']) {
        text.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_by_their_widest_cell() {
        let mut table = Table::new(&["ID", "STATUS", "ERROR"]);
        table.row(vec!["a".into(), "delivered".into(), "-".into()]);
        table.row(vec!["bbbb".into(), "failed".into(), "HTTP 500\nbody".into()]);
        assert_eq!(
            table.render(),
            "ID    STATUS     ERROR\na     delivered  -\nbbbb  failed     HTTP 500 body"
        );
    }

    #[test]
    fn fields_align_their_values() {
        assert_eq!(
            fields(&[("Status", "held".into()), ("Depth", "3".into())]),
            "Status  held\nDepth   3"
        );
    }

    #[test]
    fn cells_show_json_values_for_people() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(3)), "3");
    }
}
