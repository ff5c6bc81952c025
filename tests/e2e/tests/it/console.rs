//! The console in a real browser (issue 15 §7): Debian's chromium, headless, driven by
//! playwright-core through `tests/console/console.test.mjs`, against a whole stack. This test
//! makes what the browser needs (two organizations, a delivered log, a destination held by a
//! receiver answering 500) and runs the script; the script's steps say what they check. Screenshots of the main pages land in `.run/console/`.
//!
//! Skipped, saying so, only outside CI when Node.js, playwright-core or chromium is missing
//! (`make test` installs them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use carrier_testkit::client::{message, Api};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::manual_retry::log_until;

/// What the browser script needs: node, playwright-core's directory, chromium.
struct Browser {
    node: PathBuf,
    playwright_dir: PathBuf,
    chromium: PathBuf,
}

fn browser() -> Option<Browser> {
    let tools = Browser {
        node: carrier_testkit::server_binary("CARRIER_TEST_NODE", "/usr/bin/node", "node"),
        playwright_dir: carrier_testkit::server_binary(
            "CARRIER_TEST_PLAYWRIGHT_DIR",
            "/var/cache/carrier/playwright",
            "/var/cache/carrier/playwright",
        ),
        chromium: carrier_testkit::server_binary("CARRIER_TEST_CHROMIUM", "/usr/bin/chromium", "chromium"),
    };
    let runs = |program: &Path| {
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    let installed = runs(&tools.node)
        && runs(&tools.chromium)
        && tools.playwright_dir.join("node_modules/playwright-core").is_dir();
    if installed {
        return Some(tools);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the console's browser test needs node ({}), chromium ({}) and playwright-core in {}; \
         in CI they must be there (`make test` installs them)",
        tools.node.display(),
        tools.chromium.display(),
        tools.playwright_dir.display()
    );
    eprintln!("SKIPPED console browser test: node, chromium or playwright-core is missing (`make test` installs them)");
    None
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_signs_in_both_ways_finds_retries_and_holds_and_keeps_organizations_apart() {
    let Some(tools) = browser() else {
        return;
    };
    let stack = Stack::start(StackOptions {
        token_ttl_secs: 3_600,
        ..StackOptions::default()
    })
    .await;
    let api: &Api = &stack.api;
    let receiver = Receiver::start().await;
    let a = api
        .sender("Console Clinic A", "production", &receiver.url("a"), "Results")
        .await;
    let b = api
        .sender("Console Clinic B", "production", &receiver.url("b"), "Results")
        .await;
    // A second destination of A, whose receiver fails: held at its first message.
    let failing = Receiver::start().await;
    failing.respond_with(500, "down for maintenance");
    let held = api
        .subscribed_destination(
            &a.organization,
            &a.source,
            &failing.url("held"),
            "production",
            "Orders",
        )
        .await;
    let held_id = held["id"].as_str().expect("destination id").to_string();
    let (status, response) = api.send(&a.token, &message("Orders", 0)).await;
    assert_eq!(status, 200, "{response}");
    let held_log = response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .expect("a log")
        .to_string();
    carrier_testkit::eventually(
        Duration::from_secs(30),
        "the destination held at its head",
        || async {
            let (_, queue) = api
                .admin(
                    reqwest::Method::GET,
                    &format!("/v1/destinations/{held_id}/queue"),
                    None,
                )
                .await;
            (queue["head_log_id"] == held_log.as_str() && queue["last_error"].is_string()).then_some(())
        },
    )
    .await;

    let (status, response) = api.send(&a.token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .expect("a log")
        .to_string();
    log_until(api, &a.token, &log_id, "delivered", |log| {
        log["status"] == "delivered"
    })
    .await;

    let screenshots = repository().join(".run/console");
    let script = repository().join("tests/console/console.test.mjs");
    let run = tokio::process::Command::new(&tools.node)
        .arg(&script)
        .env("CONSOLE_URL", format!("{}/console/", stack.ingress_url))
        .env("ADMIN_TOKEN", carrier_ingress::DEV_ADMIN_TOKEN)
        .env("SOURCE_A_ID", &a.source.client_id)
        .env("SOURCE_A_SECRET", &a.source.client_secret)
        .env("SOURCE_B_ID", &b.source.client_id)
        .env("SOURCE_B_SECRET", &b.source.client_secret)
        .env("LOG_ID", &log_id)
        .env(
            "DESTINATION_ID",
            a.destination["id"].as_str().expect("destination id"),
        )
        .env("HELD_DESTINATION_ID", &held_id)
        .env("HELD_LOG_ID", &held_log)
        .env("CHROMIUM", &tools.chromium)
        .env("PLAYWRIGHT_DIR", &tools.playwright_dir)
        .env("SCREENSHOT_DIR", &screenshots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser script finishes within 5 minutes")
        .expect("node starts");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the console's browser test failed ({}; screenshots in {}):\n{report}",
        output.status,
        screenshots.display()
    );
    eprintln!("{report}");
    // The browser saw the retries; the receiver confirms them: the first delivery, the single
    // retry and the bulk retry, all of the same message.
    carrier_testkit::eventually(
        Duration::from_secs(30),
        "three deliveries of the message",
        || async { (receiver.received_on("/a").len() >= 3).then_some(()) },
    )
    .await;
    assert_eq!(
        receiver.received_on("/a").len(),
        3,
        "first delivery, retry, bulk retry"
    );
    assert!(
        receiver.received_on("/b").is_empty(),
        "organization B sent nothing"
    );
    stack.stop().await;
}
