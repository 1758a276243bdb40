//! The recorded event fixture the tests and the training pipeline share:
//! `events.bin` (raw 128-byte `FlowEvent` records, native little-endian
//! layout) and `gateway.bin` (the gateway views published between them: for
//! each, the index of the event it precedes as a little-endian `u64`, then
//! the view in [`GatewayView::write_to`]'s format). Replaying both through a
//! [`sensor::features::FeatureExtractor`] reproduces `rows.csv` bit for bit.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use sensor_common::FlowEvent;

use sensor::features::GatewayView;

use crate::sim::SimItem;

/// One step of a replay.
#[derive(Clone, Debug)]
pub enum FixtureItem {
    Event(FlowEvent),
    Gateway(Arc<GatewayView>),
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Writes `events.bin` and `gateway.bin` for a simulated stream into `dir`.
///
/// # Errors
/// A file cannot be written.
pub fn write(dir: &Path, items: &[SimItem]) -> io::Result<()> {
    let mut events = Vec::new();
    let mut gateway = Vec::new();
    let mut n = 0u64;
    for it in items {
        match it {
            SimItem::Event(e) => {
                events.extend_from_slice(bytemuck::bytes_of(&e.ev));
                n += 1;
            }
            SimItem::Gateway(g) => {
                gateway.extend_from_slice(&n.to_le_bytes());
                g.write_to(&mut gateway)?;
            }
        }
    }
    fs::write(dir.join("events.bin"), events)?;
    fs::write(dir.join("gateway.bin"), gateway)
}

/// The committed fixture folder, `models/fixtures` in the workspace.
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

/// Reads the committed fixture, for the tests that replay it.
///
/// # Panics
/// The fixture cannot be read (the error names the file).
pub fn read_committed() -> Vec<FixtureItem> {
    read(&committed_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads the fixture in `dir` back as one ordered stream.
///
/// # Errors
/// A file is missing, truncated or inconsistent (named in the error).
pub fn read(dir: &Path) -> io::Result<Vec<FixtureItem>> {
    let ep = dir.join("events.bin");
    let bytes = fs::read(&ep).map_err(|e| invalid(&ep, e))?;
    let sz = size_of::<FlowEvent>();
    if bytes.len() % sz != 0 {
        return Err(invalid(&ep, "not a whole number of events"));
    }
    let events: Vec<FlowEvent> = bytes
        .chunks_exact(sz)
        .map(bytemuck::pod_read_unaligned::<FlowEvent>)
        .collect();
    let gp = dir.join("gateway.bin");
    let gbytes = fs::read(&gp).map_err(|e| invalid(&gp, e))?;
    let mut r = gbytes.as_slice();
    let mut views: Vec<(u64, Arc<GatewayView>)> = Vec::new();
    while !r.is_empty() {
        let (idx, rest) = r.split_at(8.min(r.len()));
        let idx = u64::from_le_bytes(
            idx.try_into()
                .map_err(|_| invalid(&gp, "truncated record"))?,
        );
        r = rest;
        let v = GatewayView::read_from(&mut r)
            .map_err(|e| invalid(&gp, e))?
            .ok_or_else(|| invalid(&gp, "truncated record"))?;
        if idx > events.len() as u64 || views.last().is_some_and(|(i, _)| *i > idx) {
            return Err(invalid(&gp, format!("view position {idx} out of order")));
        }
        views.push((idx, Arc::new(v)));
    }
    let mut out = Vec::with_capacity(events.len() + views.len());
    let mut vi = views.into_iter().peekable();
    for (i, ev) in events.into_iter().enumerate() {
        while let Some((_, v)) = vi.next_if(|(at, _)| *at <= i as u64) {
            out.push(FixtureItem::Gateway(v));
        }
        out.push(FixtureItem::Event(ev));
    }
    out.extend(vi.map(|(_, v)| FixtureItem::Gateway(v)));
    Ok(out)
}
