//! One `weed` child process: spawning it with its output in a log file, and stopping it
//! (SIGTERM, a grace period, then SIGKILL), from async code or from `Drop`.
//!
//! Owns the signals and the waiting. Does not own which processes run or when (the parent
//! module), their command lines (`args`), nor reading their logs back (`logs`).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a child gets between SIGTERM and SIGKILL. Long enough for the broker (20 ms to
/// 2 s) and for `weed server` when it stops promptly; shorter than the filer's 15 s stall,
/// which is not worth waiting for since the data is thrown away.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Pause between checks whether a signalled child has exited: short next to the millisecond
/// stops that are the common case, long enough not to spin.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// util-linux's `setpriv`, which execs the child with a parent-death signal: a `weed` started
/// through it is SIGKILLed by the kernel when kelp ends, however it ends (abort, SIGKILL),
/// not only when kelp stops it. Without it (not on PATH) children are spawned directly and
/// only a clean exit stops them.
const SETPRIV: &str = "setpriv";

/// Whether [`SETPRIV`] runs here; looked up once.
fn setpriv_available() -> bool {
    static AVAILABLE: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        Command::new(SETPRIV)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    *AVAILABLE
}

/// Spawns `weed <args>` in `dir`, with stdout and stderr appended to `dir/log`; the child
/// dies with kelp (see [`SETPRIV`]). The kernel signals on the death of the spawning
/// *thread*, so this is called from the runtime's long-lived threads, never from a blocking
/// pool thread that may retire while the child runs.
pub(super) fn spawn(weed: &Path, dir: &Path, log: &str, args: &[String]) -> anyhow::Result<Child> {
    let path = dir.join(log);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let stderr = file.try_clone().context("duplicating a log file handle")?;
    let mut command = if setpriv_available() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--"]).arg(weed);
        c
    } else {
        Command::new(weed)
    };
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawning {} {}", weed.display(), args.join(" ")))
}

/// Sends SIGTERM to `child` unless it has already exited.
pub(super) fn sigterm(child: &mut Child) -> anyhow::Result<()> {
    // Signal only a child that has not been reaped, so its pid cannot have been reused.
    if child.try_wait()?.is_none() {
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("kill(SIGTERM)")?;
    }
    Ok(())
}

/// Waits (blocking) for `child` until `deadline`, then SIGKILLs and reaps it.
pub(super) fn reap_by(child: &mut Child, deadline: Instant) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(EXIT_POLL_INTERVAL);
    }
}

/// SIGTERM, then SIGKILL after `grace`, without blocking the runtime.
pub(super) async fn stop_async(child: &mut Child, grace: Duration) -> anyhow::Result<ExitStatus> {
    sigterm(child)?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        tokio::time::sleep(EXIT_POLL_INTERVAL).await;
    }
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    child.kill()?;
    // SIGKILL cannot be caught, so this wait is short.
    Ok(child.wait()?)
}
