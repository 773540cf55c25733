//! A member's cycle as a state machine, in the manner of kube-runtime's watcher: an explicit
//! [`State`], the [`Observation`] the last piece of work reported, and a pure [`step`] that
//! says what to do next ([`Action`]s) and where that leaves the member. No I/O, no clock:
//! `sync_member` (in `sync.rs`) performs each action and feeds back what it saw; the
//! transitions are tested here as a table.
//!
//! Between cycles a member *stands* somewhere ([`Standing`]), derived from its stored
//! [`MemberRecord`] alone ([`Standing::of`]): the record keeps its old shape, so a store
//! written before this machine existed reads as the right standing. A cycle starts in
//! [`State::Idle`] and ends in [`State::Done`]:
//!
//! ```text
//! Idle(Revoked*) --Begin, same token--> Skip                          Done(Revoked*)
//! Idle(Revoked*) --Begin, new token---> Reconnect                     Idle(Baseline|Polling)
//! Idle(Baseline) --Begin--------------> Walk(Baseline)                Walking(Baseline)
//! Idle(Polling)  --Begin, resync------> Walk(Resync)                  Walking(Resync)
//! Idle(Polling)  --Begin--------------> Poll                          Polling
//! Walking(Baseline) --Walked----------> Baselined, Poll               Polling (walked)
//! Walking(Resync)   --Walked----------> Poll                          Polling (walked)
//! Polling           --Polled----------> Succeed                       Done(Polling)
//! Polling (walked)  --Oversized-------> Oversized, ResumeAfter, Succeed  Done(Polling)
//! Polling           --Oversized-------> Oversized, Walk(Oversized)    Walking(Oversized)
//! Walking(Oversized) --Walked---------> ResumeAfter, Succeed          Done(Polling)
//! any working state --Refused---------> Fail | EmitRevoked, Revoke | RevokeBeforeStart
//! any working state --Failed----------> Fail                          Done(as it stood)
//! ```

use super::model::MemberRecord;
use crate::time::Millis;

/// Where a member stands between cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No complete list walk yet: the next cycle walks the list first (the baseline: what it
    /// finds is history unless it changed after `start`), then polls.
    Baseline,
    /// Baselined: each cycle polls from the cursor (a resync walks the list first).
    Polling,
    /// CamInvoice refused its refresh token `revoke_after_refusals` times in a row after
    /// accepting one since `start`: ENTITY.REVOKED was emitted. Skipped until its refresh
    /// token changes (`pollhook connect`, or a new one in the config).
    Revoked { baselined: bool },
    /// Refused that often, but never accepted since `start`: the disconnection may predate
    /// pollhook's history, so no event was emitted. Skipped until its refresh token changes.
    RevokedBeforeStart { baselined: bool },
}

impl Standing {
    /// What a stored record says (a record from any earlier version included).
    pub fn of(rec: &MemberRecord) -> Standing {
        let baselined = rec.baseline_at.is_some();
        match (&rec.revoked_token, rec.revoked_before_start) {
            (Some(_), true) => Standing::RevokedBeforeStart { baselined },
            (Some(_), false) => Standing::Revoked { baselined },
            (None, _) if baselined => Standing::Polling,
            (None, _) => Standing::Baseline,
        }
    }

    /// Whether the member is skipped while it keeps the refused refresh token.
    pub fn is_revoked(self) -> bool {
        matches!(
            self,
            Standing::Revoked { .. } | Standing::RevokedBeforeStart { .. }
        )
    }

    /// Where it stands once working again (reconnected): as far as its baseline went.
    fn working(self) -> Standing {
        match self {
            Standing::Revoked { baselined } | Standing::RevokedBeforeStart { baselined } => {
                if baselined {
                    Standing::Polling
                } else {
                    Standing::Baseline
                }
            }
            other => other,
        }
    }
}

/// Why a cycle walks the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The first complete walk: it sets the baseline.
    Baseline,
    /// `resync_schedule` (or a resync remembered from a skipped tick).
    Resync,
    /// The poll answer (or a detail it led to) was over its cap: the walk stands in for it.
    Oversized,
}

/// Where a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A cycle is about to begin; entered from the stored record, left at once.
    Idle(Standing),
    /// Walking the list; left when the walk ends or fails.
    Walking(Walk),
    /// Polling from the cursor; `walked` is when this cycle's walk began, if one ran.
    Polling { walked: Option<Millis> },
    /// The cycle is over; the member stands so until the next one.
    Done(Standing),
}

/// What the last piece of work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A cycle begins: whether a resync is due, and whether the member's refresh token differs
    /// from the one a revocation refused.
    Begin { resync: bool, token_changed: bool },
    /// A list walk went through every page; it began at `began`.
    Walked { began: Millis },
    /// The poll and every detail it needed went through.
    Polled,
    /// The poll answer (or a detail it led to) was over its cap.
    Oversized,
    /// CamInvoice refused the refresh token: `refusals` in a row, this one counted;
    /// `seen_connected`: it accepted one of the member's tokens at or after `start`.
    Refused { refusals: u32, seen_connected: bool },
    /// Anything else stopped the work (a failed request, the store, the shutdown).
    Failed,
}

/// What to do next, in order. Only [`Action::Walk`] and [`Action::Poll`] produce the next
/// observation (and [`Action::Reconnect`], which begins the cycle again); the others end
/// the cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing this cycle: revoked, with the refused token.
    Skip,
    /// Forget the revocation and its refusals: the refresh token changed.
    Reconnect,
    Walk(Walk),
    /// Record `began` as the baseline: documents first seen later are new.
    Baselined {
        began: Millis,
    },
    Poll,
    /// Count the over-cap answer (an anomaly) and say a walk stands in.
    Oversized,
    /// Move the cursor up to the walk's start, less the skew allowance: the walk saw every
    /// document as of its start.
    ResumeAfter {
        began: Millis,
    },
    /// The cycle succeeded: the refusal count starts over.
    Succeed,
    /// The cycle failed; `refusals_left` when it was a refused refresh short of revocation.
    Fail {
        refusals_left: Option<u32>,
    },
    /// Emit ENTITY.REVOKED.
    EmitRevoked,
    /// Mark the member revoked (with the refused token), so it is skipped.
    Revoke,
    /// Mark it revoked before `start`: no event.
    RevokeBeforeStart,
}

/// One transition: what to do after `observation` in `state`, and the state it leads to.
/// `revoke_after` is the account's `revoke_after_refusals`.
pub fn step(state: State, observation: Observation, revoke_after: u32) -> (Vec<Action>, State) {
    use Action as A;
    use Observation as O;
    use State as S;
    match (state, observation) {
        (S::Idle(standing), O::Begin { token_changed, .. }) if standing.is_revoked() => {
            if token_changed {
                (vec![A::Reconnect], S::Idle(standing.working()))
            } else {
                (vec![A::Skip], S::Done(standing))
            }
        }
        (S::Idle(Standing::Baseline), O::Begin { .. }) => {
            (vec![A::Walk(Walk::Baseline)], S::Walking(Walk::Baseline))
        }
        (S::Idle(_), O::Begin { resync: true, .. }) => {
            (vec![A::Walk(Walk::Resync)], S::Walking(Walk::Resync))
        }
        (S::Idle(_), O::Begin { .. }) => (vec![A::Poll], S::Polling { walked: None }),
        (S::Walking(Walk::Baseline), O::Walked { began }) => (
            vec![A::Baselined { began }, A::Poll],
            S::Polling {
                walked: Some(began),
            },
        ),
        (S::Walking(Walk::Resync), O::Walked { began }) => (
            vec![A::Poll],
            S::Polling {
                walked: Some(began),
            },
        ),
        (S::Walking(Walk::Oversized), O::Walked { began }) => (
            vec![A::ResumeAfter { began }, A::Succeed],
            S::Done(Standing::Polling),
        ),
        (S::Polling { .. }, O::Polled) => (vec![A::Succeed], S::Done(Standing::Polling)),
        (
            S::Polling {
                walked: Some(began),
            },
            O::Oversized,
        ) => (
            vec![A::Oversized, A::ResumeAfter { began }, A::Succeed],
            S::Done(Standing::Polling),
        ),
        (S::Polling { walked: None }, O::Oversized) => (
            vec![A::Oversized, A::Walk(Walk::Oversized)],
            S::Walking(Walk::Oversized),
        ),
        (
            working,
            O::Refused {
                refusals,
                seen_connected,
            },
        ) => {
            let baselined = standing_in(working) != Standing::Baseline;
            if refusals < revoke_after {
                (
                    vec![A::Fail {
                        refusals_left: Some(revoke_after - refusals),
                    }],
                    S::Done(standing_in(working)),
                )
            } else if seen_connected {
                (
                    vec![A::EmitRevoked, A::Revoke],
                    S::Done(Standing::Revoked { baselined }),
                )
            } else {
                (
                    vec![A::RevokeBeforeStart],
                    S::Done(Standing::RevokedBeforeStart { baselined }),
                )
            }
        }
        (working, _) => (
            vec![A::Fail {
                refusals_left: None,
            }],
            S::Done(standing_in(working)),
        ),
    }
}

/// Where a member in `state` stands if its cycle ends there.
fn standing_in(state: State) -> Standing {
    match state {
        State::Idle(s) | State::Done(s) => s,
        State::Walking(Walk::Baseline) => Standing::Baseline,
        // Polling and the other walks come after the baseline.
        State::Walking(_) | State::Polling { .. } => Standing::Polling,
    }
}

/// Whether CamInvoice accepted one of the member's refresh tokens at or after `start` (an
/// accepted refresh, or a successful cycle): then a revocation happened within pollhook's
/// history and its ENTITY.REVOKED is due.
pub fn seen_connected(rec: &MemberRecord) -> bool {
    [rec.accepted_at, rec.last_success]
        .into_iter()
        .flatten()
        .any(|t| t >= rec.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Observation as O;
    use Standing as St;
    use State as S;

    const T: Millis = 1_767_225_600_000;

    fn begin(resync: bool, token_changed: bool) -> Observation {
        O::Begin {
            resync,
            token_changed,
        }
    }

    fn refused(refusals: u32, seen_connected: bool) -> Observation {
        O::Refused {
            refusals,
            seen_connected,
        }
    }

    #[test]
    fn every_transition() {
        let polling = S::Polling { walked: None };
        let walked = S::Polling { walked: Some(T) };
        let revoked = St::Revoked { baselined: true };
        let before = St::RevokedBeforeStart { baselined: false };
        // (state, observation, actions, next state); revoke_after_refusals = 2.
        let fail = |left| {
            vec![A::Fail {
                refusals_left: left,
            }]
        };
        #[rustfmt::skip]
        let table: Vec<(State, Observation, Vec<Action>, State)> = vec![
            // A cycle begins.
            (S::Idle(St::Baseline), begin(false, false), vec![A::Walk(Walk::Baseline)], S::Walking(Walk::Baseline)),
            (S::Idle(St::Baseline), begin(true, false), vec![A::Walk(Walk::Baseline)], S::Walking(Walk::Baseline)),
            (S::Idle(St::Polling), begin(false, false), vec![A::Poll], polling),
            (S::Idle(St::Polling), begin(true, false), vec![A::Walk(Walk::Resync)], S::Walking(Walk::Resync)),
            (S::Idle(revoked), begin(true, false), vec![A::Skip], S::Done(revoked)),
            (S::Idle(before), begin(false, false), vec![A::Skip], S::Done(before)),
            (S::Idle(revoked), begin(false, true), vec![A::Reconnect], S::Idle(St::Polling)),
            (S::Idle(before), begin(false, true), vec![A::Reconnect], S::Idle(St::Baseline)),
            // Walks end.
            (S::Walking(Walk::Baseline), O::Walked { began: T }, vec![A::Baselined { began: T }, A::Poll], walked),
            (S::Walking(Walk::Resync), O::Walked { began: T }, vec![A::Poll], walked),
            (S::Walking(Walk::Oversized), O::Walked { began: T }, vec![A::ResumeAfter { began: T }, A::Succeed], S::Done(St::Polling)),
            // Polls end.
            (polling, O::Polled, vec![A::Succeed], S::Done(St::Polling)),
            (walked, O::Polled, vec![A::Succeed], S::Done(St::Polling)),
            (polling, O::Oversized, vec![A::Oversized, A::Walk(Walk::Oversized)], S::Walking(Walk::Oversized)),
            (walked, O::Oversized, vec![A::Oversized, A::ResumeAfter { began: T }, A::Succeed], S::Done(St::Polling)),
            // Refused refreshes: counted, then a revocation, with or without its event.
            (polling, refused(1, true), fail(Some(1)), S::Done(St::Polling)),
            (S::Walking(Walk::Baseline), refused(1, false), fail(Some(1)), S::Done(St::Baseline)),
            (polling, refused(2, true), vec![A::EmitRevoked, A::Revoke], S::Done(St::Revoked { baselined: true })),
            (S::Walking(Walk::Resync), refused(3, true), vec![A::EmitRevoked, A::Revoke], S::Done(St::Revoked { baselined: true })),
            (S::Walking(Walk::Baseline), refused(2, false), vec![A::RevokeBeforeStart], S::Done(St::RevokedBeforeStart { baselined: false })),
            (polling, refused(2, false), vec![A::RevokeBeforeStart], S::Done(St::RevokedBeforeStart { baselined: true })),
            // Anything else fails the cycle where it stood.
            (S::Walking(Walk::Baseline), O::Failed, fail(None), S::Done(St::Baseline)),
            (S::Walking(Walk::Oversized), O::Failed, fail(None), S::Done(St::Polling)),
            (walked, O::Failed, fail(None), S::Done(St::Polling)),
        ];
        for (state, obs, actions, next) in table {
            assert_eq!(step(state, obs, 2), (actions, next), "{state:?} + {obs:?}");
        }
    }

    /// Runs a whole cycle: each working action is answered by the next of `answers`.
    fn cycle(start: Standing, resync: bool, answers: &[Observation]) -> (Vec<Action>, State) {
        let mut answers = answers.iter().copied();
        let mut state = S::Idle(start);
        let mut obs = begin(resync, false);
        let mut done = Vec::new();
        loop {
            let (actions, next) = step(state, obs, 2);
            state = next;
            let asks = actions
                .iter()
                .any(|a| matches!(a, A::Walk(_) | A::Poll | A::Reconnect));
            done.extend(actions);
            if !asks {
                return (done, state);
            }
            obs = answers.next().expect("an answer for every walk and poll");
        }
    }

    #[test]
    fn a_first_cycle_walks_then_polls_and_an_oversized_poll_resumes_after_that_walk() {
        let (actions, end) = cycle(St::Baseline, false, &[O::Walked { began: T }, O::Oversized]);
        assert_eq!(
            actions,
            [
                A::Walk(Walk::Baseline),
                A::Baselined { began: T },
                A::Poll,
                A::Oversized,
                A::ResumeAfter { began: T },
                A::Succeed
            ]
        );
        assert_eq!(end, S::Done(St::Polling));
        // Without a walk in the cycle, the oversized poll sends it to one.
        let (actions, _) = cycle(St::Polling, false, &[O::Oversized, O::Walked { began: T }]);
        assert_eq!(
            actions,
            [
                A::Poll,
                A::Oversized,
                A::Walk(Walk::Oversized),
                A::ResumeAfter { began: T },
                A::Succeed
            ]
        );
    }

    #[test]
    fn every_working_state_ends_the_cycle_on_any_observation() {
        // Nothing wedges: from each state the cycle reaches Done, whatever comes back.
        let states = [
            S::Walking(Walk::Baseline),
            S::Walking(Walk::Resync),
            S::Walking(Walk::Oversized),
            S::Polling { walked: None },
            S::Polling { walked: Some(T) },
        ];
        let observations = [
            O::Walked { began: T },
            O::Polled,
            O::Oversized,
            refused(1, true),
            refused(5, false),
            O::Failed,
            begin(false, false),
        ];
        for s in states {
            for o in observations {
                let mut state = s;
                let mut obs = o;
                for _ in 0..4 {
                    let (_, next) = step(state, obs, 2);
                    state = next;
                    if matches!(state, S::Done(_)) {
                        break;
                    }
                    obs = O::Failed;
                }
                assert!(matches!(state, S::Done(_)), "{s:?} + {o:?} -> {state:?}");
            }
        }
    }

    fn record(json: &str) -> MemberRecord {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn records_of_every_version_read_as_their_standing() {
        // Records as earlier pollhooks wrote them (fields added over time were optional).
        let cases = [
            (r#"{"start":1}"#, St::Baseline),
            (
                r#"{"start":1,"cursor":null,"last_success":null,"last_resync":null,"baseline_at":null,"refusals":0,"revoked_token":null,"last_error":null}"#,
                St::Baseline,
            ),
            (
                r#"{"start":1,"cursor":5,"baseline_at":2,"refusals":1}"#,
                St::Polling,
            ),
            (
                r#"{"start":1,"baseline_at":2,"refusals":2,"revoked_token":"0123456789abcdef"}"#,
                St::Revoked { baselined: true },
            ),
            (
                r#"{"start":1,"refusals":2,"revoked_token":"0123456789abcdef"}"#,
                St::Revoked { baselined: false },
            ),
            (
                r#"{"start":1,"refusals":2,"revoked_token":"0123456789abcdef","revoked_before_start":true}"#,
                St::RevokedBeforeStart { baselined: false },
            ),
            (
                r#"{"start":1,"baseline_at":2,"accepted_at":3,"last_error":"x"}"#,
                St::Polling,
            ),
        ];
        for (json, standing) in cases {
            assert_eq!(Standing::of(&record(json)), standing, "{json}");
        }
    }

    #[test]
    fn a_member_was_seen_connected_when_a_refresh_or_a_cycle_succeeded_since_start() {
        for (json, seen) in [
            (r#"{"start":10}"#, false),
            (r#"{"start":10,"accepted_at":9}"#, false),
            (r#"{"start":10,"accepted_at":10}"#, true),
            (r#"{"start":10,"last_success":11}"#, true),
        ] {
            assert_eq!(seen_connected(&record(json)), seen, "{json}");
        }
    }
}
