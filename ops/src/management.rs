//! RabbitMQ's management HTTP API, used when it answers for the one count
//! AMQP cannot give: messages delivered to consumers and not yet
//! acknowledged, on every box. Its figures are sampled (every 5 s by
//! default), so they are used together with live counts, never alone.
//!
//! The address is `WARREN_MANAGEMENT_URL` (several separated by commas for
//! a cluster), or each broker node's host on port 15671 over https when its
//! URL is `amqps` (15672 over http for `amqp`, whose login travels in clear
//! anyway); the login is the first broker URL's. Credentials go over plain
//! http to an `amqps` broker only when `WARREN_MANAGEMENT_URL` says so. The
//! nodes are asked in turn from the one that answered last.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use warren::{BrokerUrl, BrokerUrls};

/// A management API client for one vhost.
pub struct Management {
    /// The queue list's URL on each node.
    queues_urls: Vec<String>,
    /// The node that answered last.
    answered: AtomicUsize,
    user: String,
    password: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct QueueRow {
    name: String,
    #[serde(flatten)]
    figures: Figures,
}

/// A queue's figures as the management API last sampled them (every 5 s
/// by default: they can be older than the broker's live counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Figures {
    /// Delivered and not yet acknowledged.
    #[serde(default, rename = "messages_unacknowledged")]
    pub unacked: u64,
    /// Ready for delivery.
    #[serde(default, rename = "messages_ready")]
    pub ready: u64,
}

impl Management {
    /// The management API of the broker's nodes.
    pub fn for_broker(broker: &BrokerUrls) -> Management {
        Management::at(broker, std::env::var("WARREN_MANAGEMENT_URL").ok())
    }

    /// The management API at `bases` (separated by commas), or where the
    /// broker's URLs suggest.
    fn at(broker: &BrokerUrls, bases: Option<String>) -> Management {
        let suggested = |url: &BrokerUrl| {
            if url.is_tls() {
                format!("https://{}:15671", url.host())
            } else {
                format!("http://{}:15672", url.host())
            }
        };
        let mut bases: Vec<String> = match bases {
            Some(bases) => bases.split(',').map(|b| b.trim().to_string()).collect(),
            None => broker.all().iter().map(suggested).collect(),
        };
        // Nodes on one host share its API: ask it once.
        let mut seen = std::collections::HashSet::new();
        bases.retain(|base| seen.insert(base.clone()));
        let first = broker.first();
        let vhost = utf8_percent_encode(first.vhost(), NON_ALPHANUMERIC);
        Management {
            queues_urls: bases
                .iter()
                .map(|base| {
                    format!(
                        "{}/api/queues/{vhost}?columns=name,messages_unacknowledged,messages_ready",
                        base.trim_end_matches('/')
                    )
                })
                .collect(),
            answered: AtomicUsize::new(0),
            user: first.user().to_string(),
            password: first.password().to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// The figures of every queue whose name starts with `prefix`; `None`
    /// when the API does not answer.
    pub async fn figures(&self, prefix: &str) -> Option<HashMap<String, Figures>> {
        let first = self.answered.load(Ordering::Relaxed);
        for offset in 0..self.queues_urls.len() {
            let index = (first + offset) % self.queues_urls.len();
            if let Some(rows) = self.queues(&self.queues_urls[index]).await {
                self.answered.store(index, Ordering::Relaxed);
                return Some(
                    rows.into_iter()
                        .filter(|r| r.name.starts_with(prefix))
                        .map(|r| (r.name, r.figures))
                        .collect(),
                );
            }
        }
        None
    }

    /// The queue rows one node's API gives; `None` if it does not answer.
    async fn queues(&self, url: &str) -> Option<Vec<QueueRow>> {
        let response = self
            .client
            .get(url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        serde_json::from_slice(&response.bytes().await.ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_broker_is_asked_over_https_unless_told_otherwise() {
        let tls = BrokerUrls::parse("amqps://u:p@rabbit.internal:5671/prod").unwrap();
        let api = Management::at(&tls, None);
        assert!(
            api.queues_urls[0].starts_with("https://rabbit.internal:15671/api/queues/prod?"),
            "{:?}",
            api.queues_urls
        );
        let plain = BrokerUrls::parse("amqp://u:p@rabbit.internal:5672/%2f").unwrap();
        assert!(
            Management::at(&plain, None).queues_urls[0]
                .starts_with("http://rabbit.internal:15672/api/queues/%2F?")
        );
        let told = Management::at(&tls, Some("http://127.0.0.1:15672/".into()));
        assert!(told.queues_urls[0].starts_with("http://127.0.0.1:15672/api/queues/"));
    }

    /// Against the broker on 127.0.0.1:5672 and its management API: the
    /// figures carry the ready count (which drain compares with the live
    /// count to tell a stale answer).
    #[tokio::test]
    async fn the_figures_carry_ready_messages() {
        use lapin::{
            BasicProperties,
            options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
            types::FieldTable,
        };
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let connection = lapin::Connection::connect(url, Default::default())
            .await
            .expect("the broker on 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("mgmt{}.ready", uuid::Uuid::now_v7().simple());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..3 {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        let api = Management::at(&BrokerUrls::parse(url).unwrap(), None);
        let prefix = queue.trim_end_matches("ready").to_string();
        // The API samples every 5 s: wait for a sample with the messages.
        let mut seen = None;
        for _ in 0..60 {
            seen = api
                .figures(&prefix)
                .await
                .and_then(|f| f.get(&queue).copied());
            if seen.is_some_and(|f| f.ready > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(seen.map(|f| f.ready), Some(3), "{seen:?}");
    }

    #[test]
    fn every_node_of_a_cluster_is_asked() {
        let cluster = BrokerUrls::parse(
            "amqp://u:p@r1:5672/%2f,amqp://u:p@r2:5672/%2f,amqp://u:p@r1:5673/%2f",
        )
        .unwrap();
        let api = Management::at(&cluster, None);
        let hosts: Vec<&str> = api
            .queues_urls
            .iter()
            .map(|u| u.split("/api").next().unwrap())
            .collect();
        assert_eq!(hosts, ["http://r1:15672", "http://r2:15672"]);
        let told = Management::at(&cluster, Some("http://a:1, http://b:2".into()));
        assert_eq!(told.queues_urls.len(), 2);
        assert!(told.queues_urls[1].starts_with("http://b:2/api/queues/%2F?"));
    }
}
