//! Re-reading a settings file when it changes (the quotas file, the SASL users file).
//!
//! Kubernetes updates a mounted ConfigMap or Secret by swapping a symlink, which can leave the
//! modification time of the path unchanged; so each poll reads the (small) file and compares
//! its bytes with what was last applied. A file that cannot be read or parsed keeps the rules
//! in force, with one warning per distinct change.

use std::path::PathBuf;
use std::time::Duration;

use tracing::{Instrument, info_span, warn};

use crate::shutdown::CancellationToken;

/// Poll `path` every `every` until `cancel`; call `apply` with the text whenever the bytes
/// differ from the last ones seen (`applied` is what the caller already loaded). `apply`
/// returns why it refused the text; the previous state then stays.
pub async fn poll<F>(
    path: PathBuf,
    every: Duration,
    applied: Vec<u8>,
    cancel: CancellationToken,
    what: &'static str,
    mut apply: F,
) where
    F: FnMut(&str) -> Result<(), String> + Send + 'static,
{
    let span = info_span!("watch", file = %path.display(), what);
    async move {
        let mut seen = Ok(applied);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::fs::read(&path).await.map_err(|e| e.kind());
            if now == seen {
                continue;
            }
            match &now {
                Err(kind) => {
                    warn!(error = %kind, "cannot read the file; keeping the rules in force")
                }
                Ok(bytes) => match std::str::from_utf8(bytes) {
                    Err(_) => warn!("the file is not UTF-8; keeping the rules in force"),
                    Ok(text) => {
                        if let Err(why) = apply(text) {
                            warn!(error = %why, "invalid file; keeping the rules in force");
                        }
                    }
                },
            }
            seen = now;
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::quota::rules::{Kind, Rules};

    /// The quotas file as kelp follows it: a valid change applies, an invalid one leaves the
    /// previous rules in force, and the next valid one applies again.
    #[tokio::test]
    async fn reload_applies_valid_versions_and_keeps_the_old_rules_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.yaml");
        let first = "quotas:\n  - client-id: a\n    request_rate: 1\n";
        std::fs::write(&path, first).unwrap();
        let rules = Arc::new(Mutex::new(Rules::parse_file(first).unwrap()));
        let cancel = CancellationToken::new();
        let shared = rules.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let task = tokio::spawn(poll(
            path.clone(),
            Duration::from_millis(10),
            first.as_bytes().to_vec(),
            cancel.clone(),
            "quotas",
            move |text| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *shared.lock() = Rules::parse_file(text)?;
                Ok(())
            },
        ));
        let rate = |rules: &Mutex<Rules>| {
            rules.lock().iter().next().and_then(|(_, l)| l.get(Kind::Request))
        };
        // Wait (bounded) until the watcher has handed over one more version of the file.
        let handed_over = |before: usize| {
            let calls = calls.clone();
            async move {
                for _ in 0..1000 {
                    if calls.load(std::sync::atomic::Ordering::SeqCst) > before {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the watcher did not pick up the change within 10 s");
            }
        };
        let count = || calls.load(std::sync::atomic::Ordering::SeqCst);

        let n = count();
        std::fs::write(&path, "quotas:\n  - client-id: a\n    request_rate: 2\n").unwrap();
        handed_over(n).await;
        assert_eq!(rate(&rules), Some(2.0));
        let n = count();
        std::fs::write(&path, "quotas:\n  - client-id: a\n    request_rate: -2\n").unwrap();
        handed_over(n).await;
        assert_eq!(rate(&rules), Some(2.0), "invalid version ignored");
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rate(&rules), Some(2.0), "missing file ignored");
        let n = count();
        std::fs::write(&path, "quotas:\n  - client-id: a\n    request_rate: 3\n").unwrap();
        handed_over(n).await;
        assert_eq!(rate(&rules), Some(3.0));
        cancel.cancel();
        task.await.unwrap();
    }
}
