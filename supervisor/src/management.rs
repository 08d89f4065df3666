//! RabbitMQ's management HTTP API, used when it answers for the one count
//! AMQP cannot give: messages delivered to consumers and not yet
//! acknowledged, on every box. Its figures are sampled (every 5 s by
//! default), so they are used together with live counts, never alone.
//!
//! The address is `WARREN_MANAGEMENT_URL`, or the broker's host on port
//! 15671 over https when the broker URL is `amqps` (15672 over http for
//! `amqp`, whose login travels in clear anyway); the login is the broker
//! URL's. Credentials go over plain http to an `amqps` broker only when
//! `WARREN_MANAGEMENT_URL` says so.

use std::{collections::HashMap, time::Duration};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use warren::BrokerUrl;

/// A management API client for one vhost.
pub struct Management {
    queues_url: String,
    user: String,
    password: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct QueueRow {
    name: String,
    #[serde(default)]
    messages_unacknowledged: u64,
}

impl Management {
    /// The management API of `broker`.
    pub fn for_broker(broker: &BrokerUrl) -> Management {
        Management::at(broker, std::env::var("WARREN_MANAGEMENT_URL").ok())
    }

    /// The management API at `base`, or where `broker` suggests.
    fn at(broker: &BrokerUrl, base: Option<String>) -> Management {
        let base = base.unwrap_or_else(|| {
            if broker.is_tls() {
                format!("https://{}:15671", broker.host())
            } else {
                format!("http://{}:15672", broker.host())
            }
        });
        let vhost = utf8_percent_encode(broker.vhost(), NON_ALPHANUMERIC);
        Management {
            queues_url: format!(
                "{}/api/queues/{vhost}?columns=name,messages_unacknowledged",
                base.trim_end_matches('/')
            ),
            user: broker.user().to_string(),
            password: broker.password().to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Unacknowledged messages of every queue whose name starts with
    /// `prefix`; `None` when the API does not answer.
    pub async fn unacked(&self, prefix: &str) -> Option<HashMap<String, u64>> {
        let response = self
            .client
            .get(&self.queues_url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let rows: Vec<QueueRow> = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        Some(
            rows.into_iter()
                .filter(|r| r.name.starts_with(prefix))
                .map(|r| (r.name, r.messages_unacknowledged))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_broker_is_asked_over_https_unless_told_otherwise() {
        let tls = BrokerUrl::parse("amqps://u:p@rabbit.internal:5671/prod").unwrap();
        let api = Management::at(&tls, None);
        assert!(
            api.queues_url
                .starts_with("https://rabbit.internal:15671/api/queues/prod?"),
            "{}",
            api.queues_url
        );
        let plain = BrokerUrl::parse("amqp://u:p@rabbit.internal:5672/%2f").unwrap();
        assert!(
            Management::at(&plain, None)
                .queues_url
                .starts_with("http://rabbit.internal:15672/api/queues/%2F?")
        );
        let told = Management::at(&tls, Some("http://127.0.0.1:15672/".into()));
        assert!(
            told.queues_url
                .starts_with("http://127.0.0.1:15672/api/queues/")
        );
    }
}
