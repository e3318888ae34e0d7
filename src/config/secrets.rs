//! Which settings are secrets, and how a config shows them: never (`Debug` redacts them).

use super::KafkaConfig;

/// librdkafka properties whose values are secrets: never printed (`Debug`, errors, logs).
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
    "ssl.truststore.password",
];

/// Whether `key` names a secret (`SECRET_PROPERTIES`, or any key with "password" or
/// "secret" in it).
pub fn is_secret(key: &str) -> bool {
    SECRET_PROPERTIES.contains(&key) || key.contains("password") || key.contains("secret")
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("transaction_timeout", &self.transaction_timeout)
            .field("properties", &properties)
            .finish()
    }
}
