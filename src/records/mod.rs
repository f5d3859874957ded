//! Kafka records ⇄ SeaweedFS MQ messages.
//!
//! A Kafka record has a key, a value (each possibly null), ordered headers (keys may repeat,
//! values may be null) and a timestamp. A SeaweedFS `DataMessage` has only `key`, `value` and
//! `ts_ns`. kelp stores:
//! - `key`: the Kafka key bytes (empty when the key is null; a flag tells them apart);
//! - `ts_ns`: 0, so the broker stamps its own clock (it forces a partition's stored
//!   timestamps to increase, which would distort client-chosen ones); the Kafka timestamp
//!   travels in the envelope;
//! - `value`: an envelope — see [`envelope`] and docs/mapping.md — followed by the raw value
//!   bytes, so the value stays readable by non-Kafka SeaweedFS consumers after a short prefix.

pub mod batch;
pub mod compression;
pub mod envelope;
pub mod legacy;

use bytes::Bytes;

/// One Kafka record as kelp sees it, independent of batch framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// CreateTime in milliseconds since the epoch (-1 when the producer sent none).
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// In the producer's order; keys may repeat.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Why a produced batch was refused. Each maps to one Kafka error code in `api::produce`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch checksum mismatch")]
    Crc,
    #[error("malformed batch: {0}")]
    Malformed(String),
    #[error("batch decompresses beyond {0} bytes")]
    TooLarge(usize),
    #[error("unsupported compression codec {0}")]
    UnsupportedCodec(i16),
    /// Intact (its checksum matches) but inconsistent: what Kafka's log validation refuses
    /// with INVALID_RECORD.
    #[error("invalid batch: {0}")]
    Invalid(String),
}

impl BatchError {
    pub(crate) fn malformed(why: impl Into<String>) -> Self {
        BatchError::Malformed(why.into())
    }
}
