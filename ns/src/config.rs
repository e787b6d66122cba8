//! How a router behaves: its [`Config`], and the [`Security`] of its
//! network links.

use std::sync::Arc;
use std::time::Duration;

use crate::path::MachineId;

/// How a router behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: MachineId,
    /// Exchange routes with neighbours by path-vector gossip.
    pub gossip: bool,
    /// The machine whose `registry` service to register with and ask.
    pub registry: Option<MachineId>,
    /// Gossip and registry period. Neighbours are pinged every half
    /// period, and one silent for two periods is taken for dead.
    pub period: Duration,
    /// This machine's key and the keys it accepts, for tcp and ws links.
    /// `None` leaves network links unauthenticated and unencrypted, which
    /// is logged loudly: for benchmarks only.
    pub security: Option<Arc<Security>>,
    /// Say which link was lost along with the changes it causes, and heed
    /// neighbours who do (see [`crate::gossip`]). Off only to measure what
    /// withdrawals cost without it.
    pub root_cause: bool,
    /// How long a link whose connection was lost waits for it to come
    /// back and resume its session (the machine key `resume`); zero
    /// fails what crossed it at once. Only links that are encrypted or
    /// local resume.
    pub resume: Duration,
}

impl Config {
    pub fn new(id: MachineId) -> Config {
        Config {
            id,
            gossip: true,
            registry: None,
            period: Duration::from_millis(500),
            security: None,
            root_cause: true,
            resume: crate::deploy::DEFAULT_RESUME,
        }
    }

    /// How long paths over a link reported lost are set aside: long
    /// enough for the report to cross the mesh and for every neighbour
    /// that sent such a path to replace it (each does at once on hearing
    /// of the loss), short next to the redial of a lost link (100 ms
    /// backoff, then the handshake) and the period, so that paths over a
    /// link that came back are used again soon.
    pub fn lost_link_hold(&self) -> Duration {
        self.period / 2
    }
}

/// This machine's key and the keys of the machines it accepts.
pub struct Security {
    pub identity: dial::Identity,
    pub trust: dial::Trust,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Security {{ key {}, {} pinned }}", self.identity.public().fingerprint(), self.trust.len())
    }
}
