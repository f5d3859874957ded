//! DescribeConfigs: a topic's configs (`topic_config`: each known one with its value and where
//! it comes from) and kelp's own settings as a broker (read-only: they come from its `KELP_*`
//! environment).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::topic_config::{self, Type, source};

/// ConfigResource types (KIP-133).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One config as reported: name, value, type, source, whether it can be altered, synonyms,
/// documentation.
struct Entry {
    name: &'static str,
    value: String,
    ty: Type,
    source: i8,
    read_only: bool,
    synonyms: Vec<(&'static str, String, i8)>,
    doc: &'static str,
}

fn topic_entries(ctx: &Ctx, stored: &topic_config::Configs) -> Vec<Entry> {
    topic_config::describe(stored, ctx.config.max_message_bytes)
        .into_iter()
        .map(|d| Entry {
            name: d.def.name,
            value: d.value,
            ty: d.def.ty,
            source: d.source,
            read_only: false,
            synonyms: d.synonyms,
            doc: d.def.doc,
        })
        .collect()
}

fn broker_entries(ctx: &Ctx) -> Vec<Entry> {
    let c = &ctx.config;
    let broker = |name: &'static str, value: String, ty: Type, doc: &'static str| Entry {
        name,
        synonyms: vec![(name, value.clone(), source::STATIC_BROKER)],
        value,
        ty,
        source: source::STATIC_BROKER,
        read_only: true,
        doc,
    };
    vec![
        broker(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            Type::Boolean,
            "KELP_AUTO_CREATE_TOPICS",
        ),
        broker(
            topic_config::BROKER_MAX_MESSAGE_BYTES,
            c.max_message_bytes.to_string(),
            Type::Int,
            "KELP_MAX_MESSAGE_BYTES",
        ),
        broker(
            "num.partitions",
            c.default_partitions.to_string(),
            Type::Int,
            "KELP_DEFAULT_PARTITIONS",
        ),
        broker(
            "socket.request.max.bytes",
            c.max_frame_bytes.to_string(),
            Type::Int,
            "KELP_MAX_FRAME_BYTES",
        ),
        broker(
            "connections.max.idle.ms",
            c.idle_timeout_ms.to_string(),
            Type::Long,
            "KELP_IDLE_TIMEOUT_MS",
        ),
    ]
}

pub async fn handle(
    ctx: &Ctx,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries = match r.resource_type {
            RESOURCE_TOPIC => match ctx.topics.partitions(&r.resource_name).await {
                Ok(Some(_)) => match ctx.topic_configs.read(&r.resource_name).await {
                    Ok(stored) => Ok(topic_entries(ctx, &stored)),
                    Err(e) => {
                        tracing::debug!(error = %e, "reading topic configs failed");
                        Err(e.code(ApiKind::Data))
                    }
                },
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(e.code(ApiKind::Data)),
            },
            RESOURCE_BROKER
                if r.resource_name.is_empty()
                    || r.resource_name.as_str() == ctx.config.node_id.to_string() =>
            {
                Ok(broker_entries(ctx))
            }
            _ => Err(ResponseError::InvalidRequest),
        };
        results.push(match entries {
            Err(code) => result.with_error_code(code.code()),
            Ok(entries) => {
                let configs = entries
                    .into_iter()
                    .filter(|e| {
                        r.configuration_keys.as_ref().is_none_or(|keys| {
                            keys.is_empty() || keys.iter().any(|k| k.as_str() == e.name)
                        })
                    })
                    .map(|e| entry(e, version, req.include_synonyms, req.include_documentation))
                    .collect();
                result.with_configs(configs)
            }
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    e: Entry,
    version: i16,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    let synonyms = if synonyms {
        e.synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    // The wire library writes config_type and documentation only from v3 on.
    let doc = (documentation && version >= 3).then(|| StrBytes::from_static_str(e.doc));
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(e.name))
        .with_value(Some(StrBytes::from_string(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_config_type(e.ty as i8)
        .with_synonyms(synonyms)
        .with_documentation(doc)
}
