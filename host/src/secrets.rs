//! `[activity.env]` values from AWS Secrets Manager and Systems Manager Parameter Store,
//! kept fresh.
//!
//! Keys rotate; copying them into the host's environment (`from_env`) means a restart per
//! rotation. A [`SecretStore`] reads each [`SecretRef`] through the AWS SDK with the
//! config's `[aws]` settings, once at start (a missing, denied or malformed value stops
//! the host, naming the key and the AWS error code) and again every `refresh_seconds`:
//! a failed refresh keeps the last good value. Values never leave the store except into
//! a guest's environment: no `Debug`, log line or error carries one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::aws::{AwsConfig, error_code, sdk_config};

/// The default of `refresh_seconds`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Where a secret is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// `from_secretsmanager`: a secret's name or ARN; `json_key` picks one field of a
    /// JSON secret.
    SecretsManager {
        /// The secret's name or ARN.
        id: String,
        /// The field of a JSON secret, when the value is one field.
        json_key: Option<String>,
    },
    /// `from_ssm`: a parameter's name (a SecureString is decrypted).
    Ssm {
        /// The parameter's name.
        name: String,
    },
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::SecretsManager {
                id,
                json_key: Some(key),
            } => write!(f, "from_secretsmanager {id} (json_key {key})"),
            SecretSource::SecretsManager { id, json_key: None } => {
                write!(f, "from_secretsmanager {id}")
            }
            SecretSource::Ssm { name } => write!(f, "from_ssm {name}"),
        }
    }
}

/// One secret an activity's environment reads, and how often it is read again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// Where it is read.
    pub source: SecretSource,
    /// How often it is read again.
    pub refresh: Duration,
}

/// Why a secret could not be read. The text names the AWS error code, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{secret}: {code}: {message}")]
pub struct SecretError {
    /// Where it was read.
    pub secret: SecretSource,
    /// AWS's error code (`ResourceNotFoundException`, `AccessDeniedException`,
    /// `ParameterNotFound`), or the host's (`SecretNotText`, `JsonKeyNotFound`).
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// The values of every secret the host's activities read, and the clients that read
/// them. Cheap to share (`Arc`); its `Debug` shows no value.
pub struct SecretStore {
    aws: AwsConfig,
    clients: OnceCell<Clients>,
    values: Mutex<HashMap<SecretSource, String>>,
}

struct Clients {
    secretsmanager: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("SecretStore")
            .field("secrets", &values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for SecretStore {
    /// A store with no value, reading with the default AWS settings.
    fn default() -> Self {
        Self::new(AwsConfig::default())
    }
}

impl SecretStore {
    /// A store reading with `aws` (the config's `[aws]`). Nothing is read yet.
    pub fn new(aws: AwsConfig) -> Self {
        Self {
            aws,
            clients: OnceCell::new(),
            values: Mutex::new(HashMap::new()),
        }
    }

    /// The value last read for `source`.
    pub fn get(&self, source: &SecretSource) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned()
    }

    /// Reads `source` now and keeps its value; on error the last good value stays.
    /// True when the value changed.
    ///
    /// # Errors
    /// [`SecretError`] with the AWS error code.
    pub async fn read(&self, source: &SecretSource) -> Result<bool, SecretError> {
        let value = self.fetch(source).await?;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let changed = values.get(source) != Some(&value);
        values.insert(source.clone(), value);
        Ok(changed)
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let shared = sdk_config(&self.aws).await;
                Clients {
                    secretsmanager: aws_sdk_secretsmanager::Client::new(&shared),
                    ssm: aws_sdk_ssm::Client::new(&shared),
                }
            })
            .await
    }

    async fn fetch(&self, source: &SecretSource) -> Result<String, SecretError> {
        let failed = |code: &str, message: String| SecretError {
            secret: source.clone(),
            code: code.to_owned(),
            message,
        };
        let sdk_failed = |(code, message): (String, String)| SecretError {
            secret: source.clone(),
            code,
            message,
        };
        let clients = self.clients().await;
        match source {
            SecretSource::SecretsManager { id, json_key } => {
                let output = clients
                    .secretsmanager
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|err| sdk_failed(error_code(&err)))?;
                let Some(text) = output.secret_string else {
                    return Err(failed(
                        "SecretNotText",
                        "the secret is binary; store it as a string (SecretString)".into(),
                    ));
                };
                match json_key {
                    None => Ok(text),
                    Some(key) => {
                        let json: serde_json::Value =
                            serde_json::from_str(&text).map_err(|_| {
                                failed(
                                    "SecretNotJson",
                                    format!("json_key {key:?} is set, but the secret is not JSON"),
                                )
                            })?;
                        match json.get(key) {
                            Some(serde_json::Value::String(value)) => Ok(value.clone()),
                            Some(other) => Ok(other.to_string()),
                            None => Err(failed(
                                "JsonKeyNotFound",
                                format!("the secret's JSON has no key {key:?}"),
                            )),
                        }
                    }
                }
            }
            SecretSource::Ssm { name } => {
                let output = clients
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|err| sdk_failed(error_code(&err)))?;
                output
                    .parameter
                    .and_then(|parameter| parameter.value)
                    .ok_or_else(|| failed("ParameterNotFound", "the parameter has no value".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_shows_no_value() {
        let store = SecretStore::default();
        let source = SecretSource::Ssm {
            name: "/enrich/db-url".into(),
        };
        store
            .values
            .lock()
            .unwrap()
            .insert(source.clone(), "postgres://secret".into());
        assert_eq!(store.get(&source).as_deref(), Some("postgres://secret"));
        let printed = format!("{store:?}");
        assert!(
            printed.contains("/enrich/db-url") && !printed.contains("postgres://secret"),
            "{printed}"
        );
    }
}
