//! librdkafka helpers shared by the integration tests.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A consumer (built from `config`) assigned partitions `0..partitions` of `topic` from the
/// beginning, with no group and no commits.
pub fn from_beginning(config: &ClientConfig, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Read partitions `0..partitions` of `topic` from the beginning, collecting the record values
/// (as UTF-8) until `done` says enough or 60 s pass.
pub fn read_values(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    done: impl Fn(&HashSet<String>) -> bool,
) -> HashSet<String> {
    let config = ClientConfig::new().set("bootstrap.servers", bootstrap).clone();
    let consumer = from_beginning(&config, topic, partitions);
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&seen) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(300)) {
            let m = m.expect("consume without error");
            seen.insert(
                String::from_utf8(m.payload().expect("a value").to_vec()).expect("utf-8 value"),
            );
        }
    }
    seen
}
