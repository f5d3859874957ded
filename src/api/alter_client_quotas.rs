//! AlterClientQuotas (KIP-546, v0-v1): set or remove client quotas. They are stored in the
//! filer, so every kelp in front of the same SeaweedFS applies them (within a few seconds);
//! validation follows Kafka's controller.
//!
//! Owns: the wire half — turning each entry into a checked (entity, changes) pair, refusing
//! duplicates, honouring `validate_only`, and echoing every entry with its outcome. Does not
//! own: storing and applying a change (`quota::Quotas::alter`) or what a valid value is
//! (`quota::rules::validate_value`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, alter_client_quotas_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::quota::Quotas;
use crate::quota::rules::{self, Change, Entity, Kind, Name};

pub async fn handle(ctx: &Ctx, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    alter(&ctx.quotas, req).await
}

/// Each entry in order: checked, then (unless `validate_only`) stored and applied. One bad
/// entry fails alone.
async fn alter(quotas: &Quotas, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let mut out = Vec::with_capacity(req.entries.len());
    let mut seen: Vec<Entity> = Vec::new();
    for entry in req.entries {
        let echo = entry
            .entity
            .iter()
            .map(|e| {
                EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let result = match parse_alteration(&entry) {
            Err(message) => Err((ResponseError::InvalidRequest, message)),
            Ok((entity, _)) if seen.contains(&entity) => {
                Err((ResponseError::InvalidRequest, format!("ignoring duplicate entity {entity}")))
            }
            Ok((entity, changes)) => {
                seen.push(entity.clone());
                if req.validate_only {
                    Ok(())
                } else {
                    match quotas.alter(entity, &changes).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err((e.code(ApiKind::Data), e.to_string())),
                    }
                }
            }
        };
        let mut item = EntryData::default().with_entity(echo);
        if let Err((code, message)) = result {
            item = item
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message)));
        }
        out.push(item);
    }
    AlterClientQuotasResponse::default().with_entries(out)
}

/// An entry as (entity, changes), or why it is invalid.
fn parse_alteration(
    entry: &alter_client_quotas_request::EntryData,
) -> Result<(Entity, Vec<Change>), String> {
    let mut entity = Entity { user: None, client_id: None };
    if entry.entity.is_empty() {
        return Err("invalid empty client quota entity".into());
    }
    for e in &entry.entity {
        let name = Name::from_kafka(e.entity_name.as_deref());
        let side = match e.entity_type.as_str() {
            rules::ENTITY_USER => &mut entity.user,
            rules::ENTITY_CLIENT_ID => &mut entity.client_id,
            rules::ENTITY_IP => {
                return Err("kelp has no ip quotas (connection_creation_rate)".into());
            }
            other => return Err(format!("unhandled client quota entity type: {other}")),
        };
        if side.replace(name).is_some() {
            return Err(format!(
                "invalid client quota entity, duplicate entity entry {}",
                e.entity_type.as_str()
            ));
        }
    }
    let mut changes: Vec<Change> = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let kind = Kind::from_config_key(&op.key).ok_or_else(|| rules::unsupported_key(&op.key))?;
        if changes.iter().any(|(k, _)| *k == kind) {
            return Err(format!("duplicate quota key {}", op.key.as_str()));
        }
        if op.remove {
            changes.push((kind, None));
        } else {
            rules::validate_value(kind, op.value)?;
            changes.push((kind, Some(op.value)));
        }
    }
    Ok((entity, changes))
}

/// Every entry of the request failed with `code`: each echoes its entity,
/// as Kafka's `AlterClientQuotasRequest::getErrorResponse` does.
pub fn error(
    req: &AlterClientQuotasRequest,
    code: ResponseError,
    message: &str,
) -> AlterClientQuotasResponse {
    let entries = req
        .entries
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|d| {
                    EntityData::default()
                        .with_entity_type(d.entity_type.clone())
                        .with_entity_name(d.entity_name.clone())
                })
                .collect();
            EntryData::default()
                .with_entity(entity)
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn str_bytes(s: &str) -> StrBytes {
        StrBytes::from_string(s.to_string())
    }

    #[tokio::test]
    async fn alterations_are_validated_like_kafka() {
        use kafka_protocol::messages::alter_client_quotas_request::{
            EntityData, EntryData, OpData,
        };
        let q = Quotas::for_tests("").await;
        let entry = |entity: Vec<(&str, Option<&str>)>, ops: Vec<(&str, f64, bool)>| {
            EntryData::default()
                .with_entity(
                    entity
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(n.map(str_bytes))
                        })
                        .collect(),
                )
                .with_ops(
                    ops.into_iter()
                        .map(|(k, v, r)| {
                            OpData::default().with_key(str_bytes(k)).with_value(v).with_remove(r)
                        })
                        .collect(),
                )
        };
        let req = AlterClientQuotasRequest::default().with_validate_only(true).with_entries(vec![
            entry(vec![("client-id", Some("a"))], vec![("producer_byte_rate", 1024.0, false)]),
            entry(
                vec![("user", None), ("client-id", Some("a"))],
                vec![("request_rate", 0.5, false), ("consumer_byte_rate", 0.0, true)],
            ),
            entry(vec![], vec![]),
            entry(vec![("ip", Some("1.2.3.4"))], vec![("connection_creation_rate", 1.0, false)]),
            entry(vec![("client-id", Some("b"))], vec![("request_percentage", 50.0, false)]),
            entry(vec![("client-id", Some("c"))], vec![("producer_byte_rate", 1.5, false)]),
            entry(vec![("client-id", Some("d"))], vec![("producer_byte_rate", -1.0, false)]),
            entry(vec![("client-id", Some("e")), ("client-id", Some("f"))], vec![]),
            entry(vec![("client-id", Some("a"))], vec![("producer_byte_rate", 2048.0, false)]),
            entry(
                vec![("client-id", Some("g"))],
                vec![("request_rate", 1.0, false), ("request_rate", 2.0, false)],
            ),
            // Rates that once passed validation and then panicked building a meter.
            entry(vec![("client-id", Some("h"))], vec![("request_rate", 1e-20, false)]),
            entry(vec![("client-id", Some("i"))], vec![("consumer_byte_rate", 1e-25, false)]),
        ]);
        let codes: Vec<i16> = alter(&q, req).await.entries.iter().map(|e| e.error_code).collect();
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(codes[..2], [0, 0]);
        assert!(codes[2..].iter().all(|c| *c == invalid), "{codes:?}");
        assert_eq!(codes.len(), 12);
        assert!(q.rules().is_empty(), "validate_only changes nothing");
    }
}
