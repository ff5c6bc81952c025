//! The operator's side of every service: probes and metrics on the operator port only (never on
//! ingress's public port), `carrier_build_info`, and `--version` on every binary.

use carrier_testkit::stack::{binary_path, Stack, StackOptions};

#[tokio::test]
async fn ingress_serves_probes_and_metrics_on_its_operator_port_only() {
    let stack = Stack::start(StackOptions::default()).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let public = http
            .get(format!("{}{path}", stack.ingress_url))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status().as_u16(), 404, "{path} is not on the public port");
        let admin = http
            .get(format!("{}{path}", stack.ingress_admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status().as_u16(), 200, "{path} on the operator port");
    }

    let metrics = http
        .get(format!("{}/metrics", stack.ingress_admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Every service of the stack runs in this process: each publishes its own build line.
    for service in ["ingress", "router", "delivery", "notifier"] {
        let line = metrics
            .lines()
            .find(|line| {
                line.starts_with("carrier_build_info{") && line.contains(&format!("service=\"{service}\""))
            })
            .unwrap_or_else(|| panic!("carrier_build_info of {service} in:\n{metrics}"));
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        assert!(line.contains("commit=\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn every_binary_prints_its_version_and_refuses_arguments_it_does_not_take() {
    for binary in [
        "carrier-ingress",
        "carrier-router",
        "carrier-delivery",
        "carrier-notifier",
    ] {
        let version = tokio::process::Command::new(binary_path(binary))
            .arg("--version")
            .output()
            .await
            .unwrap_or_else(|error| panic!("{binary} runs (cargo build --workspace --bins): {error}"));
        let stdout = String::from_utf8_lossy(&version.stdout);
        assert!(version.status.success(), "{binary} --version: {version:?}");
        assert!(
            stdout.starts_with(&format!("{binary} {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{binary} --version printed {stdout:?}"
        );

        let wrong = tokio::process::Command::new(binary_path(binary))
            .arg("--port=80")
            .output()
            .await
            .unwrap();
        assert_eq!(wrong.status.code(), Some(2), "{binary} --port=80: {wrong:?}");
        let stderr = String::from_utf8_lossy(&wrong.stderr);
        assert!(stderr.contains("unexpected arguments"), "{stderr}");
    }
}
