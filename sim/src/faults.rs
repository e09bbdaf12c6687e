//! Named misbehaviours, chosen by a seeded random generator so that a failing run can be repeated.
//!
//! Transport and body faults are decided per request, before the handler runs, except `ghost`:
//! the operation takes effect and then the answer is lost, which is what makes a careless client
//! pay twice. Job and delivery faults change what an order does later.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One way a request can go wrong.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with the error envelope.
    Status500,
    /// HTTP 502 with an HTML page from a proxy.
    Status502,
    /// HTTP 503 with the error envelope.
    Status503,
    /// HTTP 429 with `Retry-After`.
    Status429,
    /// The connection is closed before anything is answered; nothing happens.
    Reset,
    /// The request is held past any sane client timeout, then dropped; nothing happens.
    Hang,
    /// A 200 whose JSON body is cut off.
    Truncated,
    /// A 200 with an HTML page instead of JSON.
    Html,
    /// A 200 with valid JSON of the wrong shape.
    WrongShape,
    /// The operation takes effect, then the connection is dropped without an answer.
    Ghost,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        Self::Status500,
        Self::Status502,
        Self::Status503,
        Self::Status429,
        Self::Reset,
        Self::Hang,
        Self::Truncated,
        Self::Html,
        Self::WrongShape,
        Self::Ghost,
    ];
}

/// What a certificate looks like when it is delivered wrong on purpose.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    /// The leaf certifies a different public key than the CSR's.
    WrongKey,
    /// One requested name is left out of the leaf.
    MissingSan,
    /// The leaf expired yesterday.
    Expired,
    /// The leaf becomes valid tomorrow.
    NotYetValid,
    /// `certificationAuthority` lists the root before the intermediate.
    ChainOutOfOrder,
    /// `certificationAuthority` lacks the intermediate.
    MissingIntermediate,
}

/// How a new job ends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// It succeeds once domain control is proven.
    #[default]
    Normal,
    /// It fails after the job delay.
    Fail,
    /// It stays RUNNING until told otherwise through `/_sim/jobs/{id}`.
    Stuck,
}

/// The fault settings. Every field has a default that makes the simulator behave.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests (0.0 to 1.0) that fail, on every route not named in `routes`.
    pub rate: f64,
    /// Per-route shares, keyed like `"POST /certificate"` or `"PUT /certificate/{id}"`.
    pub routes: BTreeMap<String, f64>,
    /// The kinds a failing request picks from, evenly; empty means all of them.
    pub kinds: Vec<FaultKind>,
    /// Client requests allowed per second per account; 0 turns the limit off (default 3).
    pub rate_limit: f64,
    /// How new jobs end.
    pub job_outcome: JobOutcome,
    /// Every poll message is queued twice.
    pub duplicate_poll: bool,
    /// A message about a job of another client is queued before each of ours.
    pub foreign_poll: bool,
    /// How delivered certificates are spoiled, if at all.
    pub mutation: Option<Mutation>,
    /// A hostile API: prepareOrder answers this DCV line instead of its own, with `{name}` and
    /// `{token}` replaced by the name and the real token (a client must refuse what is not one
    /// TXT or CNAME record for its own names).
    pub dcv_line: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            routes: BTreeMap::new(),
            kinds: Vec::new(),
            rate_limit: 3.0,
            job_outcome: JobOutcome::Normal,
            duplicate_poll: false,
            foreign_poll: false,
            mutation: None,
            dcv_line: None,
        }
    }
}

impl Faults {
    /// Checks that every share lies between 0 and 1.
    pub fn validate(&self) -> Result<(), String> {
        let shares = std::iter::once(("rate", self.rate)).chain(self.routes.iter().map(|(k, v)| (k.as_str(), *v)));
        for (name, v) in shares {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("fault rate for {name} must lie between 0 and 1, not {v}"));
            }
        }
        if self.rate_limit < 0.0 || !self.rate_limit.is_finite() {
            return Err(format!("rate_limit must be 0 or more, not {}", self.rate_limit));
        }
        Ok(())
    }

    fn rate_for(&self, route: &str) -> f64 {
        self.routes.get(route).copied().unwrap_or(self.rate)
    }
}

/// Draws fault decisions from a seeded generator.
#[derive(Debug)]
pub struct FaultDice {
    rng: StdRng,
}

impl FaultDice {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Decides whether this request to `route` fails, and how.
    pub fn roll(&mut self, faults: &Faults, route: &str) -> Option<FaultKind> {
        let rate = faults.rate_for(route);
        if rate <= 0.0 || !self.rng.random_bool(rate.min(1.0)) {
            return None;
        }
        let kinds: &[FaultKind] = if faults.kinds.is_empty() {
            &FaultKind::ALL
        } else {
            &faults.kinds
        };
        Some(kinds[self.rng.random_range(0..kinds.len())])
    }

    /// The generator, for other seeded choices (tokens, serials).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let faults = Faults {
            rate: 0.5,
            ..Faults::default()
        };
        let draw = |seed| {
            let mut dice = FaultDice::new(seed);
            (0..200).map(|_| dice.roll(&faults, "GET /poll")).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|f| f.is_some()).count();
        assert!((60..140).contains(&hits), "about half of 200 should fail, got {hits}");
    }

    #[test]
    fn a_route_rate_overrides_the_global_rate_and_kinds_restrict_the_mix() {
        let faults = Faults {
            rate: 0.0,
            routes: [("POST /certificate".to_string(), 1.0)].into(),
            kinds: vec![FaultKind::Ghost],
            ..Faults::default()
        };
        let mut dice = FaultDice::new(1);
        assert_eq!(dice.roll(&faults, "POST /certificate"), Some(FaultKind::Ghost));
        assert_eq!(dice.roll(&faults, "GET /poll"), None);
    }

    #[test]
    fn shares_outside_zero_to_one_are_refused() {
        let faults = Faults {
            rate: 1.5,
            ..Faults::default()
        };
        assert!(faults.validate().unwrap_err().contains("between 0 and 1"));
        let faults: Result<Faults, _> = serde_json::from_str(r#"{"rate": 0.1, "colour": 1}"#);
        assert!(faults.is_err());
    }
}
