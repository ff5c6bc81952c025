//! The `[rate_limit]` section of ingress: its defaults, its `Debug` without the Redis password,
//! and its validation (the Redis client and the trusted proxies it names).

use std::path::PathBuf;

use carrier_config::ConfigError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::client_ip::parse_trusted_proxy;

/// The `[rate_limit]` section of ingress (`CARRIER_RATE_LIMIT__*`). Its `Debug` shows the Redis
/// URL without its password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Limit requests per client IP. When off, nothing is counted and Redis is not used.
    pub enabled: bool,
    /// Redis holding the windows; every ingress replica must use the same one.
    /// `redis://host:6379`, or `rediss://host:6380` for TLS (the server's certificate must
    /// name `host` and be signed by `redis_ca_path`'s CA, or by one the system trusts). A
    /// password goes in the URL (`rediss://:password@host:6380`, or
    /// `CARRIER_RATE_LIMIT__REDIS_URL_FILE`).
    pub redis_url: String,
    /// PEM file of the CA that signs the Redis server's certificate, with a `rediss://` URL;
    /// unset: the system's CA store.
    pub redis_ca_path: Option<PathBuf>,
    /// Requests admitted per client IP in any rolling window.
    pub limit: u64,
    /// Length of the rolling window.
    pub window_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR networks (`10.0.0.0/8`), as a
    /// list or a comma-separated string (`CARRIER_RATE_LIMIT__TRUSTED_PROXIES=10.0.0.0/8,::1`).
    /// Empty (default): the TCP peer is always the client.
    #[serde(deserialize_with = "carrier_config::list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
    /// Prefix of the Redis keys (`{key_prefix}rl:{client}`: an IPv4 address, or an IPv6 /64
    /// such as `2001:db8:1:2::/64`).
    pub key_prefix: String,
    /// Longest wait for Redis per request; past it the request goes through unlimited.
    pub timeout_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_ca_path: None,
            limit: 7_500,
            window_secs: 300,
            trusted_proxies: Vec::new(),
            key_prefix: "carrier:".into(),
            timeout_ms: 200,
        }
    }
}

impl std::fmt::Debug for RateLimitSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RateLimitSettings")
            .field("enabled", &self.enabled)
            .field("redis_url", &carrier_config::RedactedUrl(&self.redis_url))
            .field("redis_ca_path", &self.redis_ca_path)
            .field("limit", &self.limit)
            .field("window_secs", &self.window_secs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl RateLimitSettings {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.limit == 0 {
            return invalid(
                "rate_limit.limit must be positive (disable with rate_limit.enabled = false)".into(),
            );
        }
        if self.window_secs == 0 {
            return invalid("rate_limit.window_secs must be positive".into());
        }
        if self.timeout_ms == 0 {
            return invalid("rate_limit.timeout_ms must be positive".into());
        }
        self.redis_client()?;
        self.trusted_proxy_networks()?;
        Ok(())
    }

    /// The Redis client of `redis_url`, trusting `redis_ca_path`'s CA for a `rediss://` URL.
    pub fn redis_client(&self) -> Result<redis::Client, ConfigError> {
        let tls = self.redis_url.starts_with("rediss://");
        if let (Some(path), false) = (&self.redis_ca_path, tls) {
            let path = path.display();
            return Err(ConfigError::Invalid(format!(
                "rate_limit.redis_ca_path ({path}) is set but rate_limit.redis_url is not a rediss:// (TLS) URL"
            )));
        }
        let client = match &self.redis_ca_path {
            Some(path) => {
                let ca = std::fs::read(path).map_err(|error| {
                    ConfigError::Invalid(format!(
                        "rate_limit.redis_ca_path: cannot read {}: {error}",
                        path.display()
                    ))
                })?;
                redis::Client::build_with_tls(
                    self.redis_url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca),
                    },
                )
            }
            None => redis::Client::open(self.redis_url.as_str()),
        };
        client.map_err(|error| {
            ConfigError::Invalid(format!("rate_limit.redis_url is not a usable Redis URL: {error}"))
        })
    }

    /// The parsed `trusted_proxies`.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::with_capacity(self.trusted_proxies.len());
        for entry in &self.trusted_proxies {
            let network = parse_trusted_proxy(entry)
                .map_err(|error| ConfigError::Invalid(format!("rate_limit.trusted_proxies: {error}")))?;
            networks.push(network);
        }
        Ok(networks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_their_field() {
        let cases = [
            (
                RateLimitSettings {
                    limit: 0,
                    ..Default::default()
                },
                "rate_limit.limit",
            ),
            (
                RateLimitSettings {
                    window_secs: 0,
                    ..Default::default()
                },
                "rate_limit.window_secs",
            ),
            (
                RateLimitSettings {
                    timeout_ms: 0,
                    ..Default::default()
                },
                "rate_limit.timeout_ms",
            ),
            (
                RateLimitSettings {
                    redis_url: "http://127.0.0.1:6379".into(),
                    ..Default::default()
                },
                "rate_limit.redis_url",
            ),
            (
                RateLimitSettings {
                    trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
                    ..Default::default()
                },
                "rate_limit.trusted_proxies: '10.0.0.0/40'",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(field), "expected {field} in: {error}");
        }
        RateLimitSettings::default().validate().unwrap();
    }

    #[test]
    fn redis_passwords_stay_out_of_logs() {
        assert_eq!(
            carrier_config::redact_url("redis://:secret@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(
            carrier_config::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let settings = RateLimitSettings {
            redis_url: "rediss://:s3cr3t-redis@cache:6380/0".into(),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("rediss://:<redacted>@cache:6380/0"), "{printed}");
    }

    #[test]
    fn a_ca_needs_a_tls_url_and_a_readable_file() {
        let plain = RateLimitSettings {
            redis_ca_path: Some("/etc/carrier/redis-ca.crt".into()),
            ..Default::default()
        };
        let error = plain.validate().unwrap_err().to_string();
        assert!(error.contains("rate_limit.redis_ca_path"), "{error}");
        assert!(error.contains("not a rediss:// (TLS) URL"), "{error}");
        let missing = RateLimitSettings {
            redis_url: "rediss://cache:6380".into(),
            ..plain
        };
        let error = missing.validate().unwrap_err().to_string();
        assert!(
            error.contains("rate_limit.redis_ca_path: cannot read /etc/carrier/redis-ca.crt"),
            "{error}"
        );
    }
}
