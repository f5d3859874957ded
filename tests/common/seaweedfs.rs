//! The real SeaweedFS every integration test runs against: one throw-away instance per test
//! (`weed server` + `weed mq.broker` on free loopback ports), from `kelp::embedded`.

use std::time::Duration;

pub use kelp::embedded::SeaweedFs;

/// How long a test waits for SeaweedFS to come up (about 3 s on an idle 2-core machine).
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Starts a throw-away SeaweedFS and waits until its master, filer and broker are up.
/// Panics with the reason and the processes' last log lines when it cannot: a missing
/// `weed` is a test failure, not a skip.
pub async fn seaweedfs() -> SeaweedFs {
    super::init_tracing();
    match SeaweedFs::start(START_DEADLINE).await {
        Ok(fs) => fs,
        Err(e) => panic!(
            "the test SeaweedFS did not start (scripts/install-deps.sh installs `weed`; \
             KELP_WEED_BIN overrides where it is looked for):\n{e:#}"
        ),
    }
}
