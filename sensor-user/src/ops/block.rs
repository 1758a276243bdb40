//! `sensor block add|del|list` and `sensor protect add|del|list`: the
//! operator's hand on the blocklists and protected victims of the sensor
//! attached to an interface, through the maps it pinned. Entries live
//! in those maps, so they outlive the user-space process (a restarted sensor
//! adopts them with the rest of its state).

use std::{io::Write, net::IpAddr, time::Duration};

use sensor_common::{BlockReason, map_names};

use crate::capture::{
    SensorError,
    blocklist::{Lists, Prefix},
    pins::PinDir,
};

/// One `sensor block` action.
#[derive(Clone, Debug)]
pub enum BlockOp {
    /// Block `prefix` for `ttl` seconds (0: until removed) with a note.
    Add {
        prefix: Prefix,
        ttl: u64,
        reason: String,
    },
    /// Remove the entry of exactly `prefix`.
    Del { prefix: Prefix },
    /// Print the entries.
    List,
    /// Protect `victim`: sources without a completed exchange pass at
    /// `rate` packets/s per CPU in bursts of `burst`, for `ttl` s (0: until
    /// removed).
    Protect {
        victim: IpAddr,
        rate: u64,
        burst: u64,
        ttl: u64,
    },
    /// End the protection of `victim`.
    Unprotect { victim: IpAddr },
    /// Print the protected victims.
    ListProtected,
}

/// Runs `op` on the lists of the sensor on `iface`, reporting on `out`
/// (`list`: one JSON object per entry and line).
///
/// # Errors
/// The interface does not exist, no sensor pinned its lists there, the
/// prefix of `del` has no entry, or a map operation failed.
pub fn run_block(iface: &str, op: &BlockOp, out: &mut impl Write) -> Result<(), SensorError> {
    let mut lists = open(iface)?;
    let io = |source| SensorError::WriteOutput {
        path: "standard output".into(),
        source,
    };
    match op {
        BlockOp::Add {
            prefix,
            ttl,
            reason,
        } => {
            lists.block(
                *prefix,
                Some(Duration::from_secs(*ttl)),
                BlockReason::Operator,
                reason,
            )?;
            let until = if *ttl == 0 {
                "until removed".to_owned()
            } else {
                format!("for {ttl} s")
            };
            writeln!(out, "blocked {prefix} on {iface} {until}").map_err(io)?;
        }
        BlockOp::Del { prefix } => {
            if !lists.unblock(*prefix)? {
                return Err(SensorError::NotBlocked {
                    prefix: prefix.to_string(),
                    iface: iface.to_owned(),
                });
            }
            writeln!(out, "unblocked {prefix} on {iface}").map_err(io)?;
        }
        BlockOp::List => {
            for b in lists.blocked() {
                let line = serde_json::to_string(&b).map_err(|e| io(e.into()))?;
                writeln!(out, "{line}").map_err(io)?;
            }
        }
        BlockOp::Protect {
            victim,
            rate,
            burst,
            ttl,
        } => {
            lists.protect(*victim, *rate, *burst, Some(Duration::from_secs(*ttl)))?;
            writeln!(
                out,
                "protecting {victim} on {iface}: unknown sources at {rate} packets/s per CPU, bursts of {burst}"
            )
            .map_err(io)?;
        }
        BlockOp::Unprotect { victim } => {
            if !lists.unprotect(*victim)? {
                return Err(SensorError::NotBlocked {
                    prefix: victim.to_string(),
                    iface: iface.to_owned(),
                });
            }
            writeln!(out, "stopped protecting {victim} on {iface}").map_err(io)?;
        }
        BlockOp::ListProtected => {
            for p in lists.protected() {
                let line = serde_json::to_string(&p).map_err(|e| io(e.into()))?;
                writeln!(out, "{line}").map_err(io)?;
            }
        }
    }
    Ok(())
}

/// The pinned lists of the sensor on `iface` in this network namespace.
fn open(iface: &str) -> Result<Lists, SensorError> {
    let if_index =
        crate::capture::loader::if_index(iface).ok_or_else(|| SensorError::NoSuchInterface {
            iface: iface.to_owned(),
        })?;
    let pins = PinDir::here(if_index)?;
    let path = pins.map(map_names::BLOCK_V4);
    if !path.exists() {
        return Err(SensorError::NotRunning {
            iface: iface.to_owned(),
            path,
        });
    }
    Lists::from_pins(&pins)
}
