//! Durable consumers on a cluster: each consumer's checkpoint is also kept
//! in a JetStream key-value bucket (`<stream>_consumers`), so a consumer
//! acknowledged on one node resumes after that checkpoint on any other.
//! The bucket's value only ever moves forward: every raise is a
//! compare-and-set against the revision read, retried when another node
//! wrote in between, and never lowers what is there.

use async_nats::jetstream::kv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::ClusterError;

/// What a worker asks of the consumers' bucket.
#[derive(Debug)]
pub(crate) enum ConsumerOp {
    /// The consumer's checkpoint, if the cluster has one.
    Get(String),
    /// Raises the checkpoint to at least this; answers the cluster's.
    Raise(String, u64),
    /// Forgets the consumer.
    Remove(String),
}

fn key(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name)
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("the cluster's consumer checkpoints: {e}; retry"))
}

/// The entry's checkpoint and revision, if it holds one.
async fn read(store: &kv::Store, k: &str) -> Result<Option<(u64, u64)>, ClusterError> {
    let entry = store.entry(k).await.map_err(unavailable)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| {
            Some((
                std::str::from_utf8(&e.value).ok()?.parse().ok()?,
                e.revision,
            ))
        }))
}

/// Runs `op`: the cluster's checkpoint afterwards (`None`: none).
pub(crate) async fn run(store: &kv::Store, op: ConsumerOp) -> Result<Option<u64>, ClusterError> {
    match op {
        ConsumerOp::Get(name) => Ok(read(store, &key(&name)).await?.map(|(cp, _)| cp)),
        ConsumerOp::Remove(name) => {
            store.delete(key(&name)).await.map_err(unavailable)?;
            Ok(None)
        }
        ConsumerOp::Raise(name, seq) => {
            let k = key(&name);
            for _ in 0..16 {
                let value = bytes::Bytes::from(seq.to_string());
                let done = match read(store, &k).await? {
                    Some((cp, _)) if cp >= seq => return Ok(Some(cp)),
                    Some((_, rev)) => store.update(k.as_str(), value, rev).await.is_ok(),
                    None => store.create(k.as_str(), value).await.is_ok(),
                };
                if done {
                    return Ok(Some(seq));
                }
            }
            Err(ClusterError::Unavailable(
                "the consumer's checkpoint changed on other nodes too often; retry".into(),
            ))
        }
    }
}
