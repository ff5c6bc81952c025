//! What `carrierctl` says when it cannot do its job: nothing listening, no token.

use crate::carrierctl;

#[tokio::test]
async fn an_unreachable_ingress_exits_3_with_a_clear_message() {
    // Nothing listens on a port that was just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = carrierctl(&[], &["--url", &url, "--token", "t", "logs", "get", "x"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&format!("cannot reach Carrier at {url}/"))
            && run.stderr.contains("is ingress running?"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test]
async fn a_command_without_a_token_says_where_to_give_one() {
    let run = carrierctl(
        &[("CARRIER_URL", "http://127.0.0.1:1")],
        &["destinations", "queue", "d"],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("no token: pass --token or set CARRIER_TOKEN"),
        "{run:?}"
    );
}
