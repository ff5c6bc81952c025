//! Incident alerts end to end: a production destination that keeps failing raises one
//! "failing" alert and, once it delivers again, one "recovered" alert, on every channel — a
//! real SMTP server (aiosmtpd), a Slack-compatible webhook receiver and `carrier.notifications`
//! — across notifier restarts and with two notifier replicas; test messages and staging
//! destinations raise none; a failing channel does not hold up the others.

use std::time::Duration;

use carrier_notifier::{SmtpSettings, SmtpTls};
use carrier_testkit::client::{message, Api};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::smtp::SmtpServer;
use carrier_testkit::stack::{Stack, StackOptions};
use carrier_testkit::topic::Record;
use serde_json::{json, Value};

const DOWN: &str = r#"{"Meta":{"Errors":[{"Text":"down for maintenance"}]}}"#;
const UP: &str = r#"{"Meta":{"Errors":[]}}"#;

fn smtp_to(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        tls: SmtpTls::None,
        from: "Carrier <carrier@example.org>".into(),
        ..Default::default()
    }
}

async fn created(api: &Api, path: &str, body: Value) -> Value {
    let (status, response) = api.admin(reqwest::Method::POST, path, Some(&body)).await;
    assert_eq!(status, 201, "POST {path}: {response}");
    response
}

/// A destination named `name`, subscribed to by `source_id` for `data_model`; returns its ID.
async fn destination(
    api: &Api,
    organization_id: &str,
    source_id: &str,
    name: &str,
    url: &str,
    environment: &str,
    data_model: &str,
) -> String {
    let destination = created(
        api,
        "/v1/destinations",
        json!({ "organization_id": organization_id, "name": name, "url": url, "environment": environment, "timeout_ms": 5000 }),
    )
    .await;
    let id = destination["id"].as_str().expect("id").to_string();
    api.subscribe(source_id, &id, data_model).await;
    id
}

/// A production source of the organization with its token, and a production destination
/// `name` at a new receiver answering `status` with `body`, subscribed for `data_model`.
struct Sending {
    source_id: String,
    token: String,
    receiver: Receiver,
    destination_id: String,
}

async fn production_destination(
    api: &Api,
    organization_id: &str,
    name: &str,
    data_model: &str,
    (status, body): (u16, &str),
) -> Sending {
    let source = api.create_source(organization_id, "production").await;
    let token = api.token(&source).await;
    let receiver = Receiver::start().await;
    receiver.respond_with(status, body);
    let path = name.to_lowercase().replace(' ', "-");
    let destination_id = destination(
        api,
        organization_id,
        &source.id,
        name,
        &receiver.url(&path),
        "production",
        data_model,
    )
    .await;
    Sending {
        source_id: source.id,
        token,
        receiver,
        destination_id,
    }
}

async fn send(api: &Api, token: &str, data_model: &str, sequence: usize, test: bool) -> String {
    let mut body = message(data_model, sequence);
    body["Meta"]["Test"] = json!(test);
    let (status, response) = api.send(token, &body).await;
    assert_eq!(status, 200, "{response}");
    response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .expect("log id")
        .to_string()
}

/// Waits until `sql` (a count) reaches at least `expected`.
async fn count_reaches(stack: &Stack, sql: &str, expected: i64, what: &str) {
    carrier_testkit::eventually(Duration::from_secs(90), what, || async move {
        (stack.count(sql).await >= expected).then_some(())
    })
    .await;
}

/// Every record of `carrier.notifications` so far, and their payloads as JSON, in order.
async fn notification_records(stack: &Stack) -> (Vec<Record>, Vec<Value>) {
    let topic = carrier_kafka::Topics::new(&stack.kafka).notifications;
    let records = carrier_testkit::topic::read_all(&stack.kafka, &topic).await;
    let notifications = records
        .iter()
        .map(|record| serde_json::from_slice(&record.payload).expect("JSON notification"))
        .collect();
    (records, notifications)
}

/// The first notification of `kind` on `carrier.notifications` (waits for it).
async fn notification_of_kind(stack: &Stack, kind: &str) -> Value {
    carrier_testkit::eventually(
        Duration::from_secs(60),
        &format!("a {kind} alert on the topic"),
        || async {
            let (_, notifications) = notification_records(stack).await;
            notifications.into_iter().find(|n| n["kind"] == kind)
        },
    )
    .await
}

fn kinds(notifications: &[Value]) -> Vec<&str> {
    notifications
        .iter()
        .map(|notification| notification["kind"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_and_one_recovered_alert_reach_every_channel_across_notifier_restarts() {
    let smtp = SmtpServer::start().await;
    let slack = Receiver::start().await;
    let mut stack = Stack::start(StackOptions {
        smtp: smtp_to(smtp.port),
        ..Default::default()
    })
    .await;
    // Two replicas share the log events (and the outbox).
    stack.start_notifier().await;
    let api = stack.api.clone();

    let organization = created(
        &api,
        "/v1/organizations",
        json!({ "name": "Alert Hospital", "alert_emails": ["oncall@example.org"] }),
    )
    .await;
    let organization_id = organization["id"].as_str().expect("id").to_string();
    // Where alerts go is changed with PATCH (validated by the router, which owns it).
    let path = format!("/v1/organizations/{organization_id}");
    let (status, refused) = api
        .admin(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({ "slack_webhook_url": "not a url" })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let (status, organization) = api
        .admin(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({
                "alert_emails": ["oncall@example.org", "sre@example.org"],
                "slack_webhook_url": slack.url("hooks/alerts"),
            })),
        )
        .await;
    assert_eq!(status, 200, "{organization}");
    assert_eq!(organization["slack_webhook_url"], slack.url("hooks/alerts"));
    assert_eq!(organization["name"], "Alert Hospital");
    let Sending {
        source_id,
        token,
        receiver,
        destination_id: failing,
    } = production_destination(&api, &organization_id, "ADT feed", "Admissions", (500, DOWN)).await;
    // These fail too, but must raise nothing: a staging destination, and test messages at a
    // production destination.
    let other = Receiver::start().await;
    other.respond_with(500, DOWN);
    let staging_source = api.create_source(&organization_id, "staging").await;
    let staging_token = api.token(&staging_source).await;
    let staging = destination(
        &api,
        &organization_id,
        &staging_source.id,
        "Staging feed",
        &other.url("staging"),
        "staging",
        "Staging",
    )
    .await;
    let tested = destination(
        &api,
        &organization_id,
        &source_id,
        "Tested feed",
        &other.url("tests"),
        "production",
        "Tests",
    )
    .await;

    let head = send(&api, &token, "Admissions", 0, false).await;
    for sequence in 0..2 {
        send(&api, &staging_token, "Staging", sequence, false).await;
    }
    for sequence in 0..4 {
        send(&api, &token, "Tests", sequence, true).await;
    }

    // The failing alert goes out on all three channels.
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE a.kind = 'failing' AND d.status = 'sent'",
        3,
        "the failing alert on every channel",
    )
    .await;

    // Mid-incident: restart a notifier while attempts keep failing, and wait until at least two
    // more failed attempts are in the log store.
    let head_attempts = format!("SELECT count(*) FROM attempts WHERE log_id = '{head}'");
    let before = stack.count(&head_attempts).await;
    stack.restart_notifier().await;
    count_reaches(
        &stack,
        &head_attempts,
        before + 2,
        "two more failed attempts after the restart",
    )
    .await;
    // Staging gave up after its retry and test messages were not retried: all final.
    count_reaches(
        &stack,
        &format!("SELECT count(*) FROM logs WHERE destination_id IN ('{staging}', '{tested}') AND status = 'failed'"),
        6,
        "the staging and test logs to fail",
    )
    .await;
    stack.restart_notifier().await;

    receiver.respond_with(200, UP);
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'",
        6,
        "the recovered alert on every channel",
    )
    .await;
    let attempts = stack.count(&head_attempts).await;
    assert!(
        attempts >= before + 3,
        "failed attempts, then the delivery: {attempts}"
    );

    // One incident, two alerts, for the production destination only.
    assert_eq!(stack.count("SELECT count(*) FROM alerts").await, 2);
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM alerts WHERE destination_id = '{failing}'"
            ))
            .await,
        2
    );
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT incident_id) FROM alerts")
            .await,
        1
    );

    // Kafka: exactly one record of each kind, keyed by the destination.
    let (records, notifications) = notification_records(&stack).await;
    assert_eq!(
        kinds(&notifications),
        ["failing", "recovered"],
        "{notifications:#?}"
    );
    for record in &records {
        assert_eq!(String::from_utf8_lossy(&record.key), failing);
    }
    let (failing_alert, recovered_alert) = (&notifications[0], &notifications[1]);
    for notification in &notifications {
        assert_eq!(notification["schema"], "carrier.notification.v1");
        assert_eq!(notification["destination_id"], failing.as_str());
        assert_eq!(notification["destination_name"], "ADT feed");
        assert_eq!(notification["organization_id"], organization_id.as_str());
        assert_eq!(notification["environment"], "production");
        assert_eq!(notification["head_log_id"], head.as_str());
        assert_eq!(notification["last_error"], "destination answered HTTP 500");
        assert_eq!(
            notification["queue_command"],
            format!("carrierctl destinations queue {failing}")
        );
        assert_eq!(notification["incident_id"], failing_alert["incident_id"]);
        assert_eq!(notification["since"], failing_alert["since"]);
    }
    assert_eq!(failing_alert["attempts"], 3);
    assert!(
        recovered_alert["attempts"].as_i64().unwrap_or(0) >= before + 2,
        "every failed attempt of the incident: {recovered_alert}"
    );

    // Slack: exactly two POSTs, a readable text plus the same fields.
    let posts = slack.received_on("hooks/alerts");
    let bodies: Vec<Value> = posts
        .iter()
        .map(|post| serde_json::from_slice(&post.body).expect("JSON body"))
        .collect();
    assert_eq!(kinds(&bodies), ["failing", "recovered"], "{bodies:#?}");
    for (body, notification) in bodies.iter().zip(&notifications) {
        let text = body["text"].as_str().expect("text");
        assert!(
            text.contains("ADT feed") && text.contains("carrierctl destinations queue"),
            "{text}"
        );
        let mut fields = body.clone();
        fields.as_object_mut().expect("object").remove("text");
        assert_eq!(&fields, notification, "Slack carries the notification's fields");
    }
    assert!(bodies[0]["text"].as_str().unwrap_or("").contains("is failing"));
    assert!(bodies[1]["text"].as_str().unwrap_or("").contains("recovered"));

    // E-mail: exactly two messages to the organization's addresses.
    let emails = smtp.messages();
    assert_eq!(emails.len(), 2, "{emails:#?}");
    for (email, notification) in emails.iter().zip(&notifications) {
        let mut recipients = email.rcpt_tos.clone();
        recipients.sort();
        assert_eq!(recipients, ["oncall@example.org", "sre@example.org"]);
        assert_eq!(email.mail_from, "carrier@example.org");
        let kind = notification["kind"].as_str().unwrap_or("");
        let subject = email.header("Subject").unwrap_or_default();
        assert!(subject.starts_with(&format!("[Carrier] {kind}: ")), "{subject}");
        assert!(subject.contains("ADT feed"), "{subject}");
        let body = email.body();
        for part in [
            failing.as_str(),
            head.as_str(),
            "destination answered HTTP 500",
            &format!("carrierctl destinations queue {failing}"),
            notification["id"].as_str().unwrap_or("-"),
        ] {
            assert!(body.contains(part), "{part} in {body}");
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_alert_channel_is_retried_and_does_not_hold_up_the_others() {
    // E-mail goes to a port nobody listens on; the Slack webhook fails at first.
    let (_, closed_port) = carrier_testkit::scratch_dir_and_port("carrier-no-smtp-");
    let slack = Receiver::start().await;
    slack.respond_with(503, "busy");
    let stack = Stack::start(StackOptions {
        smtp: smtp_to(closed_port),
        ..Default::default()
    })
    .await;
    let api = stack.api.clone();
    let organization = created(
        &api,
        "/v1/organizations",
        json!({ "name": "Channels", "alert_emails": ["oncall@example.org"], "slack_webhook_url": slack.url("hook") }),
    )
    .await;
    let organization_id = organization["id"].as_str().expect("id").to_string();
    let Sending {
        token,
        receiver,
        destination_id: failing,
        ..
    } = production_destination(&api, &organization_id, "Lab feed", "Results", (500, DOWN)).await;
    send(&api, &token, "Results", 0, false).await;

    // Kafka gets the failing alert while e-mail and Slack keep failing and retrying (the
    // failing alert's two rows).
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries WHERE channel = 'kafka' AND status = 'sent'",
        1,
        "the failing alert on Kafka",
    )
    .await;
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries WHERE channel IN ('email', 'slack') AND status = 'pending' AND attempts >= 2",
        2,
        "e-mail and Slack retried",
    )
    .await;

    // The destination recovers: Kafka gets the recovered alert; Slack still fails, so it has
    // not sent its recovered alert ahead of the failing one.
    receiver.respond_with(200, UP);
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries WHERE channel = 'kafka' AND status = 'sent'",
        2,
        "the recovered alert on Kafka",
    )
    .await;
    let (_, notifications) = notification_records(&stack).await;
    assert_eq!(kinds(&notifications), ["failing", "recovered"]);
    assert_eq!(notifications[0]["destination_id"], failing.as_str());

    // Slack comes back: both alerts arrive, in order, each once.
    slack.respond_with(200, "ok");
    count_reaches(
        &stack,
        "SELECT count(*) FROM alert_deliveries WHERE channel = 'slack' AND status = 'sent'",
        2,
        "both alerts on Slack",
    )
    .await;
    let delivered: Vec<Value> = slack
        .received_on("hook")
        .iter()
        .filter_map(|post| serde_json::from_slice(&post.body).ok())
        .collect();
    let last_two = &delivered[delivered.len() - 2..];
    assert_eq!(kinds(last_two), ["failing", "recovered"]);
    // Every Slack POST before those two was a failed attempt of the failing alert.
    for earlier in &delivered[..delivered.len() - 2] {
        assert_eq!(earlier["kind"], "failing");
    }
    // E-mail keeps retrying the failing alert; its recovered alert waits behind it.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.channel = 'email' AND d.status = 'pending' AND a.kind = 'failing' AND d.last_error LIKE 'smtp:%'")
            .await,
        1,
        "e-mail keeps retrying"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.channel = 'email' AND d.status = 'pending' AND a.kind = 'recovered' AND d.attempts = 0")
            .await,
        1,
        "the recovered e-mail waits for the failing one"
    );
    stack.stop().await;
}

/// Issue 11 §8: a receiver's own error text can quote patient data. It is stored with the
/// attempt (the log API shows it to the log's organization) but never reaches an alert: the
/// alert on `carrier.notifications` (and so the e-mail and Slack texts built from the same
/// incident) says only what Carrier saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receivers_error_text_stays_with_the_attempt_and_never_reaches_an_alert() {
    const PHI: &str = "Patient Jane Roe MRN 0042 not found";
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api.clone();
    let organization = created(&api, "/v1/organizations", json!({ "name": "PHI Hospital" })).await;
    let organization_id = organization["id"].as_str().expect("id").to_string();
    let errors = format!(r#"{{"Meta":{{"Errors":[{{"Text":"{PHI}"}}]}}}}"#);
    let Sending {
        token,
        receiver: _receiver,
        destination_id: failing,
        ..
    } = production_destination(&api, &organization_id, "Results feed", "Results", (200, &errors)).await;
    let log_id = send(&api, &token, "Results", 1, false).await;
    count_reaches(
        &stack,
        &format!("SELECT count(*) FROM alerts WHERE kind = 'failing' AND destination_id = '{failing}'"),
        1,
        "a failing alert",
    )
    .await;

    let (_, notifications) =
        carrier_testkit::eventually(Duration::from_secs(60), "the alert on Kafka", || async {
            let (records, notifications) = notification_records(&stack).await;
            (!notifications.is_empty()).then_some((records, notifications))
        })
        .await;
    for notification in &notifications {
        let text = notification.to_string();
        assert!(
            !text.contains("Jane Roe"),
            "the receiver's text reached an alert: {text}"
        );
        assert_eq!(
            notification["last_error"], "destination answered HTTP 200 with errors in its body",
            "{text}"
        );
    }
    let (status, log) = api.log(&token, &log_id).await;
    assert_eq!(status, 200, "{log}");
    assert!(
        log.to_string().contains(PHI),
        "the attempt keeps the receiver's text for the log's own organization: {log}"
    );
    let (status, queue) = api
        .admin(
            reqwest::Method::GET,
            &format!("/v1/destinations/{failing}/queue"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{queue}");
    assert!(!queue.to_string().contains("Jane Roe"), "{queue}");
    stack.stop().await;
}

/// Issue 13 §7: a production destination held longer than its own threshold raises one
/// `backlog` alert (topic, the organization's e-mail, the operator's e-mail in Bcc) and, once it
/// delivers again, one `backlog_cleared` alert; the thresholds are set and read through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_held_past_its_threshold_raises_one_backlog_alert_and_its_clearing() {
    let smtp = SmtpServer::start().await;
    let stack = Stack::start(StackOptions {
        smtp: smtp_to(smtp.port),
        alerts: carrier_notifier::AlertSettings {
            poll_interval_ms: 200,
            retry_base_ms: 200,
            retry_cap_ms: 2_000,
            // High enough that no other destination raises one here.
            failing_after_attempts: 1_000,
            backlog_check_interval_ms: 300,
            operator_emails: vec!["carrier-ops@example.org".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let api = stack.api.clone();
    let organization = created(
        &api,
        "/v1/organizations",
        json!({ "name": "Backlog Hospital", "alert_emails": ["oncall@example.org"], "backlog_alert": { "depth": 50 } }),
    )
    .await;
    assert_eq!(
        organization["backlog_alert"],
        json!({ "after_secs": null, "depth": 50 })
    );
    let organization_id = organization["id"].as_str().expect("id").to_string();
    let Sending {
        token,
        receiver,
        destination_id,
        ..
    } = production_destination(&api, &organization_id, "ADT feed", "HL7v2", (500, DOWN)).await;
    // Its own age threshold; the depth comes from the organization.
    let (status, changed) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/destinations/{destination_id}"),
            Some(&json!({ "backlog_alert": { "after_secs": 2 } })),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["backlog_alert"],
        json!({ "after_secs": 2, "depth": null })
    );

    send(&api, &token, "HL7v2", 1, false).await;
    count_reaches(
        &stack,
        "SELECT count(*) FROM alerts WHERE kind = 'backlog'",
        1,
        "the backlog alert",
    )
    .await;
    let backlog = notification_of_kind(&stack, "backlog").await;
    assert_eq!(backlog["destination_id"], destination_id.as_str());
    assert_eq!(backlog["backlog"]["reason"], "age", "{backlog}");
    assert_eq!(backlog["backlog"]["held_reason"], "failing", "{backlog}");
    assert_eq!(backlog["backlog"]["after_secs"], 2, "{backlog}");
    assert_eq!(backlog["backlog"]["max_depth"], 50, "{backlog}");
    assert!(
        backlog["backlog"]["held_for_secs"].as_i64().unwrap_or(0) >= 2,
        "{backlog}"
    );
    let email = carrier_testkit::eventually(Duration::from_secs(60), "the backlog e-mail", || async {
        smtp.messages().into_iter().find(|email| {
            email
                .header("Subject")
                .is_some_and(|subject| subject.contains("[Carrier] backlog"))
        })
    })
    .await;
    assert!(
        email.rcpt_tos.iter().any(|to| to == "oncall@example.org")
            && email.rcpt_tos.iter().any(|to| to == "carrier-ops@example.org"),
        "the organization and the operator: {:?}",
        email.rcpt_tos
    );
    assert!(
        !email.header("To").unwrap_or_default().contains("carrier-ops"),
        "the operator in Bcc only"
    );

    // It delivers again: the backlog clears, once.
    receiver.respond_with(200, UP);
    count_reaches(
        &stack,
        "SELECT count(*) FROM alerts WHERE kind = 'backlog_cleared'",
        1,
        "the backlog_cleared alert",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM alerts WHERE kind IN ('backlog', 'backlog_cleared')")
            .await,
        2,
        "one of each"
    );
    let cleared = notification_of_kind(&stack, "backlog_cleared").await;
    assert_eq!(cleared["incident_id"], backlog["incident_id"]);
}
