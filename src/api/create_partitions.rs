//! CreatePartitions: asks SeaweedFS to grow a topic; SeaweedFS's answer decides whether that
//! is possible (see `seaweed::Seaweed::add_partitions`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::MAX_PARTITIONS;
use crate::ctx::Ctx;
use crate::error::{ApiKind, Error};

pub async fn handle(ctx: &Ctx, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = grow(ctx, &name, t.count, req.validate_only).await;
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => result,
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Every topic of the request failed with `code` and `message` (refused, say), nothing
/// grown.
pub fn error(
    req: &CreatePartitionsRequest,
    code: ResponseError,
    message: &str,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .iter()
        .map(|t| {
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    ctx: &Ctx,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let current = match ctx.topics.partitions(name).await {
        Ok(Some(n)) => n as i32,
        Ok(None) => {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        }
        Err(e) => return Err((e.code(ApiKind::Data), "SeaweedFS did not answer; retry".into())),
    };
    if count <= current || count > MAX_PARTITIONS {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "topic has {current} partitions; the new count must be larger and at most {MAX_PARTITIONS}, the most a SeaweedFS topic can have"
            ),
        ));
    }
    if validate_only {
        return Ok(());
    }
    ctx.seaweed.add_partitions(name, count as u32).await.map_err(|e| match e {
        Error::Kafka(code) => (code, "SeaweedFS cannot add partitions to an existing topic without moving its records between partitions".into()),
        e => (e.code(ApiKind::Data), "SeaweedFS did not answer; retry".into()),
    })
}
