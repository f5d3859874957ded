//! Why a request (or one partition or group of it) failed, and THE mapping from
//! those causes to Kafka error codes.
//!
//! Handlers never return an `Error` to the client: they call [`Error::code`] where the
//! partition or group response is built. Connection-level failures (framing, I/O) live in
//! `connection.rs` and never reach this type.
//!
//! When adding a variant: add its row to `code()` and to the table test at the bottom.

use std::time::Duration;

use kafka_protocol::ResponseError;

/// The family of API a failure happened in; it picks the retriable code a client of that
/// family expects (data APIs refresh metadata, group APIs look for the coordinator again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// Produce, Fetch, ListOffsets, Metadata and topic admin.
    Data,
    /// Group coordinator APIs (JoinGroup, OffsetCommit, ...).
    Group,
}

/// Why one request (or one partition of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outcome decided by kelp's own logic (UNKNOWN_TOPIC_OR_PARTITION, ...).
    #[error("kafka outcome {0:?}")]
    Kafka(ResponseError),
    /// A SeaweedFS MQ broker call failed or the broker could not be reached.
    #[error("seaweedfs broker {op}: {code} {message}")]
    Broker { op: &'static str, code: UpstreamCode, message: String },
    /// The broker answered but reported an error of its own in the response body.
    #[error("seaweedfs broker {op} answered error {message}")]
    BrokerReply { op: &'static str, message: String },
    /// A SeaweedFS filer call failed or the filer could not be reached.
    #[error("seaweedfs filer {op} {path}: {code} {message}")]
    Filer { op: &'static str, path: String, code: UpstreamCode, message: String },
    /// No broker is known for the topic (master has none registered, or lookup is empty).
    #[error("no seaweedfs broker available for {op}")]
    NoBroker { op: &'static str },
    /// A call did not finish within its deadline.
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// A stored entry could not be decoded (written by a newer kelp, or damaged).
    #[error("corrupt stored entry at {path}: {why}")]
    Corrupt { path: String, why: String },
}

/// What a failed SeaweedFS call reported, reduced to the cases kelp decides on. `seaweed/`
/// converts gRPC statuses into it where they arrive, so no gRPC type reaches the rest of kelp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCode {
    /// The server could not be reached, or is not ready yet (gRPC UNAVAILABLE).
    Unavailable,
    /// The server does not know what was asked for (gRPC NOT_FOUND).
    NotFound,
    /// The request was malformed, or kelp refused it before sending (gRPC INVALID_ARGUMENT).
    InvalidArgument,
    /// The server refused the request in its current state (gRPC FAILED_PRECONDITION).
    FailedPrecondition,
    /// Any other status, with its description.
    Other(&'static str),
}

impl std::fmt::Display for UpstreamCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamCode::Unavailable => "Unavailable",
            UpstreamCode::NotFound => "NotFound",
            UpstreamCode::InvalidArgument => "InvalidArgument",
            UpstreamCode::FailedPrecondition => "FailedPrecondition",
            UpstreamCode::Other(description) => description,
        })
    }
}

impl Error {
    /// THE mapping from kelp errors to Kafka codes.
    ///
    /// Transient upstream trouble maps to retriable codes; UNKNOWN_SERVER_ERROR is reserved
    /// for "kelp has a bug" and does not appear here.
    pub fn code(&self, kind: ApiKind) -> ResponseError {
        use ResponseError as E;
        match (self, kind) {
            (Error::Kafka(code), _) => *code,
            (Error::Timeout { .. }, ApiKind::Data) => E::RequestTimedOut,
            (
                Error::Broker { .. } | Error::BrokerReply { .. } | Error::NoBroker { .. },
                ApiKind::Data,
            ) => E::NotLeaderOrFollower,
            (Error::Filer { .. }, ApiKind::Data) => E::KafkaStorageError,
            (Error::Corrupt { .. }, ApiKind::Data) => E::KafkaStorageError,
            (Error::Corrupt { .. }, ApiKind::Group) => E::CoordinatorLoadInProgress,
            (_, ApiKind::Group) => E::CoordinatorNotAvailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResponseError as E;

    fn broker() -> Error {
        Error::Broker { op: "publish", code: UpstreamCode::Unavailable, message: "down".into() }
    }
    fn filer() -> Error {
        Error::Filer {
            op: "lookup",
            path: "/kelp/x".into(),
            code: UpstreamCode::Unavailable,
            message: "down".into(),
        }
    }

    #[test]
    fn every_cause_maps_to_the_expected_code_per_api_kind() {
        let table: Vec<(Error, ApiKind, E)> = vec![
            (Error::Kafka(E::UnknownTopicOrPartition), ApiKind::Data, E::UnknownTopicOrPartition),
            (Error::Kafka(E::IllegalGeneration), ApiKind::Group, E::IllegalGeneration),
            (broker(), ApiKind::Data, E::NotLeaderOrFollower),
            (broker(), ApiKind::Group, E::CoordinatorNotAvailable),
            (
                Error::BrokerReply { op: "fetch", message: "x".into() },
                ApiKind::Data,
                E::NotLeaderOrFollower,
            ),
            (Error::NoBroker { op: "lookup" }, ApiKind::Data, E::NotLeaderOrFollower),
            (filer(), ApiKind::Data, E::KafkaStorageError),
            (filer(), ApiKind::Group, E::CoordinatorNotAvailable),
            (
                Error::Timeout { op: "fetch", after: Duration::from_secs(1) },
                ApiKind::Data,
                E::RequestTimedOut,
            ),
            (
                Error::Timeout { op: "lease", after: Duration::from_secs(1) },
                ApiKind::Group,
                E::CoordinatorNotAvailable,
            ),
            (
                Error::Corrupt { path: "/p".into(), why: "x".into() },
                ApiKind::Group,
                E::CoordinatorLoadInProgress,
            ),
        ];
        for (err, kind, want) in table {
            assert_eq!(err.code(kind), want, "{err} as {kind:?}");
        }
    }

    #[test]
    fn upstream_trouble_is_always_retriable() {
        for kind in [ApiKind::Data, ApiKind::Group] {
            for err in [
                broker(),
                filer(),
                Error::NoBroker { op: "x" },
                Error::Timeout { op: "x", after: Duration::ZERO },
            ] {
                assert!(err.code(kind).is_retriable(), "{err} as {kind:?} must be retriable");
            }
        }
    }
}
