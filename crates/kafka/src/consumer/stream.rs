//! Where a new owner of a partition starts, and in which generation of the partition's stream.
//!
//! A stored offset names a record only in the stream it was read from. When a topic is deleted
//! and created again (or a broker loses its data), the partition's offsets start again at 0 and
//! name other records: reading on from the stored offset would skip the new stream's first
//! records, and state keyed by offsets (delivery's parked tasks) would collide with new ones.
//! Kafka's topic IDs tell streams apart, but librdkafka exposes them only through its C API
//! (unsafe code, which Carrier's crates forbid), so the lease keeps its own evidence instead: an
//! *anchor*, one record of the current stream (its offset and a digest of its timestamp, key and
//! payload), refreshed every [`ANCHOR_REFRESH`]. A new owner concludes the stream was replaced
//! only on positive evidence — the stored offset lies past the partition's end, or another
//! record sits at the anchor's offset — and then starts the lease's next generation from the
//! beginning. A doubt (the anchor unreadable, deleted by retention) keeps the stored offset: a
//! false alarm would send the whole retained topic again. See `design.md`, "Stream generations".

use std::time::Duration;

use carrier_store::leases::{Acquired, Leases};
use rdkafka::Offset;
use sha2::{Digest, Sha256};

use super::fetcher::Fetcher;
use super::metrics::metrics;
use crate::admin::{ReadAt, RecordReader};

/// How often an owner moves its partition's anchor forward, so retention does not delete it
/// before the next owner checks it.
pub(crate) const ANCHOR_REFRESH: Duration = Duration::from_secs(3600);

/// How long a new owner waits for the anchor record before it gives up checking.
const ANCHOR_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What identifies a record within a partition beyond its offset.
pub(crate) fn digest(timestamp: Option<i64>, key: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(timestamp.unwrap_or(-1).to_be_bytes());
    match key {
        Some(key) => {
            hash.update((key.len() as u64).to_be_bytes());
            hash.update(key);
        }
        None => hash.update(u64::MAX.to_be_bytes()),
    }
    hash.update(payload);
    hash.finalize()[..16].to_vec()
}

/// Where a new owner starts reading and in which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    pub offset: Offset,
    pub generation: i64,
}

pub(crate) type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Decides where the owner of `acquired` starts (blocking broker calls run on blocking threads).
pub(crate) async fn resolve(
    fetcher: &std::sync::Arc<Fetcher>,
    reader: &RecordReader,
    leases: &Leases,
    partition: i32,
    acquired: &Acquired,
) -> Result<Start, StartError> {
    let topic = fetcher.options.topic.clone();
    let same = |offset| Start {
        offset,
        generation: acquired.generation,
    };
    let Some(committed) = acquired.committed_offset else {
        if acquired.generation > 0 {
            return Ok(same(Offset::Beginning));
        }
        // No offset stored with the lease yet: where the Kafka group left off (a group that ran
        // before leases), or the beginning for a new group.
        let fetcher = fetcher.clone();
        let offset = tokio::task::spawn_blocking(move || fetcher.kafka_committed(partition)).await??;
        return Ok(same(match offset {
            Offset::Offset(_) => offset,
            _ => Offset::Beginning,
        }));
    };
    let (low, high) = {
        let fetcher = fetcher.clone();
        tokio::task::spawn_blocking(move || fetcher.watermarks(partition)).await??
    };
    let replaced = if committed > high {
        Some(format!(
            "its stored offset {committed} lies past the partition's end ({high})"
        ))
    } else {
        match &acquired.anchor {
            Some(anchor) if anchor.offset >= low && anchor.offset < high => {
                let read = reader
                    .read_with(&topic, partition, anchor.offset, ANCHOR_READ_TIMEOUT, |message| {
                        record_digest(message)
                    })
                    .await?;
                match read {
                    ReadAt::Found(digest) if digest == anchor.digest => None,
                    ReadAt::Found(_) => Some(format!(
                        "the record at offset {} is not the one read there before",
                        anchor.offset
                    )),
                    ReadAt::Absent | ReadAt::Unknown => {
                        tracing::warn!(%topic, partition, anchor = anchor.offset, "could not read the partition's anchor record; assuming its stream is the one its stored offset belongs to");
                        None
                    }
                }
            }
            _ => None,
        }
    };
    if let Some(why) = replaced {
        let generation = leases
            .start_generation(partition, acquired.epoch)
            .await?
            .ok_or("the lease was lost while starting")?;
        metrics().generations.with_label_values(&[&topic]).inc();
        tracing::warn!(
            %topic,
            partition,
            committed,
            generation,
            why,
            "the partition's stream was replaced (the topic deleted and created again?): reading it from its beginning as a new generation; state kept from the previous one comes first"
        );
        return Ok(Start {
            offset: Offset::Beginning,
            generation,
        });
    }
    if committed < low {
        tracing::error!(
            %topic,
            partition,
            committed,
            earliest = low,
            lost = low - committed,
            "records were deleted (retention) before they were processed; starting at the partition's earliest record"
        );
        return Ok(same(Offset::Offset(low)));
    }
    Ok(same(Offset::Offset(committed)))
}

/// The digest of a fetched record.
pub(crate) fn record_digest(message: &impl rdkafka::message::Message) -> Vec<u8> {
    digest(
        message.timestamp().to_millis(),
        message.key(),
        message.payload().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_tells_records_apart_by_timestamp_key_and_payload() {
        let one = digest(Some(1), Some(b"k"), b"v");
        assert_eq!(one, digest(Some(1), Some(b"k"), b"v"));
        assert_ne!(one, digest(Some(2), Some(b"k"), b"v"));
        assert_ne!(one, digest(Some(1), None, b"v"));
        assert_ne!(one, digest(Some(1), Some(b""), b"v"));
        assert_ne!(one, digest(Some(1), Some(b"k"), b"w"));
        assert_ne!(digest(None, Some(b"kv"), b""), digest(None, Some(b"k"), b"v"));
    }
}
