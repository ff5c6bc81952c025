//! A Postgres server owned by one test: initdb into a scratch directory, a free loopback port,
//! TLS on (`ssl=on`) with a certificate the test issued. Stopped (immediate shutdown) and
//! removed when dropped. Postgres refuses to run as root: as root, it runs as the `postgres`
//! user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carrier_store::sqlx::{self, Connection};

/// `CARRIER_PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin` (also the fault matrix's
/// Postgres, `tools/chaos`).
pub fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("CARRIER_PG_BIN_DIR") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "no /usr/lib/postgresql (apt-get install postgresql, or set CARRIER_PG_BIN_DIR)".to_string()
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no Postgres server under /usr/lib/postgresql/*/bin".to_string())
}

/// The `postgres` user's uid and gid when this process is root (`None`: run as ourselves);
/// Postgres refuses to run as root.
pub fn postgres_user() -> Result<Option<(u32, u32)>, String> {
    let me = std::fs::metadata("/proc/self").map_err(|error| format!("reading /proc/self: {error}"))?;
    if me.uid() != 0 {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|error| format!("reading /etc/passwd: {error}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| "running as root and there is no postgres user to run Postgres as".to_string())
}

pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl PostgresServer {
    /// A new cluster (user `postgres`, trust authentication) serving TLS with the certificate
    /// `cert` and key `key` (plaintext connections are accepted too, as by default: the client's
    /// `sslmode` decides). Returns once it accepts connections.
    pub async fn start_tls(cert: &Path, key: &Path) -> PostgresServer {
        let (dir, port) = crate::scratch_dir_and_port("carrier-postgres-");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data directory");
        // The server reads its key as its own user, and refuses a key others can read.
        let (server_cert, server_key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::copy(cert, &server_cert).expect("copy certificate");
        std::fs::copy(key, &server_key).expect("copy key");
        let user = postgres_user().expect("the user to run Postgres as");
        if let Some((uid, gid)) = user {
            for path in [&dir, &data, &server_cert, &server_key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for postgres");
            }
        }
        let bin = postgres_bin_dir().expect("a Postgres server binary");
        let log = dir.join("postgres.log");
        let mut initdb = tokio::process::Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log"));
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let status = initdb.status().await.expect("initdb runs");
        assert!(status.success(), "initdb failed; see {}", log.display());

        let mut postgres = tokio::process::Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", server_cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", server_key.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::options().append(true).open(&log).expect("log"))
            .kill_on_drop(true);
        if let Some((uid, gid)) = user {
            postgres.uid(uid).gid(gid);
        }
        let child = postgres.spawn().expect("postgres starts");
        let server = PostgresServer {
            port,
            dir,
            child: Some(child),
        };
        let plain = server.url("127.0.0.1", "postgres", "sslmode=disable");
        crate::eventually(
            Duration::from_secs(60),
            "the test Postgres to accept connections",
            || {
                let plain = plain.clone();
                async move {
                    let connection = sqlx::PgConnection::connect(&plain).await.ok()?;
                    let _ = connection.close().await;
                    Some(())
                }
            },
        )
        .await;
        server
    }

    /// `postgres://postgres@{host}:{port}/{database}` plus `parameters` (e.g.
    /// `sslmode=verify-full&sslrootcert=/path/ca.crt`).
    pub fn url(&self, host: &str, database: &str, parameters: &str) -> String {
        let mut url = format!("postgres://postgres@{host}:{}/{database}", self.port);
        if !parameters.is_empty() {
            url.push('?');
            url.push_str(parameters);
        }
        url
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGQUIT: immediate shutdown, the postmaster takes its backends with it.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-QUIT", &pid.to_string()])
                    .status();
            }
            // Wait for it to go before its directory is removed (it removes files of its own
            // as it exits).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if std::thread::panicking() {
            eprintln!("test Postgres data and log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
