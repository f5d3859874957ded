//! Quota rules as Kafka defines them: entities of (user, client-id), the limits set on each,
//! the most-specific match, which entities a DescribeClientQuotas filter selects, and the
//! quotas file format. Pure: no I/O, no clock.
//!
//! Owns: the rule vocabulary ([`Entity`], [`Kind`], [`Limits`], [`Rules`]) and the checks
//! Kafka's controller applies to a quota value or key. Does not own: where rules come from or
//! which are in force (`quota`), or KIP-546 wire types (`api::*_client_quotas`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// How the quotas file (and Kafka's own docs) write "the default" for an entity type.
pub const DEFAULT_NAME: &str = "<default>";

/// Entity type names of KIP-546 (DescribeClientQuotas / AlterClientQuotas).
pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
pub const ENTITY_IP: &str = "ip";

/// One side of an entity: a specific name, or the default for that entity type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    Default,
    Is(String),
}

impl Name {
    /// KIP-546's encoding: `None` is the default.
    pub fn from_kafka(name: Option<&str>) -> Name {
        name.map_or(Name::Default, |n| Name::Is(n.to_string()))
    }

    pub fn as_kafka(&self) -> Option<&str> {
        match self {
            Name::Default => None,
            Name::Is(n) => Some(n),
        }
    }

    fn from_file(s: &str) -> Name {
        if s == DEFAULT_NAME { Name::Default } else { Name::Is(s.to_string()) }
    }
}

/// A quota entity: a user, a client id, or both; each side specific or the default.
/// At least one side is present.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    pub user: Option<Name>,
    pub client_id: Option<Name>,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |n: &Name| match n {
            Name::Default => DEFAULT_NAME.to_string(),
            Name::Is(s) => format!("{s:?}"),
        };
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => write!(f, "user={} client-id={}", side(u), side(c)),
            (Some(u), None) => write!(f, "user={}", side(u)),
            (None, Some(c)) => write!(f, "client-id={}", side(c)),
            (None, None) => write!(f, "(empty entity)"),
        }
    }
}

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Bytes of Produce requests per second (Kafka's `producer_byte_rate`).
    Produce,
    /// Bytes of Fetch responses per second (Kafka's `consumer_byte_rate`).
    Fetch,
    /// Requests per second (`request_rate`, kelp's own key: kelp meters requests, not Kafka's
    /// `request_percentage` of handler-thread time, which has no meaning in a sidecar).
    Request,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Produce, Kind::Fetch, Kind::Request];

    /// The quota's key in AlterClientQuotas, DescribeClientQuotas and the quotas file.
    pub fn config_key(self) -> &'static str {
        match self {
            Kind::Produce => "producer_byte_rate",
            Kind::Fetch => "consumer_byte_rate",
            Kind::Request => "request_rate",
        }
    }

    pub fn from_config_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.config_key() == key)
    }

    /// The metrics label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Fetch => "fetch",
            Kind::Request => "request",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Smallest request rate accepted: one request per thousand seconds. Below it a client could
/// not send its next request within any timeout a client uses.
pub const MIN_REQUEST_RATE: f64 = 1e-3;

/// Largest rate of any kind accepted: 2^53, the largest count an `f64` holds exactly (a rate
/// that high is no limit at all).
pub const MAX_RATE: f64 = 9_007_199_254_740_992.0;

/// Check a quota value the way Kafka's controller does: finite, and a whole number of at
/// least 1 for the byte rates (Kafka types them LONG); request rates from
/// [`MIN_REQUEST_RATE`]; nothing above [`MAX_RATE`]. Every value that passes makes a meter
/// whose periods and waits fit a `Duration`.
pub fn validate_value(kind: Kind, value: f64) -> Result<(), String> {
    let key = kind.config_key();
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("quota {key} must be greater than 0"));
    }
    if value > MAX_RATE {
        return Err(format!("quota {key} must be at most {MAX_RATE}"));
    }
    match kind {
        Kind::Produce | Kind::Fetch if value.fract() != 0.0 => {
            Err(format!("{key} cannot be a fractional value"))
        }
        Kind::Request if value < MIN_REQUEST_RATE => {
            Err(format!("quota {key} must be at least {MIN_REQUEST_RATE}"))
        }
        _ => Ok(()),
    }
}

/// Why a key cannot be set, for keys Kafka knows but kelp does not meter.
pub fn unsupported_key(key: &str) -> String {
    match key {
        "request_percentage" => {
            "kelp meters request_rate (requests per second), not request_percentage".into()
        }
        "controller_mutation_rate" => "kelp does not meter controller_mutation_rate".into(),
        _ => format!("invalid configuration key {key}"),
    }
}

/// The limits set on one entity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits([Option<f64>; 3]);

impl Limits {
    pub fn get(&self, kind: Kind) -> Option<f64> {
        self.0[kind.index()]
    }

    pub fn set(&mut self, kind: Kind, value: Option<f64>) {
        self.0[kind.index()] = value;
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The set limits, in `Kind::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, f64)> + '_ {
        Kind::ALL.into_iter().filter_map(|k| self.get(k).map(|v| (k, v)))
    }
}

/// One AlterClientQuotas operation on an entity: set a kind's limit (`Some`) or remove it.
pub type Change = (Kind, Option<f64>);

/// The entity types of KIP-546.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityType {
    User,
    ClientId,
    /// Known to Kafka; kelp keeps no ip quotas, so no entity has this side.
    Ip,
}

impl EntityType {
    pub fn from_name(name: &str) -> Option<EntityType> {
        match name {
            ENTITY_USER => Some(EntityType::User),
            ENTITY_CLIENT_ID => Some(EntityType::ClientId),
            ENTITY_IP => Some(EntityType::Ip),
            _ => None,
        }
    }
}

/// A DescribeClientQuotas filter whose components have been checked (the wire checks are
/// `api::describe_client_quotas`'s): each names an entity type at most once, with the name
/// wanted on that side (`None`: any name, specific or default).
#[derive(Debug, Default)]
pub struct Filter {
    pub components: Vec<(EntityType, Option<Name>)>,
    /// Only entities with no side beyond the filtered ones.
    pub strict: bool,
}

impl Filter {
    /// Kafka controller's semantics: every component matches the entity's side of that type
    /// (an entity without that side never matches), and with `strict` the entity has no other
    /// side.
    fn matches(&self, e: &Entity) -> bool {
        let side = |t: EntityType| match t {
            EntityType::User => e.user.as_ref(),
            EntityType::ClientId => e.client_id.as_ref(),
            EntityType::Ip => None,
        };
        let size = usize::from(e.user.is_some()) + usize::from(e.client_id.is_some());
        (!self.strict || size == self.components.len())
            && self.components.iter().all(|(t, name)| match (side(*t), name) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(have), Some(want)) => have == want,
            })
    }
}

/// Which of Kafka's eight entity shapes a match came from, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    UserClient,
    UserDefaultClient,
    User,
    DefaultUserClient,
    DefaultUserDefaultClient,
    DefaultUser,
    Client,
    DefaultClient,
}

impl Shape {
    /// The metrics label value: a closed set of eight, so per-entity series stay bounded
    /// however many users and client ids there are.
    pub fn label(self) -> &'static str {
        match self {
            Shape::UserClient => "user_client",
            Shape::UserDefaultClient => "user_default_client",
            Shape::User => "user",
            Shape::DefaultUserClient => "default_user_client",
            Shape::DefaultUserDefaultClient => "default_user_default_client",
            Shape::DefaultUser => "default_user",
            Shape::Client => "client",
            Shape::DefaultClient => "default_client",
        }
    }
}

/// Who shares one meter. As in Kafka, a `<default>` match meters each user (or client id)
/// separately, and an entity without a client id is shared by all the user's clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterKey {
    pub kind: Kind,
    pub user: Option<String>,
    pub client_id: Option<String>,
}

/// The rule that governs one client for one kind of quota.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub shape: Shape,
    pub rate: f64,
    pub key: MeterKey,
}

/// A set of rules: limits by entity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules(BTreeMap<Entity, Limits>);

impl Rules {
    pub fn get(&self, entity: &Entity) -> Option<&Limits> {
        self.0.get(entity)
    }

    /// Set an entity's limits; empty limits remove the entity.
    pub fn insert(&mut self, entity: Entity, limits: Limits) {
        if limits.is_empty() {
            self.0.remove(&entity);
        } else {
            self.0.insert(entity, limits);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Entity, &Limits)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Kafka's most-specific-match rule, applied per kind of quota: the first of
    ///
    /// 1. users/<user>/clients/<client-id>     5. users/<default>/clients/<default>
    /// 2. users/<user>/clients/<default>       6. users/<default>
    /// 3. users/<user>                          7. clients/<client-id>
    /// 4. users/<default>/clients/<client-id>  8. clients/<default>
    ///
    /// that sets this kind. `user` is `None` when the connection has no authenticated user
    /// (SASL off): then only the client-id entities (7, 8) apply.
    pub fn most_specific(&self, kind: Kind, user: Option<&str>, client_id: &str) -> Option<Match> {
        let is = |s: &str| Some(Name::Is(s.to_string()));
        let mut candidates = Vec::with_capacity(8);
        if let Some(u) = user {
            candidates.extend([
                (Shape::UserClient, is(u), is(client_id)),
                (Shape::UserDefaultClient, is(u), Some(Name::Default)),
                (Shape::User, is(u), None),
                (Shape::DefaultUserClient, Some(Name::Default), is(client_id)),
                (Shape::DefaultUserDefaultClient, Some(Name::Default), Some(Name::Default)),
                (Shape::DefaultUser, Some(Name::Default), None),
            ]);
        }
        candidates.extend([
            (Shape::Client, None, is(client_id)),
            (Shape::DefaultClient, None, Some(Name::Default)),
        ]);
        candidates.into_iter().find_map(|(shape, u, c)| {
            let key = MeterKey {
                kind,
                user: u.as_ref().and(user).map(str::to_string),
                client_id: c.as_ref().map(|_| client_id.to_string()),
            };
            let rate = self.0.get(&Entity { user: u, client_id: c })?.get(kind)?;
            Some(Match { shape, rate, key })
        })
    }

    /// These rules with `over` laid on top: for each entity and key, `over`'s value wins.
    pub fn overlay(&self, over: &Rules) -> Rules {
        let mut out = self.clone();
        for (entity, limits) in over.iter() {
            let mut merged = out.0.get(entity).copied().unwrap_or_default();
            for (k, v) in limits.iter() {
                merged.set(k, Some(v));
            }
            out.insert(entity.clone(), merged);
        }
        out
    }

    /// The entities `filter` selects (DescribeClientQuotas), in entity order.
    pub fn describe(&self, filter: &Filter) -> Vec<(&Entity, &Limits)> {
        self.0.iter().filter(|(e, _)| filter.matches(e)).collect()
    }

    /// Parse the quotas file (YAML). Any problem refuses the whole file, naming the rule.
    ///
    /// ```yaml
    /// quotas:
    ///   - client-id: <default>          # every client id not matched more specifically
    ///     producer_byte_rate: 1048576
    ///   - user: alice                   # needs SASL
    ///     client-id: reporting
    ///     consumer_byte_rate: 5242880
    ///     request_rate: 50
    /// ```
    pub fn parse_file(text: &str) -> Result<Rules, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            quotas: Vec<Rule>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rule {
            user: Option<String>,
            #[serde(rename = "client-id", alias = "client_id")]
            client_id: Option<String>,
            producer_byte_rate: Option<f64>,
            consumer_byte_rate: Option<f64>,
            request_rate: Option<f64>,
        }
        let doc: Option<Doc> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Rules::default();
        for (i, r) in doc.map(|d| d.quotas).unwrap_or_default().into_iter().enumerate() {
            let entity = Entity {
                user: r.user.as_deref().map(Name::from_file),
                client_id: r.client_id.as_deref().map(Name::from_file),
            };
            let at = format!("quotas[{i}] ({entity})");
            if entity.user.is_none() && entity.client_id.is_none() {
                return Err(format!("quotas[{i}]: names neither user nor client-id"));
            }
            let mut limits = Limits::default();
            for (kind, v) in [
                (Kind::Produce, r.producer_byte_rate),
                (Kind::Fetch, r.consumer_byte_rate),
                (Kind::Request, r.request_rate),
            ] {
                if let Some(v) = v {
                    validate_value(kind, v).map_err(|e| format!("{at}: {e}"))?;
                    limits.set(kind, Some(v));
                }
            }
            if limits.is_empty() {
                return Err(format!("{at}: sets no quota"));
            }
            if rules.get(&entity).is_some() {
                return Err(format!("{at}: entity listed twice"));
            }
            rules.insert(entity, limits);
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<&str>, client: Option<&str>) -> Entity {
        Entity { user: user.map(Name::from_file), client_id: client.map(Name::from_file) }
    }

    fn limits(kind: Kind, v: f64) -> Limits {
        let mut l = Limits::default();
        l.set(kind, Some(v));
        l
    }

    /// All eight shapes set, each with a distinct rate: peel them off one at a time, most
    /// specific first, and check that the next one takes over.
    #[test]
    fn most_specific_match_follows_kafkas_order() {
        let shapes = [
            (Shape::UserClient, entity(Some("alice"), Some("app"))),
            (Shape::UserDefaultClient, entity(Some("alice"), Some("<default>"))),
            (Shape::User, entity(Some("alice"), None)),
            (Shape::DefaultUserClient, entity(Some("<default>"), Some("app"))),
            (Shape::DefaultUserDefaultClient, entity(Some("<default>"), Some("<default>"))),
            (Shape::DefaultUser, entity(Some("<default>"), None)),
            (Shape::Client, entity(None, Some("app"))),
            (Shape::DefaultClient, entity(None, Some("<default>"))),
        ];
        let mut rules = Rules::default();
        for (i, (_, e)) in shapes.iter().enumerate() {
            rules.insert(e.clone(), limits(Kind::Produce, (i + 1) as f64));
        }
        for (i, (shape, e)) in shapes.iter().enumerate() {
            let m = rules.most_specific(Kind::Produce, Some("alice"), "app").unwrap();
            assert_eq!((m.shape, m.rate), (*shape, (i + 1) as f64));
            rules.insert(e.clone(), Limits::default());
        }
        assert!(rules.most_specific(Kind::Produce, Some("alice"), "app").is_none());
    }

    #[test]
    fn without_a_user_only_client_entities_apply() {
        let mut rules = Rules::default();
        rules.insert(entity(Some("<default>"), None), limits(Kind::Produce, 1.0));
        assert!(rules.most_specific(Kind::Produce, None, "app").is_none());
        rules.insert(entity(None, Some("<default>")), limits(Kind::Produce, 2.0));
        let m = rules.most_specific(Kind::Produce, None, "app").unwrap();
        assert_eq!((m.shape, m.rate), (Shape::DefaultClient, 2.0));
        assert_eq!(
            m.key,
            MeterKey { kind: Kind::Produce, user: None, client_id: Some("app".into()) }
        );
        // With a user, the default user wins over clients/<default>.
        assert_eq!(
            rules.most_specific(Kind::Produce, Some("bob"), "app").unwrap().shape,
            Shape::DefaultUser
        );
    }

    #[test]
    fn precedence_is_per_kind_and_meter_keys_follow_the_matched_entity() {
        let mut rules = Rules::default();
        rules.insert(entity(Some("alice"), None), limits(Kind::Produce, 10.0));
        rules.insert(entity(None, Some("<default>")), limits(Kind::Fetch, 20.0));
        let p = rules.most_specific(Kind::Produce, Some("alice"), "app").unwrap();
        assert_eq!(
            p.key,
            MeterKey { kind: Kind::Produce, user: Some("alice".into()), client_id: None },
            "shared by alice's clients"
        );
        let f = rules.most_specific(Kind::Fetch, Some("alice"), "app").unwrap();
        assert_eq!(
            (f.shape, f.rate),
            (Shape::DefaultClient, 20.0),
            "alice's rule sets no fetch quota"
        );
        assert!(rules.most_specific(Kind::Request, Some("alice"), "app").is_none());
    }

    #[test]
    fn overlay_merges_per_key() {
        let mut file = Rules::default();
        let mut both = limits(Kind::Produce, 1.0);
        both.set(Kind::Fetch, Some(2.0));
        file.insert(entity(None, Some("app")), both);
        let mut filer = Rules::default();
        filer.insert(entity(None, Some("app")), limits(Kind::Fetch, 5.0));
        filer.insert(entity(Some("u"), None), limits(Kind::Request, 3.0));
        let merged = file.overlay(&filer);
        let app = merged.get(&entity(None, Some("app"))).unwrap();
        assert_eq!((app.get(Kind::Produce), app.get(Kind::Fetch)), (Some(1.0), Some(5.0)));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn quotas_file_parses_and_bad_files_are_refused() {
        let rules = Rules::parse_file(
            "quotas:\n  - client-id: <default>\n    producer_byte_rate: 1048576\n  - user: alice\n    client_id: app\n    request_rate: 2.5\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules.get(&entity(None, Some("<default>"))).unwrap().get(Kind::Produce),
            Some(1_048_576.0)
        );
        assert_eq!(
            rules.get(&entity(Some("alice"), Some("app"))).unwrap().get(Kind::Request),
            Some(2.5)
        );
        assert!(Rules::parse_file("").unwrap().is_empty());
        assert!(Rules::parse_file("quotas: []").unwrap().is_empty());
        for bad in [
            "quotas:\n  - producer_byte_rate: 1\n",
            "quotas:\n  - client-id: a\n",
            "quotas:\n  - client-id: a\n    producer_byte_rate: 0\n",
            "quotas:\n  - client-id: a\n    producer_byte_rate: 1.5\n",
            "quotas:\n  - client-id: a\n    producer_byte_rate: -1\n",
            "quotas:\n  - client-id: a\n    request_percentage: 50\n",
            "quotas:\n  - client-id: a\n    request_rate: 1\n  - client-id: a\n    producer_byte_rate: 1\n",
            "default:\n  producer_byte_rate: 1\n",
            "quotas: {",
        ] {
            assert!(Rules::parse_file(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn values_are_checked_like_kafkas_controller() {
        assert!(validate_value(Kind::Produce, 1024.0).is_ok());
        assert!(validate_value(Kind::Produce, 10.5).is_err());
        assert!(validate_value(Kind::Request, 0.5).is_ok());
        assert!(validate_value(Kind::Request, 0.0).is_err());
        assert!(validate_value(Kind::Fetch, f64::NAN).is_err());
        // Values that once passed and then panicked building a meter.
        assert!(validate_value(Kind::Request, 1e-20).is_err());
        assert!(validate_value(Kind::Produce, 1e-25).is_err());
        assert!(validate_value(Kind::Produce, 1.000_000_1).is_err());
        assert!(validate_value(Kind::Fetch, 1e300).is_err());
        assert!(validate_value(Kind::Request, MIN_REQUEST_RATE).is_ok());
        assert!(validate_value(Kind::Produce, MAX_RATE).is_ok());
        assert!(unsupported_key("request_percentage").contains("request_rate"));
    }
}
