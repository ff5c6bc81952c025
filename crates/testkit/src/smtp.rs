//! A real SMTP server on loopback for alert e-mail tests: Python's `aiosmtpd` (from PyPI;
//! `make test` installs it, see `carrier_ensure_aiosmtpd` in `scripts/lib.sh`), run as a child
//! process that stores every message it accepts as one JSON file.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

/// The server: writes `{"mail_from", "rcpt_tos", "data"}` per message, atomically (a message is
/// on disk before the server answers `250` to its DATA).
const SERVER: &str = r#"
import json, os, sys, time
from aiosmtpd.controller import Controller

out_dir, port = sys.argv[1], int(sys.argv[2])

class Store:
    async def handle_DATA(self, server, session, envelope):
        name = "%020d-%d.json" % (time.time_ns(), os.getpid())
        record = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                  "data": envelope.content.decode("utf-8", errors="replace")}
        with open(os.path.join(out_dir, name + ".tmp"), "w") as f:
            json.dump(record, f)
        os.rename(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
        return "250 Message accepted for delivery"

controller = Controller(Store(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Email {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message as sent: headers, blank line, encoded body.
    pub data: String,
}

impl Email {
    /// A header's value, folded lines joined (`None` when absent).
    pub fn header(&self, name: &str) -> Option<String> {
        let data = self.data.replace("\r\n", "\n");
        let head = data.split("\n\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split('\n') {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Unfolding removes the line break and keeps the whitespace.
                if let Some(value) = value.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((key, rest)) = line.split_once(':') {
                if key.eq_ignore_ascii_case(name) {
                    value = Some(rest.trim().to_string());
                }
            }
        }
        value
    }

    /// The body (line breaks as `\n`), decoded from quoted-printable or base64 when the
    /// message says so.
    pub fn body(&self) -> String {
        let data = self.data.replace("\r\n", "\n");
        let body = data.split_once("\n\n").map(|(_, body)| body).unwrap_or("");
        match self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "quoted-printable" => decode_quoted_printable(body),
            "base64" => {
                let compact: String = body.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => body.to_string(),
        }
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let text = text.replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' {
            if let Some(hex) = text.get(index + 1..index + 3) {
                if let Ok(byte) = u8::from_str_radix(hex, 16) {
                    out.push(byte);
                    index += 3;
                    continue;
                }
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An aiosmtpd server of a test's own; killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    _child: tokio::process::Child,
}

impl SmtpServer {
    /// Starts the server on a free loopback port and waits until it accepts connections.
    /// The interpreter: `CARRIER_TEST_PYTHON`, else the one `make test` prepares, else `python3`.
    pub async fn start() -> SmtpServer {
        let python = crate::server_binary(
            "CARRIER_TEST_PYTHON",
            "/var/cache/carrier/python/bin/python",
            "python3",
        );
        let (dir, port) = crate::scratch_dir_and_port("carrier-smtp-");
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER).expect("write the SMTP server script");
        let messages = dir.join("messages");
        std::fs::create_dir_all(&messages).expect("messages directory");
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&messages)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error} (the SMTP test server needs Python 3 with aiosmtpd: \
                     `make test` installs it; or set CARRIER_TEST_PYTHON)",
                    python.display()
                )
            });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the SMTP test server exited with {status}: is aiosmtpd installed for {}? \
                     (`make test` installs it; or set CARRIER_TEST_PYTHON)",
                    python.display()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the SMTP test server did not listen on 127.0.0.1:{port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpServer {
            port,
            dir: messages,
            _child: child,
        }
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Email> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("messages directory")
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|path| {
                let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
                Some(Email {
                    mail_from: value["mail_from"].as_str().unwrap_or_default().to_string(),
                    rcpt_tos: value["rcpt_tos"]
                        .as_array()
                        .map(|tos| {
                            tos.iter()
                                .filter_map(|to| to.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    data: value["data"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_quoted_printable_decodes() {
        let email = Email {
            mail_from: String::new(),
            rcpt_tos: Vec::new(),
            data: "Subject: [Carrier] failing: a\r\n long subject\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nline=\r\n one =3D two\r\n".into(),
        };
        assert_eq!(
            email.header("subject").as_deref(),
            Some("[Carrier] failing: a long subject")
        );
        assert_eq!(email.body(), "line one = two\n");
    }
}
