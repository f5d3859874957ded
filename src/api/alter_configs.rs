//! AlterConfigs: replace a topic's whole set of configs (every config not named goes back to
//! its default). Each resource succeeds or fails alone; `validate_only` checks everything and
//! stores nothing. kelp's broker settings are read-only (they come from its environment).
//!
//! Owns: the wire of AlterConfigs and the steps every topic alteration shares ([`alter_topic`],
//! also used by IncrementalAlterConfigs). Does not own: which configs are valid
//! (`topic_config`) or where they are stored (`topic_config::store`).

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::topic_config::{self, Configs, Refusal};

/// What a resource of a type kelp does not alter gets: broker settings come from kelp's
/// environment, as a Kafka broker's static configs do (Kafka answers INVALID_REQUEST for
/// configs it cannot update dynamically).
pub(super) fn not_alterable(resource_type: i8) -> Refusal {
    Refusal {
        code: ResponseError::InvalidRequest,
        message: if resource_type == RESOURCE_BROKER {
            "kelp's broker settings are read-only: they come from its KELP_* environment".into()
        } else {
            format!("resource type {resource_type} cannot be altered here; only topics (2)")
        },
    }
}

/// The positions of resources named more than once in one request: Kafka refuses all of them
/// with INVALID_REQUEST.
pub(super) fn repeated<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> Vec<bool> {
    let all: Vec<(i8, &str)> = resources.collect();
    let mut seen: HashMap<(i8, &str), usize> = HashMap::with_capacity(all.len());
    for r in &all {
        *seen.entry(*r).or_default() += 1;
    }
    all.iter().map(|r| seen[r] > 1).collect()
}

pub(super) fn duplicate() -> Refusal {
    Refusal {
        code: ResponseError::InvalidRequest,
        message: "the resource is named more than once in the request".into(),
    }
}

/// Change one topic's stored configs with `change` (which checks what it does), then store
/// the result unless `validate_only`.
pub(super) async fn alter_topic(
    ctx: &Ctx,
    topic: &str,
    validate_only: bool,
    change: impl FnOnce(&mut Configs) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    let transient = |e: crate::error::Error| {
        tracing::debug!(error = %e, topic, "altering topic configs failed");
        Refusal { code: e.code(ApiKind::Data), message: "SeaweedFS did not answer; retry".into() }
    };
    match ctx.topics.partitions(topic).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Refusal {
                code: ResponseError::UnknownTopicOrPartition,
                message: format!("topic '{topic}' does not exist"),
            });
        }
        Err(e) => return Err(transient(e)),
    }
    let mut configs = ctx.topic_configs.read(topic).await.map_err(transient)?;
    change(&mut configs)?;
    if validate_only {
        return Ok(());
    }
    ctx.topic_configs.write(topic, &configs).await.map_err(transient)
}

pub async fn handle(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let dup = repeated(req.resources.iter().map(|r| (r.resource_type, r.resource_name.as_str())));
    let mut responses = Vec::with_capacity(req.resources.len());
    for (r, dup) in req.resources.iter().zip(dup) {
        let outcome = if dup {
            Err(duplicate())
        } else if r.resource_type != RESOURCE_TOPIC {
            Err(not_alterable(r.resource_type))
        } else {
            let wanted = r.configs.iter().map(|c| (c.name.as_str(), c.value.as_deref()));
            match topic_config::check_all(wanted) {
                Err(refused) => Err(refused),
                Ok(new) => {
                    alter_topic(ctx, &r.resource_name, req.validate_only, |configs| {
                        *configs = new;
                        Ok(())
                    })
                    .await
                }
            }
        };
        responses.push(response(r.resource_type, &r.resource_name, outcome));
    }
    AlterConfigsResponse::default().with_responses(responses)
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

/// Every resource of the request refused with `message`: TOPIC_AUTHORIZATION_FAILED for a
/// topic, CLUSTER_AUTHORIZATION_FAILED for anything else (Kafka's codes), nothing altered.
pub fn error(req: &AlterConfigsRequest, message: &str) -> AlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let refused =
                Refusal { code: authorization_code(r.resource_type), message: message.into() };
            response(r.resource_type, &r.resource_name, Err(refused))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// The code a client without the right gets for a resource of `resource_type`.
pub(super) fn authorization_code(resource_type: i8) -> ResponseError {
    if resource_type == RESOURCE_TOPIC {
        ResponseError::TopicAuthorizationFailed
    } else {
        ResponseError::ClusterAuthorizationFailed
    }
}
