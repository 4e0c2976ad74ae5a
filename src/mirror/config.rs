//! `[mirror]`: the mirror's own config section, built by config from the
//! TOML. Types only: config validates and fills them.
//!
//! Must never: read the environment or a file.

use std::fmt;
use std::time::Duration;

/// What happens to requests that no `[[route]]` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Safe methods are mirrored and compared; writes go to the primary only.
    Reads,
    /// Nothing is mirrored.
    Off,
}

#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// How many exchanges may be in flight between the proxy and the recorder.
    pub queue: usize,
    /// Largest request or response body captured for comparison.
    pub max_body: usize,
    /// Total bytes all captured bodies together may hold.
    pub max_buffered: usize,
    /// Largest body after content decoding (a guard against decompression bombs).
    pub max_decoded: usize,
    pub unmatched: Unmatched,
    /// Threads running comparisons (CPU work, kept off the proxy's runtime).
    pub workers: usize,
    /// Whether comparison threads run only on CPU nobody else wants.
    pub compare_priority: ComparePriority,
    /// How long a mirrored read waits for pending shadow writes to its
    /// entity (or a translation for the pair a pending create will teach).
    pub write_wait: Duration,
    /// Most requests the mirror has outstanding to one upstream at once: it
    /// bounds the connections (and file descriptors) a slow shadow can take.
    pub max_in_flight: usize,
}

/// The scheduling class of comparison threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComparePriority {
    /// Only spare CPU (Linux `SCHED_IDLE`): comparisons never slow the proxy;
    /// when there is no spare CPU they queue, and past the queue they are shed.
    Idle,
    /// The same priority as the proxy.
    Normal,
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unmatched::Reads => "reads",
            Unmatched::Off => "off",
        })
    }
}
