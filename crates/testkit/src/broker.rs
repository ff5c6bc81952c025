//! A Tansu broker process owned by one test, with durable SQLite storage in a directory of the
//! test's own, so the test can kill it and start it again on the same data; optionally
//! requiring SASL (SCRAM users), and behind TLS ([`TlsBroker`]).

use std::path::PathBuf;
use std::time::Duration;

use carrier_config::{KafkaSettings, SecurityProtocol};

use crate::pki::Pki;
use crate::stunnel::Stunnel;

/// The Tansu binary: `CARRIER_TANSU_BIN`, else the cache `make test` installs into, else `PATH`.
pub fn tansu_binary() -> PathBuf {
    crate::server_binary("CARRIER_TANSU_BIN", "/var/cache/carrier/tansu/bin/tansu", "tansu")
}

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    options: BrokerOptions,
    child: Option<tokio::process::Child>,
}

/// A SASL/SCRAM mechanism of Tansu's `user create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    Sha256,
    Sha512,
}

/// How a test's broker runs.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// The `host:port` the broker tells clients to connect to (`--advertised-listener-url`),
    /// e.g. a TLS listener in front of it ([`crate::stunnel::Stunnel`]); by default its own
    /// loopback address.
    pub advertised: Option<String>,
    /// SCRAM users (name, password, mechanism): when any is given the broker requires SASL
    /// (`--authentication`; Tansu 0.6 checks SCRAM passwords against these, and accepts PLAIN
    /// with any password).
    pub scram_users: Vec<(String, String, Scram)>,
}

impl Broker {
    /// Starts a broker on a free loopback port with storage in a new temporary directory.
    pub async fn start() -> Broker {
        Self::start_with(BrokerOptions::default()).await
    }

    /// Starts a broker as `options` say. With SCRAM users, it first runs without
    /// authentication to create them (Tansu stores them with its data), then again with it.
    pub async fn start_with(options: BrokerOptions) -> Broker {
        let (dir, port) = crate::scratch_dir_and_port("carrier-broker-");
        let mut broker = Broker {
            port,
            dir,
            options: BrokerOptions {
                scram_users: Vec::new(),
                ..options.clone()
            },
            child: None,
        };
        broker.launch().await;
        if !options.scram_users.is_empty() {
            for (name, password, mechanism) in &options.scram_users {
                broker.create_scram_user(name, password, *mechanism).await;
            }
            broker.options = options;
            broker.restart().await;
        }
        broker
    }

    /// `tansu user create` on this broker (which must not require authentication yet).
    async fn create_scram_user(&self, name: &str, password: &str, mechanism: Scram) {
        let mechanism = match mechanism {
            Scram::Sha256 => "scram256",
            Scram::Sha512 => "scram512",
        };
        let output = tokio::process::Command::new(tansu_binary())
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", mechanism, name, password])
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("tansu user create runs");
        assert!(
            output.status.success(),
            "tansu user create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = match &self.options.advertised {
            Some(address) => format!("tcp://{address}"),
            None => url.clone(),
        };
        let mut command = tokio::process::Command::new(tansu_binary());
        if !self.options.scram_users.is_empty() {
            command.arg("broker").arg("--authentication");
        } else {
            command.arg("broker");
        }
        let child = command
            .current_dir(&self.dir)
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&advertised)
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

/// A broker of the test's own reachable only through TLS, at `localhost:<tls.port>` (the
/// address it advertises, so every connection after bootstrap is TLS too): Tansu 0.6 has no
/// working TLS listener, so [`Stunnel`] stands in front of it with a certificate for
/// `localhost` signed by `pki`'s CA.
pub struct TlsBroker {
    pub pki: Pki,
    pub broker: Broker,
    pub tls: Stunnel,
    dir: PathBuf,
}

impl TlsBroker {
    /// With `scram_users` the broker requires SASL ([`BrokerOptions::scram_users`]); with
    /// `mutual` the TLS listener requires a client certificate signed by the CA.
    pub async fn start(scram_users: Vec<(String, String, Scram)>, mutual: bool) -> TlsBroker {
        let dir = std::env::temp_dir().join(crate::unique("carrier-kafka-tls-"));
        let pki = Pki::new(&dir, "kafka");
        let server = pki.issue("broker", &["localhost"]);
        let reserved = Stunnel::reserve();
        let broker = Broker::start_with(BrokerOptions {
            advertised: Some(format!("localhost:{}", reserved.1)),
            scram_users,
        })
        .await;
        let client_ca = mutual.then(|| pki.ca_path());
        let tls = Stunnel::start_reserved(
            reserved,
            &server.cert_path,
            &server.key_path,
            client_ca.as_deref(),
            broker.port,
        )
        .await;
        TlsBroker {
            pki,
            broker,
            tls,
            dir,
        }
    }

    /// `localhost:<TLS port>`.
    pub fn brokers(&self) -> String {
        format!("localhost:{}", self.tls.port)
    }

    /// TLS with the CA, checking the broker's name (the default).
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers(),
            security_protocol: SecurityProtocol::Ssl,
            ssl_ca_location: Some(self.pki.ca_path()),
            ..KafkaSettings::default()
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
