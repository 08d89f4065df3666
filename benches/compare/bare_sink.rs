//! The bare client's sink: the limit a warren sink is measured against.
//! Same guarantees: each id written once, data then ids fsynced, each
//! batch acknowledged (`multiple`) once on disk.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::StreamExt;
use lapin::{
    Channel, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};

/// The sink: batches of lines written by a thread of their own (data,
/// fsync, ids, fsync), each batch acked (`multiple`) once on disk; the next
/// batch gathers while the previous one is synced.
pub async fn sink(
    consume: Channel,
    from: String,
    path: std::path::PathBuf,
    prefetch: u16,
    written: Arc<AtomicU64>,
) {
    let mut consumer = consumer(&consume, &from, prefetch).await;
    let (to_writer, mut batches) =
        tokio::sync::mpsc::unbounded_channel::<Vec<(u64, String, Vec<u8>)>>();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    std::thread::spawn(move || {
        let mut data = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut ids: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.with_extension("ids"))
            .unwrap();
        let mut seen = HashSet::new();
        let fsync = std::env::var_os("BARE_NO_FSYNC").is_none();
        while let Some(mut batch) = batches.blocking_recv() {
            while let Ok(more) = batches.try_recv() {
                batch.extend(more);
            }
            let (mut lines, mut id_lines) = (Vec::new(), Vec::new());
            for (_, id, body) in &batch {
                if seen.insert(id.clone()) {
                    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
                    serde_json::to_writer(&mut lines, &value).unwrap();
                    lines.push(b'\n');
                    id_lines.extend_from_slice(id.as_bytes());
                    id_lines.push(b'\n');
                }
            }
            data.write_all(&lines).unwrap();
            if fsync {
                data.sync_data().unwrap();
            }
            ids.write_all(&id_lines).unwrap();
            if fsync {
                ids.sync_data().unwrap();
            }
            let last = batch.iter().map(|(tag, _, _)| *tag).max().unwrap();
            let _ = done_tx.send((last, batch.len() as u64));
        }
    });
    loop {
        tokio::select! {
            Some(Ok(delivery)) = consumer.next() => {
                let id = delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                let _ = to_writer.send(vec![(delivery.delivery_tag, id, delivery.data)]);
            }
            Some((last, count)) = done.recv() => {
                consume.basic_ack(last, BasicAckOptions { multiple: true }).await.unwrap();
                written.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

/// A consumer of `queue` on `channel` with `prefetch` unacknowledged
/// deliveries at most (the bare client's stages and its sink).
pub async fn consumer(channel: &Channel, queue: &str, prefetch: u16) -> Consumer {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}
