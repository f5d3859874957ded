//! Helpers shared by the integration tests: unique names, explicit polling with a patience
//! taken from the environment, one-time tracing setup, and the throw-away SeaweedFS.
//!
//! Every test binary compiles this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod clients;
pub mod kelp;
pub mod python;
pub mod raw;
pub mod seaweedfs;
pub mod wire;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Once;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use raw::create_topic_raw;
#[allow(unused_imports)]
pub use seaweedfs::seaweedfs;

/// Env var: how long polling helpers wait by default, in milliseconds. Raise it on a slow
/// machine instead of editing timeouts in tests.
pub const ENV_PATIENCE_MS: &str = "KELP_TEST_PATIENCE_MS";

/// Used when [`ENV_PATIENCE_MS`] is unset.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// Pause between two probes in [`wait_until`]; grows from the first to the last value.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);

/// How long to wait for something that should happen "soon": `$KELP_TEST_PATIENCE_MS`, or
/// 30 s. Panics on a value that is not a number of milliseconds.
pub fn patience() -> Duration {
    match std::env::var(ENV_PATIENCE_MS) {
        Ok(ms) => Duration::from_millis(ms.trim().parse().unwrap_or_else(|_| {
            panic!("{ENV_PATIENCE_MS}={ms:?} is not a number of milliseconds")
        })),
        Err(_) => DEFAULT_PATIENCE,
    }
}

/// `prefix` plus a random suffix: a topic or group name no other test (or earlier run
/// against the same SeaweedFS) uses. Only `[a-z0-9-]` is added, legal in any Kafka name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Installs a `fmt` subscriber writing through the test harness's capture, filtered by
/// `RUST_LOG` (default `info`). Safe to call from every test; only the first call counts,
/// and a subscriber installed by someone else first is left alone.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Calls `probe` until it returns `Ok`, and returns that value. Panics after `deadline`
/// with the last error. A probe that hangs is cut off at the deadline too.
///
/// Use it instead of a bare `sleep`: `wait_until(patience(), || async { ... }).await`.
pub async fn wait_until<T, E, F, Fut>(deadline: Duration, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut pause = FIRST_POLL;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_sub(start.elapsed());
        let last = match tokio::time::timeout(left, probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => format!("{e:?}"),
            Err(_) => "the probe itself did not finish".to_string(),
        };
        if start.elapsed() >= deadline {
            panic!("still failing after {tries} tries in {:?}: {last}", start.elapsed());
        }
        tokio::time::sleep(pause.min(deadline.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// [`wait_until`] with the default [`patience`].
pub async fn eventually<T, E, F, Fut>(probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    wait_until(patience(), probe).await
}
