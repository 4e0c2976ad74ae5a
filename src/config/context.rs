//! Parsing the TOML text and the validation context every section uses:
//! errors that name the file and the key, and the checks of addresses,
//! durations, sizes and names that many sections share.
//!
//! Must never: report an error without the file and the key it is about.

use std::net::SocketAddr;
use std::time::Duration;

use super::ranges::{self, Bounds};
use super::{ConfigError, RawConfig};

pub(super) fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|err| toml_error(file, text, "", &err))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        toml_error(file, text, &path, err.inner())
    })
}

pub(super) fn toml_error(file: &str, text: &str, path: &str, err: &toml::de::Error) -> ConfigError {
    let mut message = err.message().trim().to_string();
    if let Some(span) = err.span() {
        let (line, column) = line_column(text, span.start);
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    let key = if path.is_empty() || path == "." {
        "(document)".to_string()
    } else {
        path.to_string()
    };
    ConfigError::Invalid {
        file: file.to_string(),
        key,
        message,
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, column)
}

/// An environment variable a key names that is not set (or is empty).
pub(super) struct Missing {
    pub(super) key: String,
    pub(super) variable: String,
}

/// Validation context: knows the file name so every error can point at it.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
}

impl Ctx<'_> {
    pub(super) fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The value of the environment variable a key names. An unset or empty
    /// variable is pushed onto `missing` (so one error can name them all) and
    /// gives `None`; a name that cannot be a variable is an error now.
    pub(super) fn env_value(
        &self,
        key: &str,
        variable: &str,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<Option<String>, ConfigError> {
        if variable.is_empty() || !variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.invalid(
                key,
                format!("expected the name of an environment variable (letters, digits, '_'), got \"{variable}\""),
            ));
        }
        let value = env(variable).filter(|value| !value.is_empty());
        if value.is_none() {
            missing.push(Missing {
                key: key.to_string(),
                variable: variable.to_string(),
            });
        }
        Ok(value)
    }

    /// One error naming every variable in `missing` (at the first one's key).
    pub(super) fn all_set(&self, missing: &[Missing]) -> Result<(), ConfigError> {
        let Some((first, rest)) = missing.split_first() else {
            return Ok(());
        };
        let mut message = format!(
            "environment variable ${} is not set (the value is read from it, never from the file)",
            first.variable
        );
        if !rest.is_empty() {
            let also: Vec<String> = rest
                .iter()
                .map(|other| format!("${} ({})", other.variable, other.key))
                .collect();
            message.push_str(&format!("; also not set: {}", also.join(", ")));
        }
        Err(self.invalid(&first.key, message))
    }

    pub(super) fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.invalid(
                key,
                format!("expected an IP address and port like \"127.0.0.1:8080\", got \"{value}\""),
            )
        })
    }

    pub(super) fn duration(&self, key: &str, value: &str, bounds: Bounds<Duration>) -> Result<Duration, ConfigError> {
        ranges::duration_within(value, bounds).map_err(|message| self.invalid(key, message))
    }

    pub(super) fn size(&self, key: &str, value: &str, bounds: Bounds<usize>) -> Result<usize, ConfigError> {
        ranges::size_within(value, bounds).map_err(|message| self.invalid(key, message))
    }
}

/// A name cutover uses as a label or an ID kind: letters, digits, '-', '_', '.'.
pub(super) fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// An ID kind (`"tasks"`), as `compare.ids`, `learn_ids`, `translate` and
/// sweeps name it; the error is the message for the key that holds it.
pub(super) fn id_kind(kind: &str) -> Result<(), String> {
    if !kind.is_empty() && kind.chars().all(is_label_char) {
        Ok(())
    } else {
        Err(format!("expected an ID kind like \"tasks\", got \"{kind}\""))
    }
}
