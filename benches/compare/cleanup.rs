//! What the benchmark leaves on the broker, removed at its end: the bare
//! client's queues and exchanges, and those Celery and Dramatiq declare
//! (warren's pipelines are torn down by each run).

use lapin::{Connection, ConnectionProperties};

/// Queues the bare client and the peers declare.
fn queues() -> Vec<String> {
    let mut queues = Vec::new();
    for kind in ["quorum", "classic"] {
        for stage in ["expand", "work", "sink"] {
            queues.push(format!("bench_bare_{kind}.{stage}"));
        }
    }
    for stage in ["expand", "work", "sink"] {
        queues.push(format!("c.{stage}"));
        for suffix in ["", ".DQ", ".XQ"] {
            queues.push(format!("d_{stage}{suffix}"));
        }
    }
    queues
}

/// Exchanges the bare client and the peers declare.
fn exchanges() -> Vec<String> {
    let mut exchanges = vec![
        "bench_bare_quorum".to_string(),
        "bench_bare_classic".to_string(),
        "celeryev".to_string(),
        "celery.pidbox".to_string(),
        "reply.celery.pidbox".to_string(),
    ];
    for stage in ["expand", "work", "sink"] {
        exchanges.push(format!("c.{stage}"));
    }
    exchanges
}

/// Deletes them (those that do not exist are skipped).
pub async fn run(url: &str) {
    let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    for queue in queues() {
        // A failed delete closes its channel: one channel each.
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
    for exchange in exchanges() {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleaned up".into()).await;
}
