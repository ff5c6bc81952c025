//! schemathesis (PyPI, `make test` installs the version `scripts/lib.sh` pins) against ingress's
//! own `GET /openapi.json`: property-based requests to every documented operation, generated
//! from the document, valid and invalid, and every answer checked against the document. A 5xx
//! is a bug (`not_a_server_error`); an answer whose status, `Content-Type`, headers or body the
//! document does not describe is a documentation bug (the `*_conformance` checks).
//!
//! Two runs on one stack: with a source's token (the inbound APIs and its logs; the admin API
//! answers its documented 403), then with the operator token (everything). The test is skipped,
//! saying so, only outside CI when schemathesis is not installed.

use std::path::PathBuf;
use std::time::Duration;

use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

/// The checks of every answer. `status_code_conformance`: the status is documented;
/// `content_type_conformance`: so is its `Content-Type`; `response_headers_conformance`: its
/// documented headers are there and well-formed; `response_schema_conformance`: the body
/// matches the documented schema.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Test cases per operation and phase: enough for the generator's edge cases, bounded so a run
/// takes a minute or two.
const MAX_EXAMPLES: &str = "25";

/// schemathesis's `st`, or `None` (outside CI only) when it is not installed.
fn schemathesis() -> Option<PathBuf> {
    let st = carrier_testkit::server_binary(
        "CARRIER_TEST_SCHEMATHESIS",
        "/var/cache/carrier/schemathesis/bin/st",
        "st",
    );
    let installed = std::process::Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        return Some(st);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis ({}) is not installed; in CI it must run (`make test` installs it)",
        st.display()
    );
    eprintln!(
        "SKIPPED openapi conformance: schemathesis ({}) is not installed \
         (`make test` installs it; or set CARRIER_TEST_SCHEMATHESIS to its `st`)",
        st.display()
    );
    None
}

/// Runs schemathesis with `token` and fails the test with its report when it found anything.
async fn run_schemathesis(st: &PathBuf, ingress_url: &str, who: &str, token: &str) {
    // Hypothesis keeps its example database in the working directory: one of the run's own.
    let dir = std::env::temp_dir().join(carrier_testkit::unique("carrier-schemathesis-"));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let run = tokio::process::Command::new(st)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .args(["run", &format!("{ingress_url}/openapi.json")])
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--seed", "11", "--workers", "2", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis with {who}'s token did not finish within 10 minutes"))
        .expect("schemathesis starts");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "schemathesis with {who}'s token found answers /openapi.json does not describe \
         ({}):\n{report}",
        output.status
    );
    eprintln!("schemathesis with {who}'s token:\n{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_the_public_api_is_the_one_its_openapi_document_describes() {
    let Some(st) = schemathesis() else {
        return;
    };
    let stack = Stack::start(StackOptions {
        // The source's token must outlive both runs.
        token_ttl_secs: 3_600,
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let sender = stack
        .api
        .sender("Conformance Clinic", "production", &receiver.url("st"), "Patient")
        .await;
    run_schemathesis(&st, &stack.ingress_url, "a source", &sender.token).await;
    run_schemathesis(
        &st,
        &stack.ingress_url,
        "the operator",
        carrier_ingress::DEV_ADMIN_TOKEN,
    )
    .await;
    stack.stop().await;
}
