//! Redis (`rediss://` with a CA) and Postgres (`sslmode=verify-full` with `sslrootcert`) over
//! TLS, each against a real server of the test's own with TLS on and a certificate for
//! `localhost` from a CA the test made: the connection works with that CA, and is refused when
//! the name dialled is not the certificate's or the CA is another.

use std::time::Duration;

use carrier_ingress::rate_limit::{Decision, RateLimitSettings, RateLimiter};
use carrier_store::sqlx;
use carrier_testkit::pki::Pki;
use carrier_testkit::postgres::PostgresServer;
use carrier_testkit::redis::RedisServer;
use tokio_util::sync::CancellationToken;

/// The error of one connection attempt through `settings`' client (PING after connecting).
async fn redis_refusal(settings: &RateLimitSettings) -> String {
    let client = settings.redis_client().expect("a client");
    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    })
    .await
    .expect("the attempt ends within 10 s");
    match attempt {
        Ok(answer) => panic!("connected ({answer}) with {settings:?}"),
        Err(error) => {
            println!("refused as expected: {error}");
            error.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_counts_with_the_ca_and_refuses_another_name_or_ca() {
    let dir = std::env::temp_dir().join(carrier_testkit::unique("carrier-redis-tls-"));
    let pki = Pki::new(&dir, "redis");
    let server = pki.issue("redis", &["localhost"]);
    let redis = RedisServer::start_tls(&server.cert_path, &server.key_path, &pki.ca_path()).await;
    let settings = RateLimitSettings {
        redis_url: redis.tls_url("localhost"),
        redis_ca_path: Some(pki.ca_path()),
        limit: 2,
        key_prefix: format!("{}:", carrier_testkit::unique("tls-")),
        timeout_ms: 2_000,
        ..RateLimitSettings::default()
    };
    settings.validate().expect("valid settings");

    // The rate limiter counts in the TLS Redis: two requests admitted, the third limited.
    let shutdown = CancellationToken::new();
    let limiter = RateLimiter::start(settings.clone(), shutdown.clone()).expect("a limiter");
    let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let first = carrier_testkit::eventually(Duration::from_secs(30), "the limiter to reach Redis", || {
        let limiter = limiter.clone();
        async move {
            match limiter.check(client).await {
                Decision::Unavailable => None,
                decision => Some(decision),
            }
        }
    })
    .await;
    assert_eq!(first, Decision::Admitted { count: 1 });
    assert_eq!(limiter.check(client).await, Decision::Admitted { count: 2 });
    assert!(
        matches!(limiter.check(client).await, Decision::Limited { .. }),
        "the third request is over the limit"
    );
    shutdown.cancel();

    // The certificate names localhost, not 127.0.0.1.
    let wrong_name = RateLimitSettings {
        redis_url: redis.tls_url("127.0.0.1"),
        ..settings.clone()
    };
    let error = redis_refusal(&wrong_name).await;
    assert!(error.contains("certificate not valid for name"), "{error}");

    // The system's roots instead of the deployment's CA.
    let unknown_ca = RateLimitSettings {
        redis_ca_path: None,
        ..settings.clone()
    };
    let error = redis_refusal(&unknown_ca).await;
    assert!(error.contains("UnknownIssuer"), "{error}");

    // Another CA.
    let other = Pki::new(&dir, "other");
    let other_ca = RateLimitSettings {
        redis_ca_path: Some(other.ca_path()),
        ..settings.clone()
    };
    let error = redis_refusal(&other_ca).await;
    assert!(
        error.contains("UnknownIssuer") || error.contains("BadSignature"),
        "{error}"
    );

    // Plaintext to the TLS port gets no answer.
    let plaintext = RateLimitSettings {
        redis_url: format!("redis://localhost:{}", redis.port),
        redis_ca_path: None,
        ..settings.clone()
    };
    let client = plaintext.redis_client().expect("a client");
    let attempt = tokio::time::timeout(Duration::from_secs(3), async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "plaintext got an answer: {attempt:?}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_connects_with_the_ca_and_refuses_another_name_or_ca() {
    let dir = std::env::temp_dir().join(carrier_testkit::unique("carrier-postgres-tls-"));
    let pki = Pki::new(&dir, "postgres");
    let server = pki.issue("postgres", &["localhost"]);
    let postgres = PostgresServer::start_tls(&server.cert_path, &server.key_path).await;
    let verify_full = |ca: &std::path::Path| format!("sslmode=verify-full&sslrootcert={}", ca.display());

    // Carrier's own connect (creates the database, migrates) over verified TLS.
    let url = postgres.url("localhost", "carrier_tls", &verify_full(&pki.ca_path()));
    let pool = carrier_store::connect_and_migrate(&url, 2, Duration::from_secs(30))
        .await
        .expect("connects with the CA");
    let encrypted: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pg_stat_ssl");
    assert!(encrypted, "the connection is TLS");
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM partition_leases")
        .fetch_one(&pool)
        .await
        .expect("the schema is there");
    assert_eq!(migrated, 0);
    pool.close().await;

    // verify-full checks the name: the certificate names localhost, not 127.0.0.1. The error
    // says so, and does not repeat the URL's password.
    let with_password = |host: &str, parameters: &str| {
        postgres
            .url(host, "carrier_tls", parameters)
            .replacen("postgres@", "postgres:pg-s3cr3t@", 1)
    };
    let wrong_name = with_password("127.0.0.1", &verify_full(&pki.ca_path()));
    let error = carrier_store::connect_and_migrate(&wrong_name, 1, Duration::ZERO)
        .await
        .expect_err("a certificate for another name is refused")
        .to_string();
    println!("refused as expected: {error}");
    assert!(error.contains("certificate not valid for name"), "{error}");
    assert!(!error.contains("pg-s3cr3t"), "{error}");

    // Another CA.
    let other = Pki::new(&dir, "other");
    let other_ca = with_password("localhost", &verify_full(&other.ca_path()));
    let error = carrier_store::connect_and_migrate(&other_ca, 1, Duration::ZERO)
        .await
        .expect_err("a certificate from another CA is refused")
        .to_string();
    println!("refused as expected: {error}");
    assert!(
        error.contains("UnknownIssuer") || error.contains("BadSignature"),
        "{error}"
    );

    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}
