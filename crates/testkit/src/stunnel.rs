//! A TLS listener owned by one test, in front of a plaintext server (Tansu speaks no TLS): a
//! `stunnel` process accepting TLS on a free loopback port with a certificate the test issued
//! and forwarding the bytes to the server. Killed when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stunnel binary: `CARRIER_TEST_STUNNEL` (`make test` sets it), else Debian's
/// `/usr/bin/stunnel4`, else `stunnel` on `PATH`.
pub fn stunnel_binary() -> PathBuf {
    crate::server_binary("CARRIER_TEST_STUNNEL", "/usr/bin/stunnel4", "stunnel")
}

pub struct Stunnel {
    /// The TLS port, on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Stunnel {
    /// Starts TLS on a free loopback port with the certificate `cert` and key `key`, forwarding
    /// to `127.0.0.1:backend_port`.
    pub async fn start(cert: &Path, key: &Path, backend_port: u16) -> Stunnel {
        Self::start_reserved(Self::reserve(), cert, key, None, backend_port).await
    }

    /// Picks a free port for a TLS listener to be started with [`Stunnel::start_reserved`] (a
    /// broker must know the address it advertises before the listener exists).
    pub fn reserve() -> (PathBuf, u16) {
        crate::scratch_dir_and_port("carrier-stunnel-")
    }

    /// Starts TLS on a port from [`Stunnel::reserve`]; with `client_ca`, clients must present a
    /// certificate that CA signed (mutual TLS).
    pub async fn start_reserved(
        (dir, port): (PathBuf, u16),
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        backend_port: u16,
    ) -> Stunnel {
        let config = dir.join("stunnel.conf");
        let mut text = format!(
            "foreground = yes\npid =\ndebug = notice\noutput = {log}\n\n[tls]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend_port}\ncert = {cert}\nkey = {key}\n",
            log = dir.join("stunnel.log").display(),
            cert = cert.display(),
            key = key.display(),
        );
        if let Some(client_ca) = client_ca {
            text.push_str(&format!(
                "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                client_ca.display()
            ));
        }
        std::fs::write(&config, text).expect("stunnel configuration");
        let binary = stunnel_binary();
        let child = tokio::process::Command::new(&binary)
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stunnel.stderr")).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error} (apt-get install stunnel4, set CARRIER_TEST_STUNNEL, or run `make test`)",
                    binary.display()
                )
            });
        let stunnel = Stunnel {
            port,
            dir,
            child: Some(child),
        };
        crate::eventually(Duration::from_secs(30), "stunnel to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        stunnel
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("stunnel configuration and log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
