//! Every status of SPEC §2, for both inbound APIs, with its precise text and the body shape of
//! the API the request used: `{"Meta": {"Errors": [{"Text"}]}}` for the Data Model API, an
//! `OperationOutcome` for the FHIR API. One table per API; the failures a single stack cannot
//! produce come from extra ingress replicas of the same stack configured to fail (a closed
//! router or broker port, a 1 KiB producer queue, a one-request rate limit, one-second tokens).
//! 500 has no way to be caused from outside; its rendering is unit-tested in ingress
//! (`error::tests`).

use std::time::Duration;

use base64::Engine;
use carrier_testkit::client::{Answer, Api, Framing, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{json, Value};

const LIMIT: usize = 10 * 1024 * 1024;
const TIMEOUT_TEXT: &str = "The durable write did not complete in time; the message was not accepted";
const OVERLOADED_TEXT: &str =
    "Carrier is overloaded (producer queue full); retry after the Retry-After delay";
const REJECTED_TEXT: &str = "The queue rejected the write; the message was not accepted";
const NO_ROUTER_TEXT: &str = "Carrier could not reach its routing service; retry with backoff";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    DataModel,
    Fhir,
}

enum Text {
    Is(String),
    StartsWith(String),
}

/// One row of a table: a request and the answer it must get.
struct Case {
    what: &'static str,
    api: Api,
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    text: Text,
}

impl Case {
    fn post(
        what: &'static str,
        api: &Api,
        path: &str,
        token: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Case {
        Case {
            what,
            api: api.clone(),
            method: Method::POST,
            path: path.to_string(),
            token: token.map(str::to_string),
            headers: Vec::new(),
            body: body.into(),
            status: 0,
            text: Text::Is(String::new()),
        }
    }

    fn method(mut self, method: Method) -> Case {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_string()));
        self
    }

    fn is(mut self, status: u16, text: impl Into<String>) -> Case {
        self.status = status;
        self.text = Text::Is(text.into());
        self
    }

    fn starts_with(mut self, status: u16, text: impl Into<String>) -> Case {
        self.status = status;
        self.text = Text::StartsWith(text.into());
        self
    }
}

/// The FHIR issue code of each status (the table of ingress `error::fhir_issue`).
fn fhir_code(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        401 => "security",
        403 => "forbidden",
        404 => "not-found",
        405 => "not-supported",
        413 => "too-costly",
        429 => "throttled",
        500 => "exception",
        502 | 503 => "transient",
        504 => "timeout",
        _ => "?",
    }
}

/// What is wrong with an error body of `shape` that should say `text`, if anything.
fn shape_problems(shape: Shape, status: u16, body: &Value, text: &Text) -> Vec<String> {
    let mut problems = Vec::new();
    let actual = match shape {
        Shape::DataModel => {
            let errors = body["Meta"]["Errors"].as_array();
            if errors.map(Vec::len) != Some(1) {
                problems.push(format!("expected one Meta.Errors entry: {body}"));
            }
            body["Meta"]["Errors"][0]["Text"].as_str().unwrap_or("")
        }
        Shape::Fhir => {
            if body["resourceType"] != "OperationOutcome" {
                problems.push(format!("expected an OperationOutcome: {body}"));
            }
            let issue = &body["issue"][0];
            if body["issue"].as_array().map(Vec::len) != Some(1) {
                problems.push(format!("expected one issue: {body}"));
            }
            let severity = if status == 500 { "fatal" } else { "error" };
            if issue["severity"] != severity {
                problems.push(format!("severity should be {severity}: {body}"));
            }
            if issue["code"] != fhir_code(status) {
                problems.push(format!("code should be {}: {body}", fhir_code(status)));
            }
            if !issue["diagnostics"]
                .as_str()
                .is_some_and(|diagnostics| diagnostics.starts_with(&format!("HTTP {status}")))
            {
                problems.push(format!("diagnostics should name HTTP {status}: {body}"));
            }
            issue["details"]["text"].as_str().unwrap_or("")
        }
    };
    match text {
        Text::Is(expected) if actual != expected => {
            problems.push(format!("text {actual:?}, expected {expected:?}"))
        }
        Text::StartsWith(expected) if !actual.starts_with(expected.as_str()) => {
            problems.push(format!("text {actual:?}, expected it to start with {expected:?}"))
        }
        _ => {}
    }
    problems
}

/// Runs every case; fails once, listing every row that did not get its answer.
async fn run_table(shape: Shape, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer: Answer = case
            .api
            .request(
                case.method.clone(),
                &case.path,
                case.token.as_deref(),
                &headers,
                Some(case.body.clone()),
            )
            .await;
        let mut problems = Vec::new();
        if answer.status != case.status {
            problems.push(format!("status {}, expected {}", answer.status, case.status));
        }
        problems.extend(shape_problems(shape, case.status, &answer.body, &case.text));
        let content_type = match shape {
            Shape::DataModel => "application/json",
            Shape::Fhir => "application/fhir+json",
        };
        if answer.header("content-type") != content_type {
            problems.push(format!(
                "content-type {:?}, expected {content_type}",
                answer.header("content-type")
            ));
        }
        if case.status == 401 && answer.header("www-authenticate") != "Bearer" {
            problems.push("401 without WWW-Authenticate: Bearer".into());
        }
        if matches!(case.status, 429 | 503) && answer.header("retry-after").parse::<u64>().unwrap_or(0) < 1 {
            problems.push(format!(
                "{} without a Retry-After of at least 1 s ({:?})",
                case.status,
                answer.header("retry-after")
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}",
                case.what,
                case.method,
                case.path,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// 413 with and without a declared length, refused before the body is complete.
async fn check_oversized_bodies(shape: Shape, api: &Api, path: &str, token: &str) {
    let declared = (LIMIT + 1) as u64;
    // Declares one byte over the limit and sends nothing: the answer comes without waiting.
    let answer = api
        .post_streamed(path, token, Framing::ContentLength(declared), 0)
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let text = Text::Is(format!(
        "Request body of {declared} bytes exceeds the limit of {LIMIT} bytes"
    ));
    let problems = shape_problems(shape, 413, &answer.body, &text);
    assert!(problems.is_empty(), "declared length: {problems:?}");

    // Chunked, no length: 64 MiB offered, refused once the limit is passed, as it streams.
    let offered = 64 * 1024 * 1024;
    let answer = api.post_streamed(path, token, Framing::Chunked, offered).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let text = Text::Is(format!("Request body exceeds the limit of {LIMIT} bytes"));
    let problems = shape_problems(shape, 413, &answer.body, &text);
    assert!(problems.is_empty(), "chunked: {problems:?}");
    assert!(
        answer.sent_bytes < offered / 2,
        "the refusal came while the body was still streaming ({} of {offered} bytes written)",
        answer.sent_bytes
    );
}

/// One stack, a source subscribed for `data_models`, and the replicas and tokens the tables
/// need.
struct Fixture {
    stack: Stack,
    _receiver: Receiver,
    token: String,
    expired_token: String,
    forged_token: String,
    disabled_token: String,
    unsubscribed_destination: String,
    /// A destination of another organization: answered exactly like one that does not exist.
    foreign_destination: String,
    limited: Api,
    no_router: Api,
    no_broker: Api,
    tiny_queue: Api,
    no_topic: Api,
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Fixture {
    async fn start(data_models: &[&str]) -> Fixture {
        let mut stack = Stack::start(StackOptions::default()).await;
        let receiver = Receiver::start().await;
        let api = stack.api.clone();
        let organization = api.create_organization("Status Clinic").await;
        let source = api.create_source(&organization, "production").await;
        let destination = api
            .create_destination(&organization, &receiver.url("d"), "production")
            .await;
        for data_model in data_models {
            api.subscribe(&source.id, destination["id"].as_str().unwrap(), data_model)
                .await;
        }
        let unsubscribed = api
            .create_destination(&organization, &receiver.url("u"), "production")
            .await;
        let token = api.token(&source).await;
        let other_organization = api.create_organization("Other Clinic").await;
        let foreign = api
            .create_destination(&other_organization, &receiver.url("f"), "production")
            .await;

        let disabled = api.create_source(&organization, "production").await;
        api.subscribe(&disabled.id, destination["id"].as_str().unwrap(), data_models[0])
            .await;
        let disabled_token = api.token(&disabled).await;
        let (status, answer) = api
            .admin(
                Method::PATCH,
                &format!("/v1/sources/{}", disabled.id),
                Some(&json!({ "enabled": false })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");

        // The same payload with a later expiry, under the original signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{organization}:production:4102444800", source.id));
        parts[2] = payload;
        let forged_token = parts.join(".");

        let short_lived = stack
            .start_extra_ingress_with(|config| config.token_ttl_secs = 1)
            .await;
        let expired_token = api.at(&short_lived).token(&source).await;

        let limited_url = stack
            .start_extra_ingress_with(|config| {
                config.rate_limit.limit = 1;
                config.rate_limit.key_prefix = format!("{}:", carrier_testkit::unique("status-"));
                // The limiter fails open when Redis is slower than this: not on a busy test box.
                config.rate_limit.timeout_ms = 5_000;
            })
            .await;
        let limited = api.at(&limited_url);
        // Use up the window's one request (once the replica's Redis connection is up).
        carrier_testkit::eventually(Duration::from_secs(30), "the limited replica to refuse", || {
            let limited = limited.clone();
            async move {
                let answer = limited
                    .request(Method::GET, "/v1/logs/none", None, &[], None)
                    .await;
                (answer.status == 429).then_some(())
            }
        })
        .await;

        let router_port = closed_port().await;
        let no_router = api.at(&stack
            .start_extra_ingress_with(|config| config.router_url = format!("http://127.0.0.1:{router_port}"))
            .await);
        let broker_port = closed_port().await;
        let no_broker = api.at(&stack
            .start_extra_ingress_with(|config| {
                config.kafka.brokers = format!("127.0.0.1:{broker_port}");
                config.produce_timeout_ms = 1_000;
            })
            .await);
        let tiny_queue = api.at(&stack
            .start_extra_ingress_with(|config| config.kafka.producer_queue_kbytes = 1)
            .await);
        // The broker refuses the write: its topic does not exist (and is not auto-created).
        let no_topic = api.at(&stack
            .start_extra_ingress_with(|config| {
                config.kafka.topic_prefix = format!("{}.", carrier_testkit::unique("missing"));
                config.produce_timeout_ms = 10_000;
            })
            .await);

        // Tokens of the short-lived replica expire one second after issue (whole seconds).
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        Fixture {
            stack,
            _receiver: receiver,
            token,
            expired_token,
            forged_token,
            disabled_token,
            unsubscribed_destination: unsubscribed["id"].as_str().unwrap().to_string(),
            foreign_destination: foreign["id"].as_str().unwrap().to_string(),
            limited,
            no_router,
            no_broker,
            tiny_queue,
            no_topic,
        }
    }
}

fn json_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("json")
}

/// Over 1 KiB, so it does not fit the tiny replica's 1 KiB producer queue.
fn padding() -> String {
    "x".repeat(2_048)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_model_api_answers_every_status_with_its_text() {
    let fixture = Fixture::start(&["Results"]).await;
    let api = &fixture.stack.api;
    let token = Some(fixture.token.as_str());
    let path = "/endpoint";
    let valid = || json!({ "Meta": { "DataModel": "Results", "EventType": "New", "Test": false }, "Padding": padding() });
    let with_meta = |meta: Value| json_bytes(json!({ "Meta": meta, "Patient": {} }));
    let unknown_destination = "0190c0de-0000-7000-8000-000000000000";
    let cases = vec![
        Case::post("bad JSON", api, path, token, r#"{"Meta": {"#)
            .starts_with(400, "Request body is not valid JSON: "),
        Case::post("body not an object", api, path, token, "[1, 2, 3]")
            .is(400, "Request body must be a JSON object"),
        Case::post("empty body", api, path, token, "").is(400, "Request body is empty"),
        Case::post("no Meta", api, path, token, json_bytes(json!({ "Patient": {} })))
            .is(400, "Required field missing - Meta"),
        Case::post("Meta not an object", api, path, token, json_bytes(json!({ "Meta": "Results" })))
            .is(400, "Meta must be an object"),
        Case::post("no Meta.DataModel", api, path, token, with_meta(json!({ "EventType": "New" })))
            .is(400, "Required field missing - Meta.DataModel"),
        Case::post("empty Meta.DataModel", api, path, token, with_meta(json!({ "DataModel": " ", "EventType": "New" })))
            .is(400, "Required field missing - Meta.DataModel"),
        Case::post("Meta.DataModel not a string", api, path, token, with_meta(json!({ "DataModel": 7, "EventType": "New" })))
            .is(400, "Meta.DataModel must be a string"),
        Case::post("no Meta.EventType", api, path, token, with_meta(json!({ "DataModel": "Results" })))
            .is(400, "Required field missing - Meta.EventType"),
        Case::post("Meta.Test not a boolean", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Test": "true" })))
            .is(400, "Meta.Test must be a boolean"),
        Case::post("Meta.Destinations not an array", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": { "ID": "x" } })))
            .is(400, "Meta.Destinations must be an array"),
        Case::post("Meta.Destinations entry without ID", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": [ { "Name": "x" } ] })))
            .is(400, "Required field missing - Meta.Destinations[0].ID"),
        Case::post("no token", api, path, None, json_bytes(valid()))
            .is(401, "Missing Authorization header (expected 'Bearer <token>')"),
        Case::post("not a Bearer token", api, path, None, json_bytes(valid()))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .is(401, "Authorization header must be 'Bearer <token>'"),
        Case::post("malformed token", api, path, Some("not-a-token"), json_bytes(valid()))
            .is(401, "Malformed access token (expected a token from /oauth/token)"),
        Case::post("bad signature (a forged later expiry)", api, path, Some(fixture.forged_token.as_str()), json_bytes(valid()))
            .is(401, "Invalid access token: its signature does not verify"),
        Case::post("expired token", api, path, Some(fixture.expired_token.as_str()), json_bytes(valid()))
            .is(401, "Access token expired; request a new one at /oauth/token"),
        Case::post("destination not subscribed", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": [ { "ID": fixture.unsubscribed_destination } ] })))
            .is(403, format!("Destination {} is not subscribed to Results New from this source", fixture.unsubscribed_destination)),
        Case::post("disabled source", api, path, Some(fixture.disabled_token.as_str()), json_bytes(valid()))
            .is(403, carrier_ingress::SOURCE_DISABLED),
        Case::post("unknown route", api, "/endpoints", token, json_bytes(valid()))
            .is(404, "Unknown route POST /endpoints"),
        Case::post("data model without subscription", api, path, token, with_meta(json!({ "DataModel": "Billing", "EventType": "New" })))
            .is(404, "No destination is subscribed to data model Billing from this source"),
        Case::post("unknown destination", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": [ { "ID": unknown_destination } ] })))
            .is(404, format!("Destination {unknown_destination} does not exist")),
        Case::post("another organization's destination", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": [ { "ID": fixture.foreign_destination } ] })))
            .is(404, format!("Destination {} does not exist", fixture.foreign_destination)),
        Case::post("destination ID that is no ID", api, path, token, with_meta(json!({ "DataModel": "Results", "EventType": "New", "Destinations": [ { "ID": "d-1" } ] })))
            .is(404, "Destination d-1 does not exist"),
        Case::post("GET /endpoint", api, path, token, "")
            .method(Method::GET)
            .is(405, "Method GET is not allowed on /endpoint"),
        Case::post("over the rate limit", &fixture.limited, path, token, json_bytes(valid()))
            .starts_with(429, "Rate limit exceeded: more than 1 requests from 127.0.0.1 in 300 seconds; retry after "),
        Case::post("router unreachable", &fixture.no_router, path, token, json_bytes(valid()))
            .is(502, NO_ROUTER_TEXT),
        Case::post("producer queue full", &fixture.tiny_queue, path, token, json_bytes(valid()))
            .is(503, OVERLOADED_TEXT),
        Case::post("broker unreachable", &fixture.no_broker, path, token, json_bytes(valid()))
            .is(504, TIMEOUT_TEXT),
        Case::post("broker rejects the write", &fixture.no_topic, path, token, json_bytes(valid()))
            .is(502, REJECTED_TEXT),
    ];
    run_table(Shape::DataModel, cases).await;
    check_oversized_bodies(Shape::DataModel, api, path, &fixture.token).await;

    let (status, body) = api.send_raw(&fixture.token, json_bytes(valid())).await;
    assert_eq!(status, 200, "the main replica accepts a valid message: {body}");
    assert_eq!(body["Meta"]["Errors"], json!([]));
    fixture.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fhir_api_answers_every_status_with_an_operation_outcome() {
    let fixture = Fixture::start(&["Patient", "Bundle"]).await;
    let api = &fixture.stack.api;
    let token = Some(fixture.token.as_str());
    let path = "/fhir/R4/Patient";
    let patient =
        || json_bytes(json!({ "resourceType": "Patient", "id": "p1", "text": { "div": padding() } }));
    let cases = vec![
        Case::post("bad JSON", api, path, token, r#"{"resourceType": "Patient""#)
            .starts_with(400, "Request body is not valid JSON: "),
        Case::post("body not an object", api, path, token, r#"["Patient"]"#)
            .is(400, "Request body must be a JSON object"),
        Case::post(
            "no resourceType",
            api,
            path,
            token,
            json_bytes(json!({ "id": "p1" })),
        )
        .is(400, "Required field missing - resourceType"),
        Case::post(
            "resourceType not a string",
            api,
            path,
            token,
            json_bytes(json!({ "resourceType": ["Patient"] })),
        )
        .is(400, "resourceType must be a string"),
        Case::post(
            "resourceType not the path's",
            api,
            path,
            token,
            json_bytes(json!({ "resourceType": "Observation" })),
        )
        .is(
            400,
            "resourceType Observation does not match the resource type of the path /fhir/R4/Patient",
        ),
        Case::post(
            "a Bundle posted as a Patient",
            api,
            path,
            token,
            json_bytes(json!({ "resourceType": "Bundle", "type": "message" })),
        )
        .is(
            400,
            "resourceType Bundle does not match the resource type of the path /fhir/R4/Patient",
        ),
        Case::post(
            "Bundle without type",
            api,
            "/fhir/R4/Bundle",
            token,
            json_bytes(json!({ "resourceType": "Bundle", "entry": [] })),
        )
        .is(400, "Required field missing - Bundle.type"),
        Case::post("Carrier-Test not a boolean", api, path, token, patient())
            .header("carrier-test", "yes")
            .is(400, "Carrier-Test header must be 'true' or 'false'"),
        Case::post("no token", api, path, None, patient())
            .is(401, "Missing Authorization header (expected 'Bearer <token>')"),
        Case::post("malformed token", api, path, Some("not-a-token"), patient())
            .is(401, "Malformed access token (expected a token from /oauth/token)"),
        Case::post(
            "bad signature (a forged later expiry)",
            api,
            path,
            Some(fixture.forged_token.as_str()),
            patient(),
        )
        .is(401, "Invalid access token: its signature does not verify"),
        Case::post(
            "expired token",
            api,
            path,
            Some(fixture.expired_token.as_str()),
            patient(),
        )
        .is(401, "Access token expired; request a new one at /oauth/token"),
        Case::post(
            "disabled source",
            api,
            path,
            Some(fixture.disabled_token.as_str()),
            patient(),
        )
        .is(403, carrier_ingress::SOURCE_DISABLED),
        Case::post(
            "unknown resource type",
            api,
            "/fhir/R4/Patients",
            token,
            patient(),
        )
        .is(404, "Unknown FHIR R4 resource type Patients in /fhir/R4/Patients"),
        Case::post("unknown FHIR version", api, "/fhir/R5/Patient", token, patient())
            .is(404, "Unknown route POST /fhir/R5/Patient"),
        Case::post(
            "resource type without subscription",
            api,
            "/fhir/R4/Observation",
            token,
            json_bytes(json!({ "resourceType": "Observation" })),
        )
        .is(
            404,
            "No destination is subscribed to data model Observation from this source",
        ),
        Case::post("GET on a resource type", api, path, token, "")
            .method(Method::GET)
            .is(405, "Method GET is not allowed on /fhir/R4/Patient"),
        Case::post("over the rate limit", &fixture.limited, path, token, patient()).starts_with(
            429,
            "Rate limit exceeded: more than 1 requests from 127.0.0.1 in 300 seconds; retry after ",
        ),
        Case::post("router unreachable", &fixture.no_router, path, token, patient()).is(502, NO_ROUTER_TEXT),
        Case::post("producer queue full", &fixture.tiny_queue, path, token, patient())
            .is(503, OVERLOADED_TEXT),
        Case::post("broker unreachable", &fixture.no_broker, path, token, patient()).is(504, TIMEOUT_TEXT),
        Case::post(
            "broker rejects the write",
            &fixture.no_topic,
            path,
            token,
            patient(),
        )
        .is(502, REJECTED_TEXT),
    ];
    run_table(Shape::Fhir, cases).await;
    check_oversized_bodies(Shape::Fhir, api, path, &fixture.token).await;

    let answer = api
        .fhir(
            &fixture.token,
            "Patient",
            &json!({ "resourceType": "Patient" }),
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({ "resourceType": "OperationOutcome", "issue": [] })
    );
    fixture.stack.stop().await;
}

/// A body just under the 10 MiB limit arrives whole and byte-identical. Over `inline_body_bytes`
/// (1 MiB) a body is stored in Postgres and Kafka carries a reference, so this works on any
/// broker, Tansu included (which cannot hand out records of 5 MiB or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_just_under_10_mib_is_accepted_and_delivered_byte_identical() {
    deliver_large_body(LIMIT - 4 * 1024).await;
}

/// Sends a Data Model API message of `size` bytes and checks it arrives whole and unchanged.
/// `CARRIER_TEST_BODY_BYTES` overrides the size (to find what a broker carries).
async fn deliver_large_body(size: usize) {
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let Sender { token, .. } = api
        .sender("Imaging Center", "production", &receiver.url("big"), "Imaging")
        .await;

    let size = std::env::var("CARRIER_TEST_BODY_BYTES")
        .ok()
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(size);
    let head = br#"{"Meta":{"DataModel":"Imaging","EventType":"New","Test":false},"Padding":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(size - tail.len(), b'a');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), size);

    let (status, response) = api.send_raw(&token, body.clone()).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .expect("log")
        .to_string();
    carrier_testkit::eventually(Duration::from_secs(120), "the large delivery", || {
        let count = receiver.received_on("big").len();
        async move { (count >= 1).then_some(()) }
    })
    .await;
    let received = receiver.received_on("big");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.len(), size, "the whole body arrives");
    assert!(received[0].body.as_ref() == body.as_slice(), "byte-identical");
    assert_eq!(received[0].header("carrier-log-id"), log_id);
    assert_eq!(
        stack.count("SELECT count(*) FROM message_bodies").await,
        1,
        "the body went through Postgres, not Kafka"
    );
    stack.stop().await;
}
