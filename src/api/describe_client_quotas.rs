//! DescribeClientQuotas (KIP-546, v0-v1): the client-quota rules in force on this kelp (the
//! quotas file merged with the rules stored through AlterClientQuotas).
//!
//! Owns: the wire half — checking the filter components as Kafka's controller does and
//! building the response. Does not own: which rules are in force or which entities a checked
//! filter selects (`quota::Quotas::describe`, `quota::rules::Filter`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::quota::rules::{self, Entity, EntityType, Filter, Limits, Name};

/// KIP-546 match types of a filter component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

pub fn handle(ctx: &Ctx, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    let components: Vec<_> = req
        .components
        .iter()
        .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref()))
        .collect();
    match parse_filter(&components, req.strict) {
        Err((code, message)) => DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_entries(None),
        Ok(filter) => {
            let entries = ctx.quotas.describe(&filter).iter().map(entry).collect();
            DescribeClientQuotasResponse::default().with_entries(Some(entries))
        }
    }
}

/// The filter of a request, checked with the semantics of Kafka's controller. `components`
/// are (entity type, match type, match).
fn parse_filter(
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Filter, (ResponseError, String)> {
    let invalid = |m: String| Err((ResponseError::InvalidRequest, m));
    let mut filter = Filter { components: Vec::with_capacity(components.len()), strict };
    let mut seen: Vec<&str> = Vec::with_capacity(components.len());
    for &(entity_type, match_type, matched) in components {
        if entity_type.is_empty() {
            return invalid("invalid empty entity type".into());
        }
        if seen.contains(&entity_type) {
            return invalid(format!(
                "entity type {entity_type} cannot appear more than once in the filter"
            ));
        }
        seen.push(entity_type);
        let Some(kind) = EntityType::from_name(entity_type) else {
            return Err((
                ResponseError::UnsupportedVersion,
                format!("unsupported entity type {entity_type}"),
            ));
        };
        let name = match (match_type, matched) {
            (MATCH_EXACT, Some(m)) => Some(Name::Is(m.to_string())),
            (MATCH_EXACT, None) => {
                return invalid("MATCH_TYPE_EXACT with a null match string".into());
            }
            (MATCH_DEFAULT, None) => Some(Name::Default),
            (MATCH_SPECIFIED, None) => None,
            (MATCH_DEFAULT | MATCH_SPECIFIED, Some(_)) => {
                return invalid(format!("match type {match_type} with a match string"));
            }
            _ => return invalid(format!("unknown match type {match_type}")),
        };
        filter.components.push((kind, name));
    }
    let has_ip = filter.components.iter().any(|(t, _)| *t == EntityType::Ip);
    if has_ip && filter.components.len() > 1 {
        return invalid("an ip filter component cannot be combined with user or client-id".into());
    }
    Ok(filter)
}

/// One entity and its limits as the response carries them.
fn entry((entity, limits): &(Entity, Limits)) -> EntryData {
    let mut sides = Vec::new();
    if let Some(u) = &entity.user {
        sides.push(
            EntityData::default()
                .with_entity_type(str_bytes(rules::ENTITY_USER))
                .with_entity_name(u.as_kafka().map(str_bytes)),
        );
    }
    if let Some(c) = &entity.client_id {
        sides.push(
            EntityData::default()
                .with_entity_type(str_bytes(rules::ENTITY_CLIENT_ID))
                .with_entity_name(c.as_kafka().map(str_bytes)),
        );
    }
    let values = limits
        .iter()
        .map(|(k, v)| ValueData::default().with_key(str_bytes(k.config_key())).with_value(v))
        .collect();
    EntryData::default().with_entity(sides).with_values(values)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::rules::{Kind, Rules};

    fn entity(user: Option<&str>, client: Option<&str>) -> Entity {
        let name =
            |s: &str| if s == rules::DEFAULT_NAME { Name::Default } else { Name::Is(s.into()) };
        Entity { user: user.map(name), client_id: client.map(name) }
    }

    fn limits(kind: Kind, v: f64) -> Limits {
        let mut l = Limits::default();
        l.set(kind, Some(v));
        l
    }

    #[test]
    fn describe_filters_like_kafka() {
        let mut rules = Rules::default();
        for e in [
            entity(Some("alice"), None),
            entity(Some("alice"), Some("app")),
            entity(None, Some("<default>")),
            entity(None, Some("app")),
        ] {
            rules.insert(e, limits(Kind::Request, 1.0));
        }
        let count = |c: &[(&str, i8, Option<&str>)], strict| {
            parse_filter(c, strict).map(|f| rules.describe(&f).len())
        };
        assert_eq!(count(&[], false), Ok(4));
        assert_eq!(count(&[], true), Ok(0));
        assert_eq!(count(&[("user", 0, Some("alice"))], false), Ok(2));
        assert_eq!(count(&[("user", 0, Some("alice"))], true), Ok(1));
        assert_eq!(count(&[("client-id", 1, None)], false), Ok(1));
        assert_eq!(count(&[("client-id", 2, None)], false), Ok(3));
        assert_eq!(count(&[("client-id", 2, None)], true), Ok(2));
        assert_eq!(count(&[("ip", 2, None)], false), Ok(0));
        assert_eq!(
            count(&[("user", 0, None)], false).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            count(&[("user", 1, Some("x"))], false).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            count(&[("user", 2, None), ("user", 2, None)], false).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            count(&[("group", 2, None)], false).unwrap_err().0,
            ResponseError::UnsupportedVersion
        );
    }
}
