//! Evidence from the services' logs for a failed scenario: the lines about partition
//! ownership, errors and panics, the last few of each process.

use std::path::PathBuf;

/// What a log line must contain to be evidence.
const PATTERNS: &[&str] = &[
    "partitions assigned",
    "partitions revoked",
    "lease lost",
    "ERROR",
    "panicked",
    "chaos: start",
];

/// Lines kept per process.
const LINES_PER_PROCESS: usize = 8;

/// The last matching lines of each `(process, log file)`, prefixed with the process name.
pub fn evidence(files: &[(String, PathBuf)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (process, file) in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let matching: Vec<&str> = text
            .lines()
            .filter(|line| PATTERNS.iter().any(|pattern| line.contains(pattern)))
            .collect();
        let skip = matching.len().saturating_sub(LINES_PER_PROCESS);
        for line in &matching[skip..] {
            lines.push(format!("{process}: {}", shorten(&strip_ansi(line), 400)));
        }
    }
    lines
}

/// How many lines of the `(process, log file)`s contain every one of `patterns`.
pub fn count(files: &[(String, PathBuf)], patterns: &[&str]) -> usize {
    let mut count = 0;
    for (_, file) in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        count += text
            .lines()
            .filter(|line| {
                let line = strip_ansi(line);
                patterns.iter().all(|pattern| line.contains(pattern))
            })
            .count();
    }
    count
}

/// Removes terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' {
            for code in chars.by_ref() {
                if code.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(character);
        }
    }
    out
}

fn shorten(line: &str, limit: usize) -> String {
    if line.chars().count() <= limit {
        return line.to_string();
    }
    let kept: String = line.chars().take(limit).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_matching_lines_without_colours() {
        let dir = std::env::temp_dir().join(carrier_testkit::unique("chaos-logs-"));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("router.log");
        let mut text = String::from("INFO starting\n");
        for index in 0..12 {
            text.push_str(&format!(
                "\u{1b}[32mINFO\u{1b}[0m partitions assigned partitions=[{index}]\n"
            ));
        }
        text.push_str("INFO nothing to see\n");
        std::fs::write(&file, text).expect("write");
        let files = [("router".to_string(), file)];
        assert_eq!(count(&files, &["partitions assigned", "=[1"]), 3);
        let lines = evidence(&files);
        assert_eq!(lines.len(), LINES_PER_PROCESS);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("router: INFO partitions assigned partitions=[11]")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
