//! Keeping secrets out of logs and error messages: [`Secret`] for a value that is nothing but a
//! secret (a password, a token), [`redact_url`] for a URL that may carry one (a database or
//! Redis URL with a password).

use serde::{Deserialize, Serialize};

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret value (password, token, key passphrase). `Debug` and `Display` print
/// [`REDACTED`]; [`Secret::expose`] gives the value to the code that uses it. Deserializes from
/// and serializes to a plain string, so a `Secret` field reads like a `String` one in TOML and
/// `CARRIER_*` variables.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the client that sends it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(REDACTED)
    }
}

/// Query parameters of a URL whose value is a secret (`password`, `sslpassword`, ...).
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// `url` with its password (`scheme://user:password@host`) and any secret query parameter
/// (`?password=...`, `sslpassword=...`) replaced by [`REDACTED`], for logs and `Debug`. The rest
/// (scheme, user, host, port, database, TLS parameters) is kept: it is what an operator needs
/// to tell which server a message is about. Text that is not a URL is returned as it is,
/// unless it has an `@` (then all of it before the `@` goes).
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The user information ends at the last `@` before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
                    None => format!("{scheme}://{user_info}@{host}{path}"),
                },
                None => head.to_string(),
            }
        }
        None => match head.rsplit_once('@') {
            Some((_, host)) => format!("{REDACTED}@{host}"),
            None => head.to_string(),
        },
    };
    let Some(query) = query else {
        return head;
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) if secret_parameter(name) => format!("{name}={REDACTED}"),
            _ => parameter.to_string(),
        })
        .collect();
    format!("{head}?{}", parameters.join("&"))
}

/// A `Debug` wrapper printing a URL through [`redact_url`] (for manual `Debug` impls).
pub struct RedactedUrl<'a>(pub &'a str);

impl std::fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_url(self.0), formatter)
    }
}

/// A `Debug` wrapper printing an optional secret as `Some(<redacted>)` or `None`.
pub struct RedactedOption<'a, T>(pub &'a Option<T>);

impl<T> std::fmt::Debug for RedactedOption<'_, T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => write!(formatter, "Some({REDACTED})"),
            None => formatter.write_str("None"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_redacted_and_reads_as_a_string() {
        let secret = Secret::from("hunter2-is-the-password");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(secret.expose(), "hunter2-is-the-password");
        let json = serde_json_like(&secret);
        assert_eq!(json, "\"hunter2-is-the-password\"");
    }

    /// Serializes through figment's value type (no serde_json dependency here).
    fn serde_json_like(secret: &Secret) -> String {
        let value = figment::value::Value::serialize(secret).expect("serializes");
        format!("{:?}", value.as_str().expect("a string"))
    }

    #[test]
    fn urls_lose_their_passwords_and_nothing_else() {
        for (url, redacted) in [
            (
                "postgres://carrier:s3cr3t@db.internal:5432/carrier?sslmode=verify-full&sslrootcert=/etc/ca.crt",
                "postgres://carrier:<redacted>@db.internal:5432/carrier?sslmode=verify-full&sslrootcert=/etc/ca.crt",
            ),
            (
                "postgres://carrier@db/carrier?password=s3cr3t&sslpassword=k3y",
                "postgres://carrier@db/carrier?password=<redacted>&sslpassword=<redacted>",
            ),
            ("rediss://:s3cr3t@redis:6380/0", "rediss://:<redacted>@redis:6380/0"),
            ("rediss://default:p@ss@word@redis:6380", "rediss://default:<redacted>@redis:6380"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("postgres://postgres@127.0.0.1:5432/carrier", "postgres://postgres@127.0.0.1:5432/carrier"),
            ("user:s3cr3t@host", "<redacted>@host"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
            assert!(!redact_url(url).contains("s3cr3t"));
        }
    }
}
