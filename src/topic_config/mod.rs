//! Topic configs: every name kelp knows, its type, default and valid values, and whether kelp
//! applies it, accepts it without effect, or refuses values it cannot honour.
//!
//! Owns: [`KNOWN`], the checks ([`check`], [`apply`]) and what DescribeConfigs and
//! CreateTopics report ([`describe`]). Does not own: where configs are stored and cached
//! ([`store`]) or the wire (`api::describe_configs`, `api::create_topics`,
//! `api::alter_configs`, `api::incremental_alter_configs`).
//!
//! Three kinds of config (docs/configuration.md "Topic configs"):
//! - applied: `max.message.bytes` (Produce refuses a larger batch with MESSAGE_TOO_LARGE);
//! - only their default accepted: `retention.ms`, `retention.bytes` (SeaweedFS's broker never
//!   deletes records, and a purge would remove the marker records at the head of every
//!   partition), `cleanup.policy=compact` (no compaction), `compression.type` other than
//!   `producer` (records are stored as produced), `message.timestamp.type=LogAppendTime`,
//!   `remote.storage.enable=true`. Any other value is refused with INVALID_CONFIG naming the
//!   reason, never accepted and ignored;
//! - stored and reported without effect: Kafka's configs about its own log segments,
//!   flushing, indexes, replication and compaction tuning, which have no counterpart here.
//!
//! Names Kafka does not know are refused with INVALID_CONFIG, as Kafka does.
//!
//! When adding a config: add its [`Def`] to [`KNOWN`] (kept in name order, a test checks) and
//! its line to docs/configuration.md.

pub mod store;

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

/// A topic's configs that differ from the defaults: name → value, as stored.
pub type Configs = BTreeMap<String, String>;

/// Kafka's ConfigSource values (DescribeConfigs v1+, CreateTopics v5+).
pub mod source {
    pub const DYNAMIC_TOPIC: i8 = 1;
    pub const STATIC_BROKER: i8 = 4;
    pub const DEFAULT: i8 = 5;
}

/// Kafka's ConfigType values (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a config's default comes from.
#[derive(Debug, Clone, Copy)]
enum Default {
    Fixed(&'static str),
    /// The broker's `message.max.bytes` (`KELP_MAX_MESSAGE_BYTES`).
    BrokerMaxMessageBytes,
}

/// One topic config kelp knows.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub ty: Type,
    default: Default,
    /// Smallest number accepted (Int, Long).
    min: Option<i64>,
    /// The values accepted (String; each element of a List). Empty: any.
    choices: &'static [&'static str],
    /// `Some(reason)` for a valid value kelp cannot honour.
    refuse: fn(&str) -> Option<&'static str>,
    pub doc: &'static str,
}

fn never(_: &str) -> Option<&'static str> {
    None
}

const NO_RETENTION: &str = "kelp keeps every record: SeaweedFS's MQ broker deletes nothing by \
    itself, and a purge would also remove the marker records at the head of every partition; \
    only -1 is accepted";

fn refuse_retention(v: &str) -> Option<&'static str> {
    (v.trim().parse::<i64>() != Ok(-1)).then_some(NO_RETENTION)
}

fn refuse_compact(v: &str) -> Option<&'static str> {
    list_items(v).any(|p| p == "compact").then_some(
        "SeaweedFS keeps every record and kelp does not compact partitions; only delete \
         (with no retention) is accepted",
    )
}

fn refuse_compression(v: &str) -> Option<&'static str> {
    (v.trim() != "producer").then_some(
        "kelp stores batches as the producer compressed them and does not recompress; only \
         compression.type=producer is accepted",
    )
}

fn refuse_log_append_time(v: &str) -> Option<&'static str> {
    (v.trim() == "LogAppendTime").then_some(
        "kelp keeps the producer's timestamps (CreateTime); LogAppendTime is not supported",
    )
}

fn refuse_remote_storage(v: &str) -> Option<&'static str> {
    v.trim().eq_ignore_ascii_case("true").then_some("kelp has no tiered storage")
}

const fn def(name: &'static str, ty: Type, default: &'static str, doc: &'static str) -> Def {
    Def { name, ty, default: Default::Fixed(default), min: None, choices: &[], refuse: never, doc }
}

const fn num(name: &'static str, ty: Type, default: &'static str, min: i64) -> Def {
    Def {
        name,
        ty,
        default: Default::Fixed(default),
        min: Some(min),
        choices: &[],
        refuse: never,
        doc: STORED,
    }
}

const STORED: &str =
    "Accepted and stored; it has no effect on kelp (SeaweedFS manages its own storage).";
const LONG_MAX: &str = "9223372036854775807";

/// Every topic config kelp knows, in name order: Kafka 4's topic configs.
pub static KNOWN: &[Def] = &[
    Def {
        choices: &["compact", "delete"],
        refuse: refuse_compact,
        ..def(
            "cleanup.policy",
            Type::List,
            "delete",
            "delete only, and with no retention: kelp keeps every record.",
        )
    },
    num("compression.gzip.level", Type::Int, "-1", -1),
    num("compression.lz4.level", Type::Int, "9", 1),
    Def {
        choices: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        refuse: refuse_compression,
        ..def(
            "compression.type",
            Type::String,
            "producer",
            "producer only: batches are stored as the producer compressed them.",
        )
    },
    num("compression.zstd.level", Type::Int, "3", -131072),
    num("delete.retention.ms", Type::Long, "86400000", 0),
    num("file.delete.delay.ms", Type::Long, "60000", 0),
    num("flush.messages", Type::Long, LONG_MAX, 1),
    num("flush.ms", Type::Long, LONG_MAX, 0),
    def("follower.replication.throttled.replicas", Type::List, "", STORED),
    num("index.interval.bytes", Type::Int, "4096", 0),
    def("leader.replication.throttled.replicas", Type::List, "", STORED),
    num("local.retention.bytes", Type::Long, "-2", -2),
    num("local.retention.ms", Type::Long, "-2", -2),
    num("max.compaction.lag.ms", Type::Long, LONG_MAX, 1),
    Def {
        default: Default::BrokerMaxMessageBytes,
        min: Some(0),
        ..def(
            "max.message.bytes",
            Type::Int,
            "",
            "The largest record batch Produce accepts for this topic (MESSAGE_TOO_LARGE \
             beyond); defaults to the broker's message.max.bytes (KELP_MAX_MESSAGE_BYTES).",
        )
    },
    num("message.timestamp.after.max.ms", Type::Long, "3600000", 0),
    num("message.timestamp.before.max.ms", Type::Long, LONG_MAX, 0),
    Def {
        choices: &["CreateTime", "LogAppendTime"],
        refuse: refuse_log_append_time,
        ..def(
            "message.timestamp.type",
            Type::String,
            "CreateTime",
            "CreateTime only: records keep the producer's timestamps.",
        )
    },
    def("min.cleanable.dirty.ratio", Type::Double, "0.5", STORED),
    num("min.compaction.lag.ms", Type::Long, "0", 0),
    num("min.insync.replicas", Type::Int, "1", 1),
    def("preallocate", Type::Boolean, "false", STORED),
    def("remote.log.copy.disable", Type::Boolean, "false", STORED),
    def("remote.log.delete.on.disable", Type::Boolean, "false", STORED),
    Def {
        refuse: refuse_remote_storage,
        ..def("remote.storage.enable", Type::Boolean, "false", "false only: no tiered storage.")
    },
    Def {
        min: Some(-1),
        refuse: refuse_retention,
        ..def("retention.bytes", Type::Long, "-1", "-1 only: kelp keeps every record.")
    },
    Def {
        min: Some(-1),
        refuse: refuse_retention,
        ..def("retention.ms", Type::Long, "-1", "-1 only: kelp keeps every record.")
    },
    num("segment.bytes", Type::Int, "1073741824", 14),
    num("segment.index.bytes", Type::Int, "10485760", 4),
    num("segment.jitter.ms", Type::Long, "0", 0),
    num("segment.ms", Type::Long, "604800000", 1),
    def("unclean.leader.election.enable", Type::Boolean, "false", STORED),
];

/// The topic config called `name`, if Kafka has one.
pub fn known(name: &str) -> Option<&'static Def> {
    KNOWN.iter().find(|d| d.name == name)
}

/// The name of the broker setting a topic config's default comes from, where there is one.
pub const BROKER_MAX_MESSAGE_BYTES: &str = "message.max.bytes";

impl Def {
    /// The value in force when the topic has none of its own; `broker_max` is
    /// `KELP_MAX_MESSAGE_BYTES`.
    pub fn default_value(&self, broker_max: u32) -> String {
        match self.default {
            Default::Fixed(v) => v.to_string(),
            Default::BrokerMaxMessageBytes => broker_max.to_string(),
        }
    }

    /// Where the default comes from (a ConfigSource).
    pub fn default_source(&self) -> i8 {
        match self.default {
            Default::Fixed(_) => source::DEFAULT,
            Default::BrokerMaxMessageBytes => source::STATIC_BROKER,
        }
    }

    /// The name the default is reported under among synonyms.
    pub fn default_name(&self) -> &'static str {
        match self.default {
            Default::Fixed(_) => self.name,
            Default::BrokerMaxMessageBytes => BROKER_MAX_MESSAGE_BYTES,
        }
    }

    /// `Ok` when `value` is well-formed and kelp honours it; the reason otherwise.
    fn validate(&self, value: &str) -> Result<(), String> {
        let v = value.trim();
        let bad = |what: &str| {
            Err(format!("Invalid value {value} for configuration {}: {what}", self.name))
        };
        match self.ty {
            Type::Boolean => {
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    return bad("expected true or false");
                }
            }
            Type::Int | Type::Long => {
                let n = match self.ty {
                    Type::Int => v.parse::<i32>().map(i64::from).ok(),
                    _ => v.parse::<i64>().ok(),
                };
                let Some(n) = n else {
                    return bad(if self.ty == Type::Int {
                        "not a 32-bit integer"
                    } else {
                        "not a 64-bit integer"
                    });
                };
                if let Some(min) = self.min
                    && n < min
                {
                    return bad(&format!("must be at least {min}"));
                }
            }
            Type::Double => {
                if !v.parse::<f64>().is_ok_and(|d| (0.0..=1.0).contains(&d)) {
                    return bad("expected a number between 0 and 1");
                }
            }
            Type::String => {
                if !self.choices.is_empty() && !self.choices.contains(&v) {
                    return bad(&format!("expected one of {}", self.choices.join(", ")));
                }
            }
            Type::List => {
                if !self.choices.is_empty() {
                    if list_items(v).next().is_none() {
                        return bad("expected at least one value");
                    }
                    if list_items(v).any(|item| !self.choices.contains(&item)) {
                        return bad(&format!("expected a list of {}", self.choices.join(", ")));
                    }
                }
            }
        }
        match (self.refuse)(v) {
            Some(why) => Err(format!("{}={value} is not supported: {why}", self.name)),
            None => Ok(()),
        }
    }
}

/// The elements of a list value, trimmed, without empty ones.
pub fn list_items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Why a config (or a change to one) is refused: the code and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ResponseError,
    pub message: String,
}

impl Refusal {
    fn config(message: String) -> Refusal {
        Refusal { code: ResponseError::InvalidConfig, message }
    }

    fn request(message: String) -> Refusal {
        Refusal { code: ResponseError::InvalidRequest, message }
    }
}

/// Longest config value accepted, in bytes. Kafka sets no limit, but every value is stored
/// in the filer; the longest real values (replica lists of throttled partitions) fit.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Check one config as a client set it: a known name with a value kelp honours. Returns the
/// value to store (trimmed).
pub fn check(name: &str, value: Option<&str>) -> Result<String, Refusal> {
    let def =
        known(name).ok_or_else(|| Refusal::config(format!("Unknown topic config name: {name}")))?;
    let value = value.ok_or_else(|| {
        Refusal::config(format!("Null value not supported for topic config: {name}"))
    })?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(Refusal::config(format!(
            "the value of {name} is longer than {MAX_VALUE_BYTES} bytes"
        )));
    }
    def.validate(value).map_err(Refusal::config)?;
    Ok(value.trim().to_string())
}

/// The configs a CreateTopics or AlterConfigs request sets as a whole: each checked, no name
/// twice.
pub fn check_all<'a>(
    configs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Configs, Refusal> {
    let mut out = Configs::new();
    for (name, value) in configs {
        if out.contains_key(name) {
            return Err(Refusal::request(format!("Duplicate config name: {name}")));
        }
        out.insert(name.to_string(), check(name, value)?);
    }
    Ok(out)
}

/// One IncrementalAlterConfigs operation (KIP-339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Delete,
    Append,
    Subtract,
}

impl Op {
    /// The operation for its wire code, `None` for codes Kafka does not define.
    pub fn from_code(code: i8) -> Option<Op> {
        match code {
            0 => Some(Op::Set),
            1 => Some(Op::Delete),
            2 => Some(Op::Append),
            3 => Some(Op::Subtract),
            _ => None,
        }
    }
}

/// Apply one incremental operation to `configs`; `broker_max` is `KELP_MAX_MESSAGE_BYTES` (the
/// default an APPEND starts from is needed for list configs only, but kept general).
pub fn apply(
    configs: &mut Configs,
    name: &str,
    op: Op,
    value: Option<&str>,
    broker_max: u32,
) -> Result<(), Refusal> {
    let def =
        known(name).ok_or_else(|| Refusal::config(format!("Unknown topic config name: {name}")))?;
    match op {
        Op::Set => {
            let v = check(name, value)?;
            configs.insert(name.to_string(), v);
        }
        Op::Delete => {
            configs.remove(name);
        }
        Op::Append | Op::Subtract => {
            if def.ty != Type::List {
                return Err(Refusal::config(format!(
                    "Config value append or subtract is not allowed for config key: {name}"
                )));
            }
            let value = value.ok_or_else(|| {
                Refusal::request(format!("Null value not supported for : {name}"))
            })?;
            let current =
                configs.get(name).cloned().unwrap_or_else(|| def.default_value(broker_max));
            let mut items: Vec<&str> = list_items(&current).collect();
            for item in list_items(value) {
                match op {
                    Op::Append if !items.contains(&item) => items.push(item),
                    Op::Subtract => items.retain(|i| *i != item),
                    _ => {}
                }
            }
            let joined = items.join(",");
            let v = check(name, Some(&joined))?;
            configs.insert(name.to_string(), v);
        }
    }
    Ok(())
}

/// One config as DescribeConfigs and CreateTopics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub def: &'static Def,
    pub value: String,
    pub source: i8,
    /// (name, value, source), most specific first (DescribeConfigs v1+ synonyms).
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// Every known config of a topic with `stored` configs: its value and where it comes from.
/// Stored names kelp does not know (written by a newer kelp) are left out.
pub fn describe(stored: &Configs, broker_max: u32) -> Vec<Described> {
    KNOWN
        .iter()
        .map(|def| {
            let default = (def.default_name(), def.default_value(broker_max), def.default_source());
            match stored.get(def.name) {
                Some(v) => Described {
                    def,
                    value: v.clone(),
                    source: source::DYNAMIC_TOPIC,
                    synonyms: vec![(def.name, v.clone(), source::DYNAMIC_TOPIC), default],
                },
                None => Described {
                    def,
                    value: default.1.clone(),
                    source: default.2,
                    synonyms: vec![default],
                },
            }
        })
        .collect()
}

impl PartialEq for Def {
    fn eq(&self, other: &Def) -> bool {
        self.name == other.name
    }
}

impl Eq for Def {}

/// The largest batch Produce accepts for a topic with `stored` configs. A stored value that
/// does not parse (written by hand) falls back to the broker's.
pub fn max_message_bytes(stored: &Configs, broker_max: u32) -> u32 {
    stored
        .get("max.message.bytes")
        .and_then(|v| v.trim().parse::<i32>().ok())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(broker_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_is_in_name_order_and_every_default_is_valid() {
        for w in KNOWN.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for d in KNOWN {
            let v = d.default_value(1_048_588);
            assert_eq!(d.validate(&v), Ok(()), "{} default {v:?}", d.name);
        }
    }

    #[test]
    fn unknown_names_and_bad_values_are_invalid_config() {
        let r = check("no.such.config", Some("1")).unwrap_err();
        assert_eq!(r.code, ResponseError::InvalidConfig);
        assert!(r.message.contains("Unknown topic config name"), "{}", r.message);
        for (name, value) in [
            ("max.message.bytes", "lots"),
            ("max.message.bytes", "-5"),
            ("max.message.bytes", "3000000000"),
            ("min.insync.replicas", "0"),
            ("preallocate", "yes"),
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("compression.type", "brotli"),
            ("min.cleanable.dirty.ratio", "2"),
            ("leader.replication.throttled.replicas", &"0:1,".repeat(5000)),
        ] {
            let r = check(name, Some(value)).unwrap_err();
            assert_eq!(r.code, ResponseError::InvalidConfig, "{name}={value}");
            assert!(r.message.contains(name), "{}", r.message);
        }
    }

    #[test]
    fn what_kelp_cannot_honour_is_refused_with_the_reason() {
        for (name, value, why) in [
            ("retention.ms", "86400000", "deletes nothing"),
            ("retention.bytes", "1073741824", "marker records"),
            ("cleanup.policy", "compact", "does not compact"),
            ("cleanup.policy", "delete,compact", "does not compact"),
            ("compression.type", "zstd", "recompress"),
            ("message.timestamp.type", "LogAppendTime", "LogAppendTime"),
            ("remote.storage.enable", "true", "tiered"),
        ] {
            let r = check(name, Some(value)).unwrap_err();
            assert_eq!(r.code, ResponseError::InvalidConfig, "{name}={value}");
            assert!(
                r.message.contains("not supported") && r.message.contains(why),
                "{}",
                r.message
            );
        }
        for (name, value) in [
            ("retention.ms", "-1"),
            ("retention.bytes", " -1 "),
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("segment.bytes", "1048576"),
            ("max.message.bytes", "2000"),
            ("preallocate", "TRUE"),
        ] {
            assert_eq!(check(name, Some(value)), Ok(value.trim().to_string()), "{name}");
        }
    }

    #[test]
    fn a_name_twice_is_an_invalid_request() {
        let r = check_all([("segment.ms", Some("1")), ("segment.ms", Some("2"))]).unwrap_err();
        assert_eq!(r.code, ResponseError::InvalidRequest);
    }

    #[test]
    fn incremental_operations() {
        let mut c = Configs::new();
        apply(&mut c, "max.message.bytes", Op::Set, Some("100"), 7).unwrap();
        assert_eq!(max_message_bytes(&c, 7), 100);
        apply(&mut c, "max.message.bytes", Op::Delete, None, 7).unwrap();
        assert_eq!(max_message_bytes(&c, 7), 7);
        let r = apply(&mut c, "max.message.bytes", Op::Append, Some("1"), 7).unwrap_err();
        assert_eq!(r.code, ResponseError::InvalidConfig);
        apply(&mut c, "leader.replication.throttled.replicas", Op::Append, Some("0:1"), 7).unwrap();
        apply(&mut c, "leader.replication.throttled.replicas", Op::Append, Some("0:2,0:1"), 7)
            .unwrap();
        assert_eq!(c["leader.replication.throttled.replicas"], "0:1,0:2");
        apply(&mut c, "leader.replication.throttled.replicas", Op::Subtract, Some("0:1"), 7)
            .unwrap();
        assert_eq!(c["leader.replication.throttled.replicas"], "0:2");
        let r = apply(&mut c, "cleanup.policy", Op::Append, Some("compact"), 7).unwrap_err();
        assert!(r.message.contains("compact"), "{}", r.message);
        let r = apply(&mut c, "cleanup.policy", Op::Subtract, Some("delete"), 7).unwrap_err();
        assert_eq!(r.code, ResponseError::InvalidConfig);
        assert!(apply(&mut c, "nope", Op::Delete, None, 7).is_err());
    }

    #[test]
    fn describe_reports_sources_and_synonyms() {
        let stored = Configs::from([("segment.ms".to_string(), "1000".to_string())]);
        let all = describe(&stored, 5000);
        assert_eq!(all.len(), KNOWN.len());
        let get = |n: &str| all.iter().find(|d| d.def.name == n).unwrap();
        assert_eq!(get("segment.ms").value, "1000");
        assert_eq!(get("segment.ms").source, source::DYNAMIC_TOPIC);
        assert_eq!(get("segment.ms").synonyms.len(), 2);
        assert_eq!(get("max.message.bytes").value, "5000");
        assert_eq!(get("max.message.bytes").source, source::STATIC_BROKER);
        assert_eq!(get("max.message.bytes").synonyms[0].0, BROKER_MAX_MESSAGE_BYTES);
        assert_eq!(get("retention.ms").source, source::DEFAULT);
        assert_eq!(get("retention.ms").value, "-1");
    }
}
