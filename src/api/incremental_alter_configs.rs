//! IncrementalAlterConfigs (KIP-339): SET, DELETE, APPEND and SUBTRACT on a topic's configs,
//! leaving the configs not named as they are. Each resource succeeds or fails alone;
//! `validate_only` checks everything and stores nothing. kelp's broker settings are read-only.
//!
//! Owns: the wire of IncrementalAlterConfigs. Does not own: the steps shared with AlterConfigs
//! (`api::alter_configs`) or the operations themselves (`topic_config::apply`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::{alter_topic, authorization_code, duplicate, not_alterable, repeated};
use super::describe_configs::RESOURCE_TOPIC;
use crate::ctx::Ctx;
use crate::topic_config::{self, Op, Refusal};

pub async fn handle(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let dup = repeated(req.resources.iter().map(|r| (r.resource_type, r.resource_name.as_str())));
    let mut responses = Vec::with_capacity(req.resources.len());
    for (r, dup) in req.resources.iter().zip(dup) {
        let outcome = if dup {
            Err(duplicate())
        } else if r.resource_type != RESOURCE_TOPIC {
            Err(not_alterable(r.resource_type))
        } else {
            match operations(r) {
                Err(refused) => Err(refused),
                Ok(ops) => {
                    let broker_max = ctx.config.max_message_bytes;
                    alter_topic(ctx, &r.resource_name, req.validate_only, |configs| {
                        for (name, op, value) in ops {
                            topic_config::apply(configs, name, op, value, broker_max)?;
                        }
                        Ok(())
                    })
                    .await
                }
            }
        };
        responses.push(response(r.resource_type, &r.resource_name, outcome));
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The resource's operations, decoded: a known operation code, no config named twice, a value
/// for every operation but DELETE (Kafka answers INVALID_REQUEST for each).
/// One decoded operation: config name, operation, value.
type Operation<'a> = (&'a str, Op, Option<&'a str>);

fn operations(r: &AlterConfigsResource) -> Result<Vec<Operation<'_>>, Refusal> {
    let invalid = |message: String| Refusal { code: ResponseError::InvalidRequest, message };
    let mut ops: Vec<Operation<'_>> = Vec::with_capacity(r.configs.len());
    for c in &r.configs {
        let name = c.name.as_str();
        let op = Op::from_code(c.config_operation)
            .ok_or_else(|| invalid(format!("unknown config operation {}", c.config_operation)))?;
        if ops.iter().any(|(n, ..)| *n == name) {
            return Err(invalid(format!("Duplicate config name: {name}")));
        }
        let value = c.value.as_deref();
        if op != Op::Delete && value.is_none() {
            return Err(invalid(format!("Null value not supported for : {name}")));
        }
        ops.push((name, op, value));
    }
    Ok(ops)
}

fn response(
    resource_type: i8,
    name: &StrBytes,
    outcome: Result<(), Refusal>,
) -> AlterConfigsResourceResponse {
    let r = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(name.clone());
    match outcome {
        Ok(()) => r,
        Err(refused) => r
            .with_error_code(refused.code.code())
            .with_error_message(Some(StrBytes::from_string(refused.message))),
    }
}

/// Every resource of the request refused with `message`, as `alter_configs::error` does.
pub fn error(
    req: &IncrementalAlterConfigsRequest,
    message: &str,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let refused =
                Refusal { code: authorization_code(r.resource_type), message: message.into() };
            response(r.resource_type, &r.resource_name, Err(refused))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
