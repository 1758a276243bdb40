//! `sensor stats`: the counters of the sensor running on an interface, read
//! from its pinned map, as one JSON line.

use std::io::Write;

use crate::{capture::SensorError, ops::report};

/// Why `sensor stats` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The pinned counters could not be read (no sensor on the interface).
    #[error(transparent)]
    Counters(#[from] SensorError),
    /// The line could not be written.
    #[error("writing the stats line")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// Writes `{"iface": …, "counters": {…}}` for the sensor on `iface` to `out`.
///
/// # Errors
/// See [`StatsError`].
pub fn write_stats(iface: &str, out: &mut impl Write) -> Result<(), StatsError> {
    let counters = report::read_pinned_counters(iface)?;
    let line = serde_json::json!({
        "iface": iface,
        "counters": report::counters_json(&counters),
    });
    writeln!(out, "{line}").map_err(|source| StatsError::Write { source })
}
