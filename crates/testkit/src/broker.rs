//! A Tansu broker process owned by one test, with durable SQLite storage in a directory of the
//! test's own, so the test can kill it and start it again on the same data.

use std::path::PathBuf;
use std::time::Duration;

/// The Tansu binary: `CARRIER_TANSU_BIN`, else the cache `make test` installs into, else `PATH`.
pub fn tansu_binary() -> PathBuf {
    crate::server_binary("CARRIER_TANSU_BIN", "/var/cache/carrier/tansu/bin/tansu", "tansu")
}

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Broker {
    /// Starts a broker on a free loopback port with storage in a new temporary directory.
    pub async fn start() -> Broker {
        let (dir, port) = crate::scratch_dir_and_port("carrier-broker-");
        let mut broker = Broker {
            port,
            dir,
            child: None,
        };
        broker.launch().await;
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = tokio::process::Command::new(tansu_binary())
            .current_dir(&self.dir)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("tansu.log")).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("tansu starts (set CARRIER_TANSU_BIN or run `make test`)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        crate::eventually(Duration::from_secs(30), "the test broker to listen", || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(address).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// SIGKILL: the broker dies at once, keeping only what its storage had made durable.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the broker again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// Starts the broker again on the same port with empty storage: every topic is gone and
    /// offsets start again at 0, as after deleting the topics (the caller creates them again).
    pub async fn wipe(&mut self) {
        self.kill().await;
        for entry in std::fs::read_dir(&self.dir).expect("broker dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("tansu.db") {
                std::fs::remove_file(entry.path()).expect("broker storage removed");
            }
        }
        self.launch().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("test broker data and log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
