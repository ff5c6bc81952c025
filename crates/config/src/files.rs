//! Values read from files: `CARRIER_<X>_FILE=/path` sets what `CARRIER_<X>` would, to the
//! file's content (without its trailing newline), for secrets mounted as files (Kubernetes
//! Secret volumes, Docker secrets) instead of passed in the environment.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use crate::ConfigError;

/// The variable naming the configuration file: it ends in `_FILE` but is not a value's file.
const CONFIG_FILE_VARIABLE: &str = "CARRIER_CONFIG_FILE";

/// The `CARRIER_<X>_FILE` variables, read.
pub(crate) struct FileValues {
    dict: Dict,
}

impl FileValues {
    /// Reads the file of every `CARRIER_<X>_FILE` variable of `variables`. Setting both
    /// `CARRIER_<X>` and `CARRIER_<X>_FILE` is an error naming both; a file that cannot be read
    /// is an error naming the variable and the path (never the content).
    pub(crate) fn read(variables: &[(String, String)]) -> Result<FileValues, ConfigError> {
        let mut dict = Dict::new();
        for (name, path) in variables {
            let Some(target) = file_variable_target(name) else {
                continue;
            };
            if variables
                .iter()
                .any(|(other, _)| other.eq_ignore_ascii_case(&target))
            {
                return Err(ConfigError::Invalid(format!(
                    "both {target} and {name} are set; set one of them"
                )));
            }
            let content = std::fs::read_to_string(path).map_err(|error| {
                ConfigError::Invalid(format!("{name}: cannot read the file {path}: {error}"))
            })?;
            let value = content.strip_suffix('\n').unwrap_or(&content);
            let value = value.strip_suffix('\r').unwrap_or(value);
            // The key as figment's `Env` provider makes it: without the prefix, lowercase,
            // sections split at `__`. A number or boolean is parsed as `Env` parses a
            // variable's; anything else stays text, so a password such as `[x]` or `{y}` is
            // not read as a list or table.
            let key = target["CARRIER_".len()..].to_ascii_lowercase().replace("__", ".");
            let parsed = match value.parse::<Value>().expect("infallible") {
                Value::Array(..) | Value::Dict(..) => Value::from(value.to_string()),
                scalar => scalar,
            };
            let nested = figment::util::nest(&key, parsed)
                .into_dict()
                .expect("a non-empty key gives a dict");
            dict = merge(dict, nested);
        }
        Ok(FileValues { dict })
    }
}

/// `CARRIER_<X>` for `CARRIER_<X>_FILE` (not `CARRIER_CONFIG_FILE`, and not a bare
/// `CARRIER__FILE`).
pub(crate) fn file_variable_target(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if upper == CONFIG_FILE_VARIABLE || !upper.starts_with("CARRIER_") {
        return None;
    }
    let target = upper.strip_suffix("_FILE")?;
    (target.len() > "CARRIER_".len()).then(|| target.to_string())
}

fn merge(mut into: Dict, from: Dict) -> Dict {
    for (key, value) in from {
        let merged = match (into.remove(&key), value) {
            (Some(Value::Dict(tag, existing)), Value::Dict(_, new)) => Value::Dict(tag, merge(existing, new)),
            (_, value) => value,
        };
        into.insert(key, merged);
    }
    into
}

impl Provider for FileValues {
    fn metadata(&self) -> Metadata {
        Metadata::named("`CARRIER_*_FILE` file(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_variables_name_their_targets() {
        assert_eq!(
            file_variable_target("CARRIER_DATABASE_URL_FILE").as_deref(),
            Some("CARRIER_DATABASE_URL")
        );
        assert_eq!(
            file_variable_target("CARRIER_KAFKA__SASL_PASSWORD_FILE").as_deref(),
            Some("CARRIER_KAFKA__SASL_PASSWORD")
        );
        assert_eq!(file_variable_target("CARRIER_CONFIG_FILE"), None);
        assert_eq!(file_variable_target("CARRIER__FILE"), None);
        assert_eq!(file_variable_target("CARRIER_DATABASE_URL"), None);
        assert_eq!(file_variable_target("OTHER_TOKEN_FILE"), None);
    }
}
