//! What a lost link costs: the conversations that crossed it fail at
//! both ends ([`crate::crossed`] remembers them), and an envelope sent to
//! a link closed but not yet cleared fails its two ends too. Ends on other
//! machines are told by the routes that remain, once there are some.

use bytes::Bytes;
use tracing::{debug, info};

use crate::envelope::{Envelope, Kind};
use crate::error;
use crate::path::{Addr, MachineId};
use crate::router::Router;
use crate::term::Term;

/// How long a lost link's news waits for a way round to the far ends it
/// must reach (see `Router::tell_link_lost`): a few announcement periods.
const TELL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Router {
    /// A link is gone: every conversation end whose envelopes crossed it,
    /// and every end those talk to, hears `link lost`, since some of their
    /// envelopes may have gone with it (see [`crate::crossed`]). Ends here
    /// fail at once, before the routes change: none of them may then say
    /// `Eof` another way after what it said was lost. The ends elsewhere
    /// are returned, for [`Router::tell_link_lost`] once the routes have
    /// changed: an end whose own envelopes go another way would otherwise
    /// wait for ever for what was lost.
    pub(crate) fn link_lost_here(&self, term: &Term) -> Vec<Addr> {
        let Some(crossed) = &term.crossed else { return Vec::new() };
        let ends = crossed.take();
        if ends.is_empty() {
            return Vec::new();
        }
        let why = error::detail(error::ELINK, &term.name);
        info!(term = %term.name, ends = ends.len(), "failing the conversations that crossed a lost link");
        let me = self.id().clone();
        let (here, far): (Vec<Addr>, Vec<Addr>) = ends.into_iter().partition(|a| a.machine.as_ref() == Some(&me));
        self.convs().peers_lost(&far.iter().cloned().collect(), &why);
        for a in here {
            self.fail_endpoint(a, &why);
        }
        far
    }

    /// Tells the ends elsewhere that crossed lost link `term` (from
    /// [`Router::link_lost_here`]), by the routes that remain.
    pub(crate) fn tell_link_lost(&self, term: &Term, far: Vec<Addr>) {
        let why = error::detail(error::ELINK, &term.name);
        self.tell(far.into_iter().map(|a| (a, why.clone())).collect());
    }

    /// An envelope that found its link closed: closed after its route was
    /// chosen, before the link's task failed what crossed the link and
    /// moved the routes off it (see `link.rs`), which a loaded router may
    /// take tens of milliseconds to do. The envelope is lost, and neither
    /// of its ends need have crossed the link, so both hear of it here:
    /// the sender as a bounce, the end it was for by the routes that
    /// remain. An error on its way is passed on as it was; dropping it
    /// would leave its end waiting for ever.
    pub(crate) fn lost_at(&self, term: &Term, env: Envelope) {
        let why = error::detail(error::ELINK, &term.name);
        let mut ends = Vec::with_capacity(2);
        match &env.kind {
            Kind::Error(e) => ends.push((env.dst.clone(), e.clone())),
            Kind::Data | Kind::Eof | Kind::Hangup => ends.push((env.dst.clone(), why.clone())),
            _ => {
                ends.push((env.dst.clone(), why.clone()));
                ends.push((env.src.clone(), why.clone()));
            }
        }
        ends.retain(|(a, _)| a.conv.is_some() && a.machine.is_some());
        debug!(term = %term.name, src = %env.src, dst = %env.dst, "sent to a closed link");
        // Data and Eof bounce to their sender (and the head of a chain).
        self.bounce(env, why);
        self.tell(ends);
    }

    /// Tells each end its error by the routes that remain, once they no
    /// longer go over a closed link.
    fn tell(&self, ends: Vec<(Addr, String)>) {
        if ends.is_empty() {
            return;
        }
        let me = self.id().clone();
        let r = self.clone();
        self.spawn(async move {
            // The way round may not be known yet: the routes over the lost
            // link are gone at once, another path's come with the
            // neighbours' next announcements. Told before, an end would be
            // told nothing. One wait in all, not one per end.
            let until = tokio::time::Instant::now() + TELL_WAIT;
            for (a, why) in ends {
                while let Some(m) = a.machine.as_ref() {
                    let known = m == r.id() || r.live_route(m);
                    if known || tokio::time::Instant::now() >= until {
                        break;
                    }
                    tokio::time::sleep(TELL_WAIT / 100).await;
                }
                let env = Envelope::new(
                    r.next_id(),
                    Addr::on(me.clone(), crate::conv::reserved()),
                    a,
                    Kind::Error(why),
                    Bytes::new(),
                );
                r.forward(env).await;
            }
        });
    }

    /// Whether the best route to `m` goes over a link still open.
    fn live_route(&self, m: &MachineId) -> bool {
        let term = self.table().best(m).map(|r| r.term.clone());
        term.and_then(|t| self.term(&t)).is_some_and(|t| !t.is_hungup())
    }
}
