//! Kafka's rule for legal topic names: the one copy. Kafka handlers apply it to what clients
//! send, and `seaweed::layout` applies it to tell kelp's MQ topics from others.

/// Kafka's longest legal topic name.
pub const MAX_LEN: usize = 249;

/// 1-249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        let longest = "x".repeat(MAX_LEN);
        for ok in ["a", "orders.v1", "A_b-c.9", "__consumer_offsets", "...", &longest] {
            assert!(is_valid(ok), "{ok}");
        }
        let too_long = "x".repeat(MAX_LEN + 1);
        for bad in ["", ".", "..", "a b", "a/b", "a~1", "ü", "é", &too_long] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert_eq!(MAX_LEN, 249);
    }
}
