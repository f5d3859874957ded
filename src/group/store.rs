//! A group's last completed generation in the filer, as a small text file an operator can
//! read (`curl http://<filer>/kelp/groups/<group>/generation`), and the line format shared
//! with committed offsets (`group::offsets`).
//!
//! Owns: encoding and decoding a [`Snapshot`], reading and writing it at
//! `seaweed::layout::group_generation_path`. Does not own: when to write (the coordinator
//! writes before it answers SyncGroup) or what the fields mean (`group::state`).
//!
//! Format (docs/consumer-groups.md has the full description):
//! ```text
//! kelp-group-generation 1
//! generation 5
//! protocol_type consumer
//! protocol_name range
//! leader rdkafka-0c1d…
//! member rdkafka-0c1d…
//!   group_instance_id pod-1
//!   client_id rdkafka
//!   client_host /10.0.0.7
//!   session_timeout_ms 6000
//!   rebalance_timeout_ms 300000
//!   subscription 000100000001…
//!   assignment 000100000001…
//! ```
//! One `key value` per line; member fields are indented under their `member` line. Strings
//! are percent-escaped (bytes outside `!`..`~`, and `%`, become `%XX`), so a value never
//! contains a space or a newline; byte fields are lower-case hex; absent optional fields are
//! left out. Readers ignore keys they do not know, so fields can be added without a version
//! bump; the number on the first line changes only for incompatible changes.

use bytes::Bytes;

use super::state::{Snapshot, SnapshotMember};
use crate::error::Error;
use crate::seaweed::{Seaweed, layout};

/// First line of a generation file.
const GENERATION_HEADER: &str = "kelp-group-generation";
/// The format version this kelp writes and reads.
const GENERATION_VERSION: u32 = 1;

/// The stored generation of `group`; `Ok(None)` when none was ever stored.
pub async fn load(seaweed: &Seaweed, root: &str, group: &str) -> Result<Option<Snapshot>, Error> {
    let path = layout::group_generation_path(root, group);
    match seaweed.filer_get(&path).await? {
        None => Ok(None),
        Some(bytes) => {
            decode_snapshot(&bytes).map(Some).map_err(|why| Error::Corrupt { path, why })
        }
    }
}

/// Store `snapshot` as the group's generation (replacing the previous one).
pub async fn save(
    seaweed: &Seaweed,
    root: &str,
    group: &str,
    snapshot: &Snapshot,
) -> Result<(), Error> {
    seaweed
        .filer_put(
            &layout::group_generation_path(root, group),
            encode_snapshot(snapshot).as_bytes(),
        )
        .await
}

pub fn encode_snapshot(s: &Snapshot) -> String {
    let mut out = format!("{GENERATION_HEADER} {GENERATION_VERSION}\n");
    line(&mut out, "", "generation", &s.generation.to_string());
    if let Some(t) = &s.protocol_type {
        line(&mut out, "", "protocol_type", &escape(t));
    }
    if let Some(p) = &s.protocol_name {
        line(&mut out, "", "protocol_name", &escape(p));
    }
    if let Some(l) = &s.leader {
        line(&mut out, "", "leader", &escape(l));
    }
    for m in &s.members {
        line(&mut out, "", "member", &escape(&m.member_id));
        if let Some(i) = &m.group_instance_id {
            line(&mut out, "  ", "group_instance_id", &escape(i));
        }
        line(&mut out, "  ", "client_id", &escape(&m.client_id));
        line(&mut out, "  ", "client_host", &escape(&m.client_host));
        line(&mut out, "  ", "session_timeout_ms", &m.session_timeout_ms.to_string());
        line(&mut out, "  ", "rebalance_timeout_ms", &m.rebalance_timeout_ms.to_string());
        line(&mut out, "  ", "subscription", &hex(&m.subscription));
        line(&mut out, "  ", "assignment", &hex(&m.assignment));
    }
    out
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let mut lines = Lines::new(bytes, GENERATION_HEADER, GENERATION_VERSION)?;
    let mut s = Snapshot {
        generation: -1,
        protocol_type: None,
        protocol_name: None,
        leader: None,
        members: Vec::new(),
    };
    let mut generation = None;
    while let Some((indented, key, value)) = lines.next()? {
        if indented {
            let m = s
                .members
                .last_mut()
                .ok_or_else(|| format!("member field {key} before any member"))?;
            match key {
                "group_instance_id" => m.group_instance_id = Some(unescape(value)?),
                "client_id" => m.client_id = unescape(value)?,
                "client_host" => m.client_host = unescape(value)?,
                "session_timeout_ms" => m.session_timeout_ms = number(key, value)?,
                "rebalance_timeout_ms" => m.rebalance_timeout_ms = number(key, value)?,
                "subscription" => m.subscription = unhex(value)?,
                "assignment" => m.assignment = unhex(value)?,
                _ => {}
            }
            continue;
        }
        match key {
            "generation" => generation = Some(number(key, value)?),
            "protocol_type" => s.protocol_type = Some(unescape(value)?),
            "protocol_name" => s.protocol_name = Some(unescape(value)?),
            "leader" => s.leader = Some(unescape(value)?),
            "member" => s.members.push(SnapshotMember {
                member_id: unescape(value)?,
                group_instance_id: None,
                client_id: String::new(),
                client_host: String::new(),
                session_timeout_ms: 0,
                rebalance_timeout_ms: 0,
                subscription: Bytes::new(),
                assignment: Bytes::new(),
            }),
            _ => {}
        }
    }
    s.generation = generation.ok_or("no generation line")?;
    if let Some(m) = s.members.iter().find(|m| m.session_timeout_ms == 0) {
        return Err(format!("member {} has no session timeout", m.member_id));
    }
    Ok(s)
}

// === the line format ===

fn line(out: &mut String, indent: &str, key: &str, value: &str) {
    out.push_str(indent);
    out.push_str(key);
    if !value.is_empty() {
        out.push(' ');
        out.push_str(value);
    }
    out.push('\n');
}

/// Reads `[indent]key[ value]` lines after checking the header line.
pub(super) struct Lines<'a> {
    rest: std::str::Lines<'a>,
}

impl<'a> Lines<'a> {
    pub(super) fn new(bytes: &'a [u8], header: &str, version: u32) -> Result<Lines<'a>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut rest = text.lines();
        let first = rest.next().ok_or("empty")?;
        let (h, v) = first.split_once(' ').ok_or_else(|| format!("bad header line {first:?}"))?;
        if h != header {
            return Err(format!("expected header {header:?}, found {h:?}"));
        }
        let v: u32 = v.parse().map_err(|_| format!("bad format version {v:?}"))?;
        if v != version {
            return Err(format!(
                "format version {v}, this kelp reads {version} (written by a newer kelp?)"
            ));
        }
        Ok(Lines { rest })
    }

    /// The next `(indented, key, value)`, skipping blank lines.
    pub(super) fn next(&mut self) -> Result<Option<(bool, &'a str, &'a str)>, String> {
        for l in self.rest.by_ref() {
            if l.trim().is_empty() {
                continue;
            }
            let indented = l.starts_with(' ');
            let l = l.trim_start();
            let (key, value) = l.split_once(' ').unwrap_or((l, ""));
            return Ok(Some((indented, key, value)));
        }
        Ok(None)
    }
}

pub(super) fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{key}: not a number: {value:?}"))
}

/// Percent-escape every byte outside `!`..`~` and `%` itself.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("escaped value is not UTF-8: {s:?}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Bytes, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex ({} digits)", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad hex".to_string())
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            generation: 5,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: Some("rdkafka-1".into()),
            members: vec![
                SnapshotMember {
                    member_id: "rdkafka-1".into(),
                    group_instance_id: Some("pod 1%".into()),
                    client_id: "my app\nline".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 6000,
                    rebalance_timeout_ms: 300000,
                    subscription: Bytes::from_static(&[0, 1, 0xff]),
                    assignment: Bytes::new(),
                },
                SnapshotMember {
                    member_id: "rdkafka-2".into(),
                    group_instance_id: None,
                    client_id: String::new(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 10000,
                    rebalance_timeout_ms: 10000,
                    subscription: Bytes::new(),
                    assignment: Bytes::from_static(b"x"),
                },
            ],
        }
    }

    #[test]
    fn generation_file_is_golden() {
        assert_eq!(
            encode_snapshot(&sample()),
            "kelp-group-generation 1\n\
             generation 5\n\
             protocol_type consumer\n\
             protocol_name range\n\
             leader rdkafka-1\n\
             member rdkafka-1\n  group_instance_id pod%201%25\n  client_id my%20app%0Aline\n  client_host /127.0.0.1\n  \
             session_timeout_ms 6000\n  rebalance_timeout_ms 300000\n  subscription 0001ff\n  assignment\n\
             member rdkafka-2\n  client_id\n  client_host /127.0.0.1\n  session_timeout_ms 10000\n  \
             rebalance_timeout_ms 10000\n  subscription\n  assignment 78\n"
        );
    }

    #[test]
    fn generation_round_trips() {
        let s = sample();
        assert_eq!(decode_snapshot(encode_snapshot(&s).as_bytes()).unwrap(), s);
        let empty = Snapshot {
            generation: 9,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            leader: None,
            members: vec![],
        };
        assert_eq!(decode_snapshot(encode_snapshot(&empty).as_bytes()).unwrap(), empty);
    }

    #[test]
    fn unknown_keys_are_ignored_and_damage_is_reported() {
        let with_extra =
            encode_snapshot(&sample()).replace("generation 5\n", "generation 5\nfuture_field 1\n");
        assert_eq!(decode_snapshot(with_extra.as_bytes()).unwrap(), sample());
        for bad in [
            "",
            "kelp-group-generation 2\ngeneration 1\n",
            "something-else 1\n",
            "kelp-group-generation 1\n",
            "kelp-group-generation 1\ngeneration x\n",
            "kelp-group-generation 1\ngeneration 1\n  client_id a\n",
            "kelp-group-generation 1\ngeneration 1\nmember m\n  session_timeout_ms 1\n  subscription 0\n",
            "kelp-group-generation 1\ngeneration 1\nmember m\n",
        ] {
            assert!(decode_snapshot(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escaping_round_trips() {
        for s in ["", "plain", "a b", "100%", "ü\n\t", "%41"] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
            assert!(!escape(s).contains([' ', '\n']));
        }
    }
}
