//! Where every Kafka thing lives in SeaweedFS: MQ topic names, the partition ring, the marker
//! records at the head of each partition, and kelp's own filer paths. Nothing else in kelp
//! builds one of these names or paths.
//!
//! Owns: the names, paths and marker values, as pure functions and constants. Does not own:
//! Kafka's rule for legal topic names (`protocol::topic_name`, which this module applies) or
//! any call to SeaweedFS.
//!
//! Everything here ends up persisted (topic directories, filer entries, marker records), so
//! the golden strings in the tests below are a contract: change one only together with a
//! migration for data written by older kelps.

/// Root of kelp's own entries in the filer unless configured otherwise.
pub const DEFAULT_FILER_ROOT: &str = "/kelp";

/// Where SeaweedFS MQ keeps topics: `/topics/<namespace>/<topic>/` holds `topic.conf` and one
/// `v<generation>/<start>-<stop>/` directory of log files per partition.
pub const MQ_TOPICS_DIR: &str = "/topics";

/// The file whose presence makes a directory under [`MQ_TOPICS_DIR`] a live topic.
pub const MQ_TOPIC_CONF: &str = "topic.conf";

/// The MQ topic kelp's readiness probe configures (in a namespace of its own, so it never
/// shows among Kafka topics): a broker answers topic configuration only some seconds after it
/// answers everything else, and kelp is ready only when that works.
pub const HEALTH_NAMESPACE: &str = "kelp-health";
pub const HEALTH_TOPIC: &str = "probe";

/// Size of the MQ partition ring (`pub_balancer.MaxPartitionCount` upstream, 8·9·5·7).
pub const RING_SIZE: i32 = 2520;

/// Most partitions a topic can have: each needs a non-empty slice of the ring.
pub const MAX_PARTITIONS: u32 = RING_SIZE as u32;

/// Separates a Kafka topic name from its incarnation number in an MQ topic name. It is not a
/// legal Kafka topic character, so the mapping stays injective.
pub const INCARNATION_SEP: char = '~';

// === MQ topic names ===

/// The MQ topic that holds incarnation `incarnation` of Kafka topic `topic`.
///
/// SeaweedFS 4.48 accepts every legal Kafka name as an MQ topic name (checked against the
/// server: `.`/`_`/`-` anywhere, upper case, the longest legal length), so the first incarnation uses the
/// Kafka name unchanged and topics made by other SeaweedFS clients are served as they are.
///
/// Why incarnations: a running broker keeps a partition's offsets and buffered records in
/// memory keyed by topic name and ring slice, not by generation. Deleting a topic's
/// directory and creating the same name again would hand the new topic the old topic's
/// offsets and, through `FetchMessage`, its old records. So a Kafka topic that is deleted and
/// created again gets a new MQ name, `<topic>~<n>`, with `n` one more than any incarnation
/// whose directory still exists (deleted incarnations keep an empty directory as a tombstone).
pub fn mq_topic_name(topic: &str, incarnation: u32) -> String {
    if incarnation == 0 {
        topic.to_string()
    } else {
        format!("{topic}{INCARNATION_SEP}{incarnation}")
    }
}

/// The inverse of [`mq_topic_name`]: `Some((kafka_topic, incarnation))` for names kelp could
/// have made, `None` for other MQ names (which kelp does not serve as Kafka topics).
pub fn parse_mq_topic_name(name: &str) -> Option<(&str, u32)> {
    let (topic, incarnation) = match name.rsplit_once(INCARNATION_SEP) {
        None => (name, 0),
        Some((topic, n)) => {
            // Canonical decimal only (no sign, no leading zero, not 0), so each MQ name has
            // one parse and `mq_topic_name` gives it back.
            if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (topic, n.parse().ok()?)
        }
    };
    crate::protocol::topic_name::is_valid(topic).then_some((topic, incarnation))
}

/// `/topics/<namespace>`: the directory holding every MQ topic of a namespace.
pub fn mq_namespace_dir(namespace: &str) -> String {
    format!("{MQ_TOPICS_DIR}/{namespace}")
}

/// `/topics/<namespace>/<mq topic>`.
pub fn mq_topic_dir(namespace: &str, mq_topic: &str) -> String {
    format!("{MQ_TOPICS_DIR}/{namespace}/{mq_topic}")
}

/// `/topics/<namespace>/<mq topic>/v<generation>/<start>-<stop>`: where the broker flushes
/// one partition's log files (`topic.PartitionDir` in SeaweedFS). The generation is the
/// partition's `unix_time_ns` as a UTC time to the second (`v2006-01-02-15-04-05`), the
/// range its ring slice with four digits each.
pub fn mq_partition_dir(
    namespace: &str,
    mq_topic: &str,
    unix_time_ns: i64,
    range_start: i32,
    range_stop: i32,
) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(unix_time_ns.div_euclid(1_000_000_000));
    format!(
        "{}/v{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}/{range_start:04}-{range_stop:04}",
        mq_topic_dir(namespace, mq_topic)
    )
}

/// Extended attribute of a flushed log file holding the highest offset in it (8 bytes, big
/// endian; `mq.ExtendedAttrOffsetMax`). The broker leaves it out for a file whose lowest
/// offset is 0, which in kelp's partitions holds only the first marker.
pub const LOG_FILE_OFFSET_MAX: &str = "offset_max";

/// Name of the entry in a partition's log directory holding the last offset the broker
/// assigned (8 bytes, big endian, inline), which a restarted broker continues from.
pub const PARTITION_CHECKPOINT: &str = "checkpoint.offset";

/// Year, month, day, hour, minute, second of a Unix time in seconds, in UTC (proleptic
/// Gregorian; the days-to-civil algorithm of H. Hinnant's `chrono`-compatible date notes).
fn utc_fields(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

// === the partition ring ===

/// The ring slices SeaweedFS allocates for `count` partitions, in ring order: equal slices of
/// `RING_SIZE / count`, the last one running to the end of the ring (as
/// `pub_balancer.AllocateTopicPartitions` does). Kafka partition `p` is slice `p`.
pub fn ring_slices(count: u32) -> Vec<(i32, i32)> {
    assert!((1..=MAX_PARTITIONS).contains(&count), "partition count {count} out of range");
    let count = count as i32;
    let size = RING_SIZE / count;
    (0..count)
        .map(|i| (i * size, if i == count - 1 { RING_SIZE } else { (i + 1) * size }))
        .collect()
}

/// Order a topic's ring slices `(ring_size, start, stop)` as Kafka partitions 0..n: sorted by
/// start, which must tile the whole ring without gaps or overlaps. Every kelp sorts the same
/// topic configuration the same way, so they all agree on which slice is partition `p`
/// whatever order the broker listed them in. Returns the permutation (indices into `slices`).
pub fn kafka_partition_order(slices: &[(i32, i32, i32)]) -> Result<Vec<usize>, String> {
    if slices.is_empty() {
        return Err("topic has no partitions".into());
    }
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by_key(|&i| (slices[i].1, slices[i].2));
    let ring = slices[order[0]].0;
    let mut next = 0;
    for &i in &order {
        let (ring_size, start, stop) = slices[i];
        if ring_size != ring {
            return Err(format!("mixed ring sizes {ring} and {ring_size}"));
        }
        if start != next || stop <= start {
            return Err(format!("slice {start}-{stop} does not continue the ring at {next}"));
        }
        next = stop;
    }
    if next != ring {
        return Err(format!("slices end at {next}, short of the ring size {ring}"));
    }
    Ok(order)
}

// === partition markers ===

/// Value of the marker records kelp writes at the head of every partition it creates (key
/// empty). [`crate::seaweed::Seaweed::fetch`] never returns them; they only take up offsets
/// (normally 0 and 1, so a kelp-created partition's first Kafka record is at offset 2).
///
/// Why: when a broker flushes a log file whose first offset is 0 it stores no offset range
/// for it, and when it later reloads the partition (after its last publisher left, or after a
/// restart) it computes the high-water mark from those ranges only. A partition whose data
/// all sat in that first file then reads as empty through `FetchMessage`, although every
/// record was acknowledged and is on disk (SeaweedFS 4.48, reproduced here). Two markers with
/// timestamps an hour apart in 1970 make the broker flush the first one alone, so every file
/// holding real records carries its offset range and the reload finds them.
pub const PARTITION_MARKER: &[u8] = b"\0kelp/partition-marker/1";

/// Timestamps of the two marker records, in nanoseconds since the epoch.
pub const PARTITION_MARKER_TS_NS: [i64; 2] = [1, 3_600_000_000_000];

/// Whether a stored record is one of kelp's partition markers.
pub fn is_partition_marker(key: &[u8], value: &[u8]) -> bool {
    key.is_empty() && value == PARTITION_MARKER
}

// === kelp's own filer entries ===

/// One path segment for an arbitrary string (a group id can be any string, even `/` or
/// empty): bytes outside `[A-Za-z0-9._-]` become `%XX` (upper-case hex), a segment made only
/// of dots has every dot escaped (so `.` and `..` stay ordinary names), and the empty string
/// becomes `%`. The mapping is injective and leaves legal Kafka topic names unchanged.
pub fn path_segment(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let only_dots = s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain =
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !only_dots);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<root>/groups/<group>`: everything kelp stores about one consumer group.
pub fn group_path(root: &str, group: &str) -> String {
    format!("{}/groups/{}", root.trim_end_matches('/'), path_segment(group))
}

/// `<root>/groups/<group>/offsets/<topic>/<partition>`: a group's committed offset for one
/// partition.
pub fn offsets_path(root: &str, group: &str, topic: &str, partition: u32) -> String {
    format!("{}/offsets/{}/{partition}", group_path(root, group), path_segment(topic))
}

/// `<root>/groups`: one directory per consumer group, named by [`path_segment`] of its id.
pub fn groups_dir(root: &str) -> String {
    format!("{}/groups", root.trim_end_matches('/'))
}

/// `<root>/groups/<group>/generation`: the group's last completed generation (protocol,
/// leader, members with their assignments), in the text format of `group::store`.
pub fn group_generation_path(root: &str, group: &str) -> String {
    format!("{}/generation", group_path(root, group))
}

/// `<root>/groups/<group>/offsets`: every committed offset of a group.
pub fn group_offsets_dir(root: &str, group: &str) -> String {
    format!("{}/offsets", group_path(root, group))
}

/// `<root>/groups/<group>/offsets/<topic>`: a group's committed offsets for one topic, one
/// file per partition (see [`offsets_path`]).
pub fn topic_offsets_dir(root: &str, group: &str, topic: &str) -> String {
    format!("{}/{}", group_offsets_dir(root, group), path_segment(topic))
}

/// `<root>/groups/<group>#owner`: the name of the lock in the filer's lock manager whose
/// holder owns the group (runs its state machine; DESIGN.md "Consumer groups across
/// sidecars"). A lock name, not a filer entry: nothing is stored at that path. It is built
/// from the group's path so kelps with different filer roots never contend, and `#` cannot
/// occur in a [`path_segment`], so no group's name can collide with another's lock.
pub fn group_owner_lock(root: &str, group: &str) -> String {
    format!("{}#owner", group_path(root, group))
}

/// `<root>/partitions/<topic>/<partition>#writer`: the name of the lock in the filer's lock
/// manager whose holder writes the partition (the one kelp that publishes into it; DESIGN.md
/// "Writing a partition from many sidecars"). A lock name, not a filer entry, built like
/// [`group_owner_lock`].
pub fn partition_writer_lock(root: &str, topic: &str, partition: i32) -> String {
    format!("{}/partitions/{}/{partition}#writer", root.trim_end_matches('/'), path_segment(topic))
}

/// `<root>/producer-ids/next`: the next block of producer ids to try claiming, as decimal
/// text (`producer_ids`; only a hint, the claims decide).
pub fn producer_id_counter(root: &str) -> String {
    format!("{}/producer-ids/next", root.trim_end_matches('/'))
}

/// `<root>/producer-ids/blocks/<block>`: created (empty, never deleted) by the kelp that owns
/// block `block` of producer ids (`producer_ids`).
pub fn producer_id_block(root: &str, block: i64) -> String {
    format!("{}/producer-ids/blocks/{block}", root.trim_end_matches('/'))
}

/// The string a name written by [`path_segment`] stands for; `None` for a name that
/// `path_segment` would not have produced (so listing a directory never yields two names for
/// one string).
pub fn parse_path_segment(segment: &str) -> Option<String> {
    if segment == "%" {
        return Some(String::new());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (path_segment(&s) == segment).then_some(s)
}

// === client quotas ===

/// Stands for "the default" of an entity type in a quota entity's file name. `path_segment`
/// never writes it (its escapes use upper-case hex), so it cannot clash with a real name.
pub const QUOTA_DEFAULT_SEGMENT: &str = "%default";

/// `<root>/quotas`: one file per client-quota entity set through AlterClientQuotas.
pub fn quotas_dir(root: &str) -> String {
    format!("{}/quotas", root.trim_end_matches('/'))
}

/// The file name of a client-quota entity: `user=<u>`, `client-id=<c>` or
/// `user=<u>,client-id=<c>`. Each side is `None` when the entity lacks it, `Some(None)` for
/// the default, `Some(Some(name))` for a name (written with [`path_segment`]).
pub fn quota_entity_name(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> String {
    let side =
        |name: Option<&str>| name.map_or_else(|| QUOTA_DEFAULT_SEGMENT.to_string(), path_segment);
    let mut parts = Vec::with_capacity(2);
    if let Some(u) = user {
        parts.push(format!("user={}", side(u)));
    }
    if let Some(c) = client_id {
        parts.push(format!("client-id={}", side(c)));
    }
    parts.join(",")
}

/// A quota entity as written by [`quota_entity_name`]: (user, client id), each side as there.
/// `None` for names kelp did not write.
#[allow(clippy::type_complexity)]
pub fn parse_quota_entity_name(
    name: &str,
) -> Option<(Option<Option<String>>, Option<Option<String>>)> {
    let side = |s: &str| -> Option<Option<String>> {
        if s == QUOTA_DEFAULT_SEGMENT { Some(None) } else { parse_path_segment(s).map(Some) }
    };
    let (user, client_id) = match name.split_once(',') {
        Some((u, c)) => (Some(u.strip_prefix("user=")?), Some(c.strip_prefix("client-id=")?)),
        None => match name.strip_prefix("user=") {
            Some(u) => (Some(u), None),
            None => (None, Some(name.strip_prefix("client-id=")?)),
        },
    };
    let parsed = (
        user.map(side).map_or(Some(None), |s| s.map(Some))?,
        client_id.map(side).map_or(Some(None), |s| s.map(Some))?,
    );
    (quota_entity_name(
        parsed.0.as_ref().map(Option::as_deref),
        parsed.1.as_ref().map(Option::as_deref),
    ) == name)
        .then_some(parsed)
}

/// `<root>/quotas/<entity>`: the quotas set on one entity through AlterClientQuotas, as a
/// JSON object of quota key to value.
pub fn quota_entity_path(
    root: &str,
    user: Option<Option<&str>>,
    client_id: Option<Option<&str>>,
) -> String {
    format!("{}/{}", quotas_dir(root), quota_entity_name(user, client_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_paths_are_golden() {
        assert_eq!(quotas_dir("/kelp/"), "/kelp/quotas");
        assert_eq!(
            quota_entity_path("/kelp", None, Some(Some("app-1"))),
            "/kelp/quotas/client-id=app-1"
        );
        assert_eq!(quota_entity_path("/kelp", Some(None), None), "/kelp/quotas/user=%default");
        assert_eq!(
            quota_entity_name(Some(Some("CN=a,O=b")), Some(None)),
            "user=CN%3Da%2CO%3Db,client-id=%default"
        );
        for (u, c) in [
            (None, Some(Some("app"))),
            (Some(None), None),
            (Some(Some("alice")), Some(None)),
            (Some(Some("")), Some(Some("%default"))),
            (Some(Some("a,client-id=b")), None),
        ] {
            let name = quota_entity_name(u, c);
            let owned = |x: Option<Option<&str>>| x.map(|n| n.map(str::to_string));
            assert_eq!(parse_quota_entity_name(&name), Some((owned(u), owned(c))), "{name}");
        }
        for foreign in
            ["", "user=", "client-id=a,user=b", "user=a,", "group=x", "user=%Default", "user=a b"]
        {
            assert_eq!(parse_quota_entity_name(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn mq_names_are_golden() {
        assert_eq!(mq_topic_name("orders", 0), "orders");
        assert_eq!(mq_topic_name("orders", 1), "orders~1");
        assert_eq!(mq_topic_name("a.b-c_D", 12), "a.b-c_D~12");
        assert_eq!(mq_namespace_dir("kafka"), "/topics/kafka");
        assert_eq!(mq_topic_dir("kafka", "orders~1"), "/topics/kafka/orders~1");
    }

    #[test]
    fn partition_dirs_are_golden() {
        // Seen in a 4.48 filer: a partition generated at 2026-12-07 22:53:35 UTC.
        let ns = 1_796_684_015_123_456_789;
        assert_eq!(
            mq_partition_dir("kafka", "t1", ns, 0, 2520),
            "/topics/kafka/t1/v2026-12-07-22-53-35/0000-2520"
        );
        assert_eq!(
            mq_partition_dir("kafka", "t", 951_782_400_000_000_000, 1260, 2520),
            "/topics/kafka/t/v2000-02-29-00-00-00/1260-2520"
        );
        assert_eq!(
            mq_partition_dir("k", "t", 0, 5, 63),
            "/topics/k/t/v1970-01-01-00-00-00/0005-0063"
        );
        assert_eq!(utc_fields(-1), (1969, 12, 31, 23, 59, 59));
    }

    #[test]
    fn mq_names_round_trip_and_reject_foreign_names() {
        for (topic, n) in [
            ("orders", 0),
            ("orders", 7),
            ("...", 3),
            ("x".repeat(crate::protocol::topic_name::MAX_LEN).as_str(), 99_999),
        ] {
            let name = mq_topic_name(topic, n);
            assert_eq!(parse_mq_topic_name(&name), Some((topic, n)), "{name}");
        }
        for foreign in [
            "orders~0",
            "orders~01",
            "orders~",
            "orders~-1",
            "orders~x",
            "a b",
            "",
            ".",
            "~1",
            "x~1~2",
        ] {
            assert_eq!(parse_mq_topic_name(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn ring_slices_match_the_broker_allocation() {
        assert_eq!(ring_slices(1), vec![(0, 2520)]);
        assert_eq!(ring_slices(3), vec![(0, 840), (840, 1680), (1680, 2520)]);
        // 2520 / 7 = 360 exactly; 2520 / 11 = 229 with the remainder in the last slice.
        assert_eq!(ring_slices(11).last(), Some(&(2290, 2520)));
        assert_eq!(ring_slices(MAX_PARTITIONS).len(), 2520);
        for n in [1, 2, 5, 11, 100, 1000, 2519, 2520] {
            let slices: Vec<_> =
                ring_slices(n).into_iter().map(|(a, b)| (RING_SIZE, a, b)).collect();
            assert_eq!(
                kafka_partition_order(&slices).unwrap(),
                (0..n as usize).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn partition_order_follows_the_ring_not_the_listing() {
        let listed = [(2520, 1680, 2520), (2520, 0, 840), (2520, 840, 1680)];
        assert_eq!(kafka_partition_order(&listed).unwrap(), vec![1, 2, 0]);
    }

    #[test]
    fn broken_tilings_are_rejected() {
        assert!(kafka_partition_order(&[]).is_err());
        assert!(kafka_partition_order(&[(2520, 0, 1000)]).is_err(), "short of the ring");
        assert!(kafka_partition_order(&[(2520, 0, 1000), (2520, 999, 2520)]).is_err(), "overlap");
        assert!(kafka_partition_order(&[(2520, 0, 1000), (2520, 1001, 2520)]).is_err(), "gap");
        assert!(
            kafka_partition_order(&[(2520, 0, 1260), (4096, 1260, 2520)]).is_err(),
            "mixed rings"
        );
    }

    #[test]
    fn markers_are_recognised_only_exactly() {
        assert!(is_partition_marker(b"", PARTITION_MARKER));
        assert!(!is_partition_marker(b"k", PARTITION_MARKER));
        assert!(!is_partition_marker(b"", b"\0kelp/partition-marker/2"));
        assert_eq!(PARTITION_MARKER, b"\0kelp/partition-marker/1");
    }

    #[test]
    fn filer_paths_are_golden() {
        assert_eq!(DEFAULT_FILER_ROOT, "/kelp");
        assert_eq!(group_path("/kelp", "my-group"), "/kelp/groups/my-group");
        assert_eq!(group_path("/kelp/", "a/b c"), "/kelp/groups/a%2Fb%20c");
        assert_eq!(offsets_path("/kelp", "g1", "orders", 3), "/kelp/groups/g1/offsets/orders/3");
        assert_eq!(offsets_path("/r", "", "t.x", 0), "/r/groups/%/offsets/t.x/0");
        assert_eq!(producer_id_counter("/kelp/"), "/kelp/producer-ids/next");
        assert_eq!(producer_id_block("/kelp", 42), "/kelp/producer-ids/blocks/42");
    }

    #[test]
    fn path_segments_are_injective_on_tricky_inputs() {
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("a.b"), "a.b");
        assert_eq!(path_segment("%"), "%25");
        assert_eq!(path_segment("ü"), "%C3%BC");
        let inputs = ["", "%", "%25", ".", "..", "%2E", "a/b", "a%2Fb", "a b", "a+b", "ü", "Ü"];
        let mut seen = std::collections::HashSet::new();
        for s in inputs {
            assert!(seen.insert(path_segment(s)), "{s:?} collides");
            assert!(!path_segment(s).contains('/'));
        }
    }

    #[test]
    fn group_paths_are_golden() {
        assert_eq!(groups_dir("/kelp"), "/kelp/groups");
        assert_eq!(groups_dir("/kelp/"), "/kelp/groups");
        assert_eq!(group_generation_path("/kelp", "my-group"), "/kelp/groups/my-group/generation");
        assert_eq!(group_generation_path("/kelp", "a/b"), "/kelp/groups/a%2Fb/generation");
        assert_eq!(group_offsets_dir("/kelp", "g1"), "/kelp/groups/g1/offsets");
        assert_eq!(topic_offsets_dir("/kelp", "g1", "orders"), "/kelp/groups/g1/offsets/orders");
        assert_eq!(group_owner_lock("/kelp", "my-group"), "/kelp/groups/my-group#owner");
        assert_eq!(group_owner_lock("/kelp/", "a#b"), "/kelp/groups/a%23b#owner");
        assert_eq!(
            partition_writer_lock("/kelp/", "orders", 3),
            "/kelp/partitions/orders/3#writer"
        );
        // The per-partition file lives in the topic directory.
        assert!(
            offsets_path("/kelp", "g1", "orders", 3)
                .starts_with(&topic_offsets_dir("/kelp", "g1", "orders"))
        );
    }

    #[test]
    fn path_segments_parse_back_and_foreign_names_are_refused() {
        for s in [
            "",
            "%",
            "%25",
            ".",
            "..",
            "%2E",
            "a/b",
            "a%2Fb",
            "a b",
            "a+b",
            "ü",
            "Ü",
            "my.group-1_x",
        ] {
            assert_eq!(parse_path_segment(&path_segment(s)).as_deref(), Some(s), "{s:?}");
        }
        for foreign in ["%2", "%zz", "a%2eb", "%61", "a b", ".", "%FF"] {
            assert_eq!(parse_path_segment(foreign), None, "{foreign:?}");
        }
    }
}
