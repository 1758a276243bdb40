//! A collector worker's event source: batches of flow records from the
//! receiver thread, turned into events against the flows' running totals.

use std::{collections::HashMap, time::Duration};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use sensor_common::{FlowKey, FlowStats};

use super::{CollectedFlow, RecordBatch, is_initiator, origin_tag, record_event, record_stats};
use crate::capture::workers::{
    EventSource, FlowHashBuilder, WorkerRequest, WorkerState, tick_between_events,
};

/// Record batches handled per drain before the worker loop gets a turn
/// (its ticks, requests and stop flag).
const BATCHES_PER_DRAIN: usize = 256;

/// Running totals of one flow (per exporter and domain): what the kernel's
/// flow table holds for a flow the XDP program sees.
pub(crate) struct RecordSource {
    rx: Receiver<RecordBatch>,
    pending: Option<RecordBatch>,
    totals: HashMap<(FlowKey, u32), FlowStats, FlowHashBuilder>,
    capacity: usize,
    scratch: Vec<u64>,
    /// Flows forgotten to make room (least recently active first).
    pub(crate) evicted: u64,
}

impl RecordSource {
    /// A source over `rx` keeping the totals of up to `capacity` flows.
    pub(crate) fn new(rx: Receiver<RecordBatch>, capacity: usize) -> Self {
        let capacity = capacity.max(16);
        Self {
            rx,
            pending: None,
            totals: HashMap::with_capacity_and_hasher(capacity, FlowHashBuilder::default()),
            capacity,
            scratch: Vec::with_capacity(capacity),
            evicted: 0,
        }
    }

    /// Hands one datagram's records to `state`: initiators first, as their
    /// packets came first, then the rest, each in the exporter's order.
    /// Returns the records handled.
    pub(crate) fn handle(&mut self, batch: &[CollectedFlow], state: &mut WorkerState) -> u32 {
        self.make_room(batch.len());
        for initiators in [true, false] {
            for c in batch.iter().filter(|c| is_initiator(&c.flow) == initiators) {
                let add = record_stats(&c.flow, c.received_ns);
                let mut new = false;
                let totals = self
                    .totals
                    .entry((c.flow.key, origin_tag(&c.origin)))
                    .or_insert_with(|| {
                        new = true;
                        FlowStats::default()
                    });
                totals.merge(&add);
                let ev = record_event(c, totals, new);
                state.dispatch_record(&ev, &c.origin);
            }
        }
        batch.len() as u32
    }

    /// Once the totals are ¾ full, forgets the least recently active flows
    /// until half full (as the workers' flow maps do).
    fn make_room(&mut self, incoming: usize) {
        let len = self.totals.len();
        if (len + incoming) * 4 < self.capacity * 3 {
            return;
        }
        let remove = len.saturating_sub(self.capacity / 2).max(1).min(len);
        if remove == 0 {
            return;
        }
        self.scratch.clear();
        self.scratch
            .extend(self.totals.values().map(|s| s.last_seen_ns));
        let (_, &mut cutoff, _) = self.scratch.select_nth_unstable(remove - 1);
        self.totals.retain(|_, s| s.last_seen_ns > cutoff);
        self.evicted += (len - self.totals.len()) as u64;
    }
}

impl EventSource for RecordSource {
    fn drain(
        &mut self,
        state: &mut WorkerState,
        requests: &crossbeam_channel::Receiver<WorkerRequest>,
    ) -> u32 {
        let mut handled = 0u32;
        for _ in 0..BATCHES_PER_DRAIN {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => match self.rx.try_recv() {
                    Ok(b) => b,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            handled += self.handle(&batch, state);
            tick_between_events(state, requests);
        }
        handled
    }

    fn wait(&mut self, _worker: usize, wait_ns: u64) {
        let wait = Duration::from_nanos(wait_ns);
        match self.rx.recv_timeout(wait) {
            Ok(b) => self.pending = Some(b),
            Err(RecvTimeoutError::Timeout) => {}
            // The receiver has stopped: nothing more will come; sleep as
            // an idle ring would until the worker is told to stop.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    }
}
