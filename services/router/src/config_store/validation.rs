//! The rules a configuration request's fields must follow, checked before anything is written;
//! each refusal is a [`StoreError::Invalid`] naming the field.

use carrier_config::Environment;
use carrier_proto::config_v1 as pb;
use uuid::Uuid;

use super::{Result, StoreError};

pub(super) fn parse_id(what: &str, id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| StoreError::Invalid(format!("{what} '{id}' is not a valid ID")))
}

pub(super) fn parse_environment(value: &str) -> Result<Environment> {
    value.parse().map_err(StoreError::Invalid)
}

pub(super) fn check_url(url: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(()),
        _ => Err(StoreError::Invalid(format!(
            "url '{url}' is not an absolute http(s) URL"
        ))),
    }
}

pub(super) fn check_timeout(timeout_ms: u32) -> Result<u32> {
    if (100..=60_000).contains(&timeout_ms) {
        Ok(timeout_ms)
    } else {
        Err(StoreError::Invalid(format!(
            "timeout_ms {timeout_ms} is outside 100..=60000"
        )))
    }
}

/// The verification token goes out as a header value with every attempt: a character a header
/// cannot carry would fail every attempt, and the destination's queue would hold forever.
pub(super) fn check_verification_token(token: &str) -> Result<()> {
    if (1..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "verification_token must be 1 to 256 visible ASCII characters (it is sent as a header value)"
                .into(),
        ))
    }
}

/// An address the notifier's SMTP client can take: one `@` between a non-empty local part and a
/// domain, nothing blank or invisible (a full RFC 5321 check is the mail server's; this refuses
/// the typos that would otherwise surface only as a failed alert).
fn is_email_address(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

pub(super) fn check_alert_emails(emails: &[String]) -> Result<()> {
    for email in emails {
        if !is_email_address(email) {
            return Err(StoreError::Invalid(format!(
                "alert_emails: '{email}' is not an e-mail address"
            )));
        }
    }
    Ok(())
}

pub(super) fn check_slack_webhook_url(url: &str) -> Result<()> {
    check_url(url).map_err(|_| {
        StoreError::Invalid(format!(
            "slack_webhook_url '{url}' is not an absolute http(s) URL"
        ))
    })
}

pub(super) fn required(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(StoreError::Invalid(format!("Required field missing - {field}")))
    } else {
        Ok(())
    }
}

/// The columns' values for `thresholds` (none given: both inherit).
pub(super) fn backlog_columns(thresholds: Option<&pb::BacklogAlert>) -> Result<(Option<i32>, Option<i32>)> {
    let column = |name: &str, value: Option<u32>| -> Result<Option<i32>> {
        value
            .map(|value| {
                i32::try_from(value).map_err(|_| {
                    StoreError::Invalid(format!("backlog_alert.{name} must be at most {}", i32::MAX))
                })
            })
            .transpose()
    };
    let thresholds = thresholds.cloned().unwrap_or_default();
    Ok((
        column("after_secs", thresholds.after_secs)?,
        column("depth", thresholds.depth)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of a refusal; anything but [`StoreError::Invalid`] fails the test.
    fn refusal<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Err(StoreError::Invalid(text)) => text,
            other => panic!("expected an invalid-request refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_id_must_be_a_uuid_and_a_refusal_names_the_field_and_the_value() {
        let id = "0190b6f2-6f3e-7c3a-9d5e-0a1b2c3d4e5f";
        let parsed = parse_id("source", id).unwrap();
        assert_eq!(parsed.to_string(), id);
        // Upper case and the form without hyphens are the same ID.
        assert_eq!(parse_id("source", &id.to_uppercase()).unwrap(), parsed);
        assert_eq!(parse_id("source", &id.replace('-', "")).unwrap(), parsed);
        assert_eq!(
            refusal(parse_id("destination", "not-a-uuid")),
            "destination 'not-a-uuid' is not a valid ID"
        );
        let bad_ids = [
            "",
            "0190b6f2-6f3e-7c3a-9d5e-0a1b2c3d4e5",
            "0190b6f2-6f3e-7c3a-9d5e-0a1b2c3d4e5f0",
            "0190b6f2-6f3e-7c3a-9d5e-0a1b2c3d4e5g",
            " 0190b6f2-6f3e-7c3a-9d5e-0a1b2c3d4e5f",
            "42",
        ];
        for bad in bad_ids {
            assert_eq!(
                refusal(parse_id("organization_id", bad)),
                format!("organization_id '{bad}' is not a valid ID")
            );
        }
    }

    #[test]
    fn an_environment_is_one_of_the_three_lowercase_names() {
        assert_eq!(parse_environment("production").unwrap(), Environment::Production);
        assert_eq!(parse_environment("staging").unwrap(), Environment::Staging);
        assert_eq!(
            parse_environment("development").unwrap(),
            Environment::Development
        );
        for unknown in ["prod", "Production", "dev", " staging", ""] {
            let text = refusal(parse_environment(unknown));
            assert_eq!(
                text,
                format!("unknown environment '{unknown}' (expected production, staging or development)")
            );
        }
    }

    #[test]
    fn a_url_must_be_absolute_http_or_https_with_a_host() {
        for url in [
            "http://receiver.example.com",
            "https://receiver.example.com:8443/hooks/carrier?tenant=7",
            "http://127.0.0.1:9000/",
            "https://[2001:db8::1]/hook",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        for url in [
            "",
            "receiver.example.com/hook",
            "/hook",
            "http://",
            "ftp://receiver.example.com/file",
            "mailto:ops@example.com",
            "file:///etc/passwd",
            "ws://receiver.example.com/socket",
        ] {
            assert_eq!(
                refusal(check_url(url)),
                format!("url '{url}' is not an absolute http(s) URL")
            );
        }
    }

    #[test]
    fn a_timeout_is_from_100_ms_to_60_s_inclusive() {
        for timeout_ms in [100, 5_000, 60_000] {
            assert_eq!(check_timeout(timeout_ms).unwrap(), timeout_ms);
        }
        for timeout_ms in [0, 99, 60_001, u32::MAX] {
            assert_eq!(
                refusal(check_timeout(timeout_ms)),
                format!("timeout_ms {timeout_ms} is outside 100..=60000")
            );
        }
    }

    #[test]
    fn a_verification_token_is_1_to_256_visible_ascii_characters() {
        let longest = "t".repeat(256);
        for token in ["x", "tok_AZaz09-._~!#$%&'*+^`|", longest.as_str()] {
            assert!(check_verification_token(token).is_ok(), "{token}");
        }
        let too_long = "t".repeat(257);
        for token in [
            "",
            too_long.as_str(),
            "with space",
            "tab\there",
            "line\nbreak",
            "caf\u{e9}",
            "delete\u{7f}",
        ] {
            assert_eq!(
                refusal(check_verification_token(token)),
                "verification_token must be 1 to 256 visible ASCII characters (it is sent as a header value)",
                "{token:?}"
            );
        }
    }

    #[test]
    fn every_alert_email_needs_a_local_part_and_a_domain_and_the_first_without_is_named() {
        assert!(check_alert_emails(&[]).is_ok());
        let good = [
            "ops@example.com".to_string(),
            "on-call+carrier@hospital.example.org".to_string(),
            "root@localhost".to_string(),
        ];
        assert!(check_alert_emails(&good).is_ok());
        for bad in [
            "@example.com",
            "ops@",
            "ops@@example.com",
            "ops@example@com",
            "ops @example.com",
            "ops@example.com\n",
            "ops@.example.com",
            "ops@example.com.",
        ] {
            assert_eq!(
                refusal(check_alert_emails(&[bad.to_string()])),
                format!("alert_emails: '{bad}' is not an e-mail address"),
                "{bad:?}"
            );
        }
        let mixed = [
            "ops@example.com".to_string(),
            "ops.example.com".to_string(),
            "".to_string(),
        ];
        assert_eq!(
            refusal(check_alert_emails(&mixed)),
            "alert_emails: 'ops.example.com' is not an e-mail address"
        );
        assert_eq!(
            refusal(check_alert_emails(&["".to_string()])),
            "alert_emails: '' is not an e-mail address"
        );
    }

    #[test]
    fn a_slack_webhook_url_follows_the_url_rule_and_its_refusal_names_slack_webhook_url() {
        for url in [
            "https://hooks.slack.com/services/T0123/B0456/g7h8i9",
            // Any absolute http(s) URL: a relay in front of Slack is fine.
            "http://alerts-relay.internal:8080/slack",
        ] {
            assert!(check_slack_webhook_url(url).is_ok(), "{url}");
        }
        for url in [
            "hooks.slack.com/services/T0123/B0456/g7h8i9",
            "ftp://hooks.slack.com/x",
            "",
        ] {
            assert_eq!(
                refusal(check_slack_webhook_url(url)),
                format!("slack_webhook_url '{url}' is not an absolute http(s) URL")
            );
        }
    }

    #[test]
    fn a_required_field_must_have_more_than_whitespace() {
        for value in ["x", " padded ", "Acme Health"] {
            assert!(required("name", value).is_ok(), "{value:?}");
        }
        for value in ["", " ", "\t\n"] {
            assert_eq!(
                refusal(required("name", value)),
                "Required field missing - name",
                "{value:?}"
            );
        }
        assert_eq!(
            refusal(required("event_types[]", "")),
            "Required field missing - event_types[]"
        );
    }

    #[test]
    fn backlog_thresholds_are_stored_as_given_up_to_i32_max_and_missing_ones_inherit() {
        let thresholds = |after_secs: Option<u32>, depth: Option<u32>| pb::BacklogAlert { after_secs, depth };
        assert_eq!(backlog_columns(None).unwrap(), (None, None));
        assert_eq!(
            backlog_columns(Some(&thresholds(None, None))).unwrap(),
            (None, None)
        );
        assert_eq!(
            backlog_columns(Some(&thresholds(Some(300), None))).unwrap(),
            (Some(300), None)
        );
        assert_eq!(
            backlog_columns(Some(&thresholds(None, Some(1_000)))).unwrap(),
            (None, Some(1_000))
        );
        assert_eq!(
            backlog_columns(Some(&thresholds(Some(0), Some(0)))).unwrap(),
            (Some(0), Some(0))
        );
        let max = i32::MAX as u32;
        assert_eq!(
            backlog_columns(Some(&thresholds(Some(max), Some(max)))).unwrap(),
            (Some(i32::MAX), Some(i32::MAX))
        );
        assert_eq!(
            refusal(backlog_columns(Some(&thresholds(Some(max + 1), None)))),
            "backlog_alert.after_secs must be at most 2147483647"
        );
        assert_eq!(
            refusal(backlog_columns(Some(&thresholds(Some(60), Some(u32::MAX))))),
            "backlog_alert.depth must be at most 2147483647"
        );
        // Both out of range: the first is named.
        assert_eq!(
            refusal(backlog_columns(Some(&thresholds(Some(u32::MAX), Some(u32::MAX))))),
            "backlog_alert.after_secs must be at most 2147483647"
        );
    }
}
