//! The two log files in the instance's dir and the tails of them that error messages and
//! failing tests print.
//!
//! Owns the file names and how much of each is shown. Does not own writing them: a child's
//! stdout and stderr go straight to its file (`process`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Log of `weed server` (master, volume server and filer), in the instance's dir.
pub(super) const SERVER_LOG: &str = "server.log";

/// Log of `weed mq.broker`, in the instance's dir; a restarted broker appends to it.
pub(super) const BROKER_LOG: &str = "broker.log";

/// How many log lines of each process an error message carries.
const LOG_TAIL_LINES: usize = 30;

/// How much of the end of a log is read to find those lines: far more than
/// [`LOG_TAIL_LINES`] lines of `weed`'s output, without reading a long log whole.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The last lines of `path` under a header naming the process, or why it could not be read.
pub(super) fn section(path: &Path, name: &str) -> String {
    let tail = read_tail(path, LOG_TAIL_BYTES)
        .map(|text| last_lines(&text, LOG_TAIL_LINES))
        .unwrap_or_else(|e| format!("(cannot read: {e})"));
    format!("--- {name}: last {LOG_TAIL_LINES} lines of {} ---\n{tail}", path.display())
}

/// The last `max` bytes of a file, lossily decoded.
fn read_tail(path: &Path, max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }
}
