//! DescribeConfigs: the (read-only) settings kelp applies to topics and to itself as a broker.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::ApiKind;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// ConfigSource DEFAULT_CONFIG and STATIC_BROKER_CONFIG.
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_STATIC: i8 = 4;
/// ConfigType (v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// (name, value, type, source)
type Entry = (&'static str, String, i8, i8);

fn topic_configs(ctx: &Ctx) -> Vec<Entry> {
    vec![
        ("cleanup.policy", "delete".into(), TYPE_STRING, SOURCE_DEFAULT),
        ("compression.type", "producer".into(), TYPE_STRING, SOURCE_DEFAULT),
        ("max.message.bytes", ctx.config.max_message_bytes.to_string(), TYPE_INT, SOURCE_STATIC),
        ("message.timestamp.type", "CreateTime".into(), TYPE_STRING, SOURCE_DEFAULT),
        ("min.insync.replicas", "1".into(), TYPE_INT, SOURCE_DEFAULT),
        // Retention is SeaweedFS's business; kelp deletes nothing.
        ("retention.ms", "-1".into(), TYPE_LONG, SOURCE_DEFAULT),
        ("retention.bytes", "-1".into(), TYPE_LONG, SOURCE_DEFAULT),
    ]
}

fn broker_configs(ctx: &Ctx) -> Vec<Entry> {
    vec![
        (
            "auto.create.topics.enable",
            ctx.config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
            SOURCE_STATIC,
        ),
        ("message.max.bytes", ctx.config.max_message_bytes.to_string(), TYPE_INT, SOURCE_STATIC),
        ("num.partitions", ctx.config.default_partitions.to_string(), TYPE_INT, SOURCE_STATIC),
        (
            "socket.request.max.bytes",
            ctx.config.max_frame_bytes.to_string(),
            TYPE_INT,
            SOURCE_STATIC,
        ),
        (
            "connections.max.idle.ms",
            ctx.config.idle_timeout_ms.to_string(),
            TYPE_LONG,
            SOURCE_STATIC,
        ),
    ]
}

pub async fn handle(
    ctx: &Ctx,
    _version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries = match r.resource_type {
            RESOURCE_TOPIC => match ctx.topics.partitions(&r.resource_name).await {
                Ok(Some(_)) => Ok(topic_configs(ctx)),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(e.code(ApiKind::Data)),
            },
            RESOURCE_BROKER
                if r.resource_name.is_empty()
                    || r.resource_name.as_str() == ctx.config.node_id.to_string() =>
            {
                Ok(broker_configs(ctx))
            }
            RESOURCE_BROKER => Err(ResponseError::InvalidRequest),
            _ => Err(ResponseError::InvalidRequest),
        };
        results.push(match entries {
            Err(code) => result.with_error_code(code.code()),
            Ok(entries) => {
                let configs = entries
                    .into_iter()
                    .filter(|(name, ..)| {
                        r.configuration_keys.as_ref().is_none_or(|keys| {
                            keys.is_empty() || keys.iter().any(|k| k.as_str() == *name)
                        })
                    })
                    .map(|(name, value, ty, source)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(name))
                            .with_value(Some(StrBytes::from_string(value)))
                            .with_read_only(true)
                            .with_config_source(source)
                            .with_config_type(ty)
                    })
                    .collect();
                result.with_configs(configs)
            }
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}
