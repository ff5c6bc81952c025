//! Reading what the receivers saw: each recorded request turned into an [`Arrival`], and a
//! cheap running count of what has been delivered, for the warm-up and the settle waits.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use carrier_testkit::receiver::Received;

use crate::analysis::Arrival;
use crate::topology::Topology;

/// A request as an [`Arrival`]; `None` for a request without a `Sequence` (not the load's).
pub fn arrival(received: &Received, started: Instant) -> Option<Arrival> {
    let body: serde_json::Value = serde_json::from_slice(&received.body).ok()?;
    Some(Arrival {
        sequence: body["Sequence"].as_u64()?,
        stream: body["Stream"].as_str().unwrap_or_default().to_string(),
        webhook_id: received.header("webhook-id").to_string(),
        attempt: received.header("carrier-attempt").parse().unwrap_or(0),
        succeeded: (200..300).contains(&received.status),
        at: received.at.saturating_duration_since(started),
    })
}

/// Every arrival at each destination so far (in the topology's order).
pub fn all_arrivals(topology: &Topology, started: Instant) -> Vec<Vec<Arrival>> {
    topology
        .destinations
        .iter()
        .map(|destination| {
            destination
                .receiver
                .received()
                .iter()
                .filter_map(|received| arrival(received, started))
                .collect()
        })
        .collect()
}

/// Messages delivered (answered 2xx) per destination, read incrementally.
pub struct Progress {
    read: Vec<usize>,
    delivered: Vec<HashSet<u64>>,
}

impl Progress {
    pub fn new(topology: &Topology) -> Self {
        Self {
            read: vec![0; topology.destinations.len()],
            delivered: vec![HashSet::new(); topology.destinations.len()],
        }
    }

    /// Reads what arrived since the last call.
    pub fn update(&mut self, topology: &Topology, started: Instant) {
        for (index, destination) in topology.destinations.iter().enumerate() {
            let new = destination.receiver.received_from(self.read[index]);
            self.read[index] += new.len();
            for received in new {
                if let Some(arrival) = arrival(&received, started) {
                    if arrival.succeeded {
                        self.delivered[index].insert(arrival.sequence);
                    }
                }
            }
        }
    }

    pub fn delivered(&self, destination: usize) -> usize {
        self.delivered[destination].len()
    }

    /// How many of `expected` (destination index → messages) are not delivered yet.
    pub fn missing(&self, expected: &HashMap<usize, HashSet<u64>>) -> usize {
        expected
            .iter()
            .map(|(destination, messages)| {
                messages
                    .iter()
                    .filter(|message| !self.delivered[*destination].contains(message))
                    .count()
            })
            .sum()
    }
}
