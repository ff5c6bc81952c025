//! A real Prometheus on loopback for the monitoring tests: Debian's `prometheus` binary
//! (`make test` unpacks Debian's package, see `carrier_ensure_promtool` in `scripts/lib.sh`;
//! `CARRIER_TEST_PROMETHEUS` names the binary), scraping the given targets every second and
//! evaluating the given rule file every second, with its data in a scratch directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// One scrape job: Prometheus's `job` label and the `host:port` serving `/metrics`.
pub struct Target {
    pub job: &'static str,
    pub address: String,
}

pub struct Prometheus {
    pub url: String,
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` and evaluating `rules` (a rules file), and waits
    /// until it answers.
    pub async fn start(targets: &[Target], rules: &Path) -> Prometheus {
        let binary = crate::server_binary(
            "CARRIER_TEST_PROMETHEUS",
            "/var/cache/carrier/prometheus/usr/bin/prometheus",
            "prometheus",
        );
        let (dir, port) = crate::scratch_dir_and_port("carrier-prometheus-");
        let jobs: String = targets
            .iter()
            .map(|target| {
                format!(
                    "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
                    target.job, target.address
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            rules.display()
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus.yml");
        let child = tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .stderr(std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("prometheus.log"))
                    .expect("log"),
            ))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error} (set CARRIER_TEST_PROMETHEUS; `make test` installs it)",
                    binary.display()
                )
            });
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        };
        crate::eventually(Duration::from_secs(30), "Prometheus to answer", || async {
            let ready = reqwest::get(format!("{}/-/ready", prometheus.url)).await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    /// `GET /api/v1/<path>`'s `data`; `None` when Prometheus did not answer with success.
    pub async fn api(&self, path: &str) -> Option<Value> {
        let response = reqwest::get(format!("{}/api/v1/{path}", self.url)).await.ok()?;
        let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The jobs of the targets whose last scrape succeeded.
    pub async fn healthy_jobs(&self) -> Vec<String> {
        let Some(targets) = self.api("targets").await else {
            return Vec::new();
        };
        let mut jobs: Vec<String> = targets["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|target| target["health"] == "up")
            .filter_map(|target| target["labels"]["job"].as_str().map(str::to_string))
            .collect();
        jobs.sort();
        jobs
    }

    /// The alerts pending or firing now (`/api/v1/alerts`).
    pub async fn alerts(&self) -> Vec<Value> {
        self.api("alerts")
            .await
            .and_then(|data| data["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of an instant query's first sample, if any.
    pub async fn query_value(&self, query: &str) -> Option<f64> {
        let encoded: String = url_encode(query);
        let data = self.api(&format!("query?query={encoded}")).await?;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Prometheus's own log, for a failed test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
