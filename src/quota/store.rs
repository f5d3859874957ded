//! Quota rules set through AlterClientQuotas, kept in the filer so every kelp in front of the
//! same SeaweedFS applies them: one small JSON file per entity (`{"producer_byte_rate":
//! 1048576}`) at `seaweed::layout::quota_entity_path`.
//!
//! An alteration reads the entity's file, applies the operations and writes it back (or
//! deletes it when no quota is left). Two kelps altering the same entity at the same instant
//! can lose one update; different entities never interfere.
//!
//! Owns: the stored form and its filer I/O. Does not own: checking an alteration (the
//! AlterClientQuotas handler, `rules`), applying rules (`quota`), or filer paths
//! (`seaweed::layout`).

use std::collections::BTreeMap;

use super::rules::{Change, Entity, Kind, Limits, Name, Rules};
use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

fn side(n: &Option<Name>) -> Option<Option<&str>> {
    n.as_ref().map(Name::as_kafka)
}

fn entity_path(root: &str, entity: &Entity) -> String {
    layout::quota_entity_path(root, side(&entity.user), side(&entity.client_id))
}

fn decode(path: &str, bytes: &[u8]) -> Result<Limits, Error> {
    let map: BTreeMap<String, f64> = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt { path: path.to_string(), why: e.to_string() })?;
    let mut limits = Limits::default();
    for (key, value) in map {
        // A key written by a newer kelp that this one does not meter is skipped, not fatal.
        if let Some(kind) = Kind::from_config_key(&key)
            && super::rules::validate_value(kind, value).is_ok()
        {
            limits.set(kind, Some(value));
        }
    }
    Ok(limits)
}

fn encode(limits: &Limits) -> Vec<u8> {
    let map: BTreeMap<&str, f64> = limits.iter().map(|(k, v)| (k.config_key(), v)).collect();
    serde_json::to_vec(&map).expect("a map of numbers serializes")
}

/// Every entity stored in the filer. An entry that cannot be read or decoded fails the whole
/// load, so a kelp never applies half of the stored rules.
pub async fn load(seaweed: &Seaweed, root: &str) -> Result<Rules, Error> {
    let dir = layout::quotas_dir(root);
    let mut rules = Rules::default();
    for name in seaweed.filer_list(&dir).await? {
        let Some((user, client_id)) = layout::parse_quota_entity_name(&name) else {
            tracing::debug!(%name, "ignoring a foreign entry among the stored quotas");
            continue;
        };
        let path = format!("{dir}/{name}");
        let Some(bytes) = seaweed.filer_get(&path).await? else {
            continue; // deleted between the listing and the read
        };
        let entity = Entity {
            user: user.map(|u| Name::from_kafka(u.as_deref())),
            client_id: client_id.map(|c| Name::from_kafka(c.as_deref())),
        };
        rules.insert(entity, decode(&path, &bytes)?);
    }
    Ok(rules)
}

/// Apply `ops` (key → new value, `None` removes) to the stored entity; returns its new limits.
pub async fn alter(
    seaweed: &Seaweed,
    root: &str,
    entity: &Entity,
    ops: &[Change],
) -> Result<Limits, Error> {
    let path = entity_path(root, entity);
    let mut limits = match seaweed.filer_get(&path).await? {
        Some(bytes) => decode(&path, &bytes)?,
        None => Limits::default(),
    };
    for (kind, value) in ops {
        limits.set(*kind, *value);
    }
    if limits.is_empty() {
        seaweed.filer_delete(&path).await?;
    } else {
        seaweed.filer_put(&path, &encode(&limits)).await?;
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_skips_unknown_keys() {
        let mut l = Limits::default();
        l.set(Kind::Produce, Some(1024.0));
        l.set(Kind::Request, Some(2.5));
        let bytes = encode(&l);
        assert_eq!(bytes, br#"{"producer_byte_rate":1024.0,"request_rate":2.5}"#);
        assert_eq!(decode("/p", &bytes).unwrap(), l);
        let newer =
            decode("/p", br#"{"producer_byte_rate":1024,"controller_mutation_rate":3}"#).unwrap();
        assert_eq!(newer.iter().collect::<Vec<_>>(), vec![(Kind::Produce, 1024.0)]);
        assert!(matches!(decode("/p", b"not json"), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn entity_paths_use_the_layout() {
        let e = Entity { user: Some(Name::Default), client_id: Some(Name::Is("app".into())) };
        assert_eq!(entity_path("/kelp", &e), "/kelp/quotas/user=%default,client-id=app");
    }
}
