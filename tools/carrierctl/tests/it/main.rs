//! `carrierctl` against a running stack (real broker, Postgres, HTTP receivers on loopback):
//! each test runs the built binary as an operator would and checks its `--json` output, its
//! exit status and its stderr.
//! `make test` starts the infrastructure; `CARRIER_TEST_BROKERS` points at the broker.

mod admin;
mod destinations;
mod errors;
mod logs;
mod notifications;
mod send;

use std::process::Stdio;
use std::time::Duration;

use carrier_testkit::client::SourceCredentials;
use carrier_testkit::receiver::Received;
use carrier_testkit::stack::Stack;
use serde_json::Value;

/// The variables `carrierctl` reads: cleared for every run, so the test's own environment
/// cannot leak into it.
const CTL_VARIABLES: [&str; 8] = [
    "CARRIER_URL",
    "CARRIER_TOKEN",
    "CARRIER_CLIENT_ID",
    "CARRIER_CLIENT_SECRET",
    "CARRIER_KAFKA__BROKERS",
    "CARRIER_KAFKA__TOPIC_PREFIX",
    "CARRIER_DATABASE_URL",
    "CARRIER_CONFIG_FILE",
];

/// One finished run of `carrierctl`.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as the one JSON document `--json` promises, after checking the run succeeded.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "carrierctl failed: {self:?}");
        self.document()
    }

    /// stdout as one JSON document, whatever the exit status.
    pub fn document(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not one JSON document ({error}): {self:?}"))
    }
}

/// A `carrierctl` command with the given `CARRIER_*` variables set (and no others).
pub fn command(env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"));
    for variable in CTL_VARIABLES {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied()).args(args).kill_on_drop(true);
    command
}

/// Runs `carrierctl args` with the given variables to the end.
pub async fn carrierctl(env: &[(&str, &str)], args: &[&str]) -> Run {
    let output = command(env, args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("carrierctl runs (cargo builds it for this test)");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!("carrierctl {}: {run:?}", args.join(" "));
    run
}

/// The variables for `carrierctl` to act as `source` at the stack's ingress with its client
/// credentials (it requests, and renews, its own tokens).
pub fn client_credentials<'a>(
    stack: &'a Stack,
    source: &'a SourceCredentials,
) -> [(&'static str, &'a str); 3] {
    [
        ("CARRIER_URL", stack.ingress_url.as_str()),
        ("CARRIER_CLIENT_ID", source.client_id.as_str()),
        ("CARRIER_CLIENT_SECRET", source.client_secret.as_str()),
    ]
}

/// Runs `carrierctl --json args` against the stack's ingress as the operator.
pub async fn operator(stack: &Stack, args: &[&str]) -> Run {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    carrierctl(
        &[
            ("CARRIER_URL", &stack.ingress_url),
            ("CARRIER_TOKEN", &stack.api.admin_token),
        ],
        &all,
    )
    .await
}

/// Polls `carrierctl --json args` (as the operator) until it succeeds with a document that
/// satisfies `check`.
pub async fn operator_until(
    stack: &Stack,
    args: &[&str],
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    carrier_testkit::eventually(Duration::from_secs(30), what, || {
        let check = &check;
        async move {
            let run = operator(stack, args).await;
            if run.code != 0 {
                return None;
            }
            let document = run.document();
            check(&document).then_some(document)
        }
    })
    .await
}

/// The `Sequence` numbers of requests, in arrival order.
pub fn sequences(requests: &[Received]) -> Vec<u64> {
    requests
        .iter()
        .filter_map(|request| {
            let body: Value = serde_json::from_slice(&request.body).ok()?;
            body["Sequence"].as_u64()
        })
        .collect()
}
