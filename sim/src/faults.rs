//! Named misbehaviours, chosen by a seeded random generator so that a failing run can be repeated.
//!
//! Transport and body faults are decided per request, before the handler runs, except `ghost`:
//! the operation takes effect and then the answer is lost, which is what makes a careless client
//! pay twice. Job and delivery faults change what an order does later.

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// HTTP 429 with the error envelope, answered as `rate_limit_answer` says (`Retry-After`
    /// only with `"429_retry_after"`).
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

/// How a client over the rate limit is answered.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum RateLimitAnswer {
    /// HTTP 429 with the error envelope and no `Retry-After` (none is documented).
    #[default]
    #[serde(rename = "429")]
    Status429,
    /// The request is held until it fits the limit, then served.
    #[serde(rename = "delay")]
    Delay,
    /// HTTP 429 with the error envelope and `Retry-After` (the simulator's earlier, kinder form).
    #[serde(rename = "429_retry_after")]
    Status429RetryAfter,
}

/// How precise the `created` time of jobs and certificates is.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreatedPrecision {
    /// To the second (milliseconds zero).
    #[default]
    Second,
    /// Truncated to midnight, as the 2018 samples show (`2018-12-11T00:00:00.000+0100`); a
    /// `created` search filter compares against the truncated value.
    Day,
}

/// Which CA certificates `certificationAuthority` lists.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaList {
    /// The intermediate, then the root.
    #[default]
    Both,
    /// The intermediate only (the XML info sample).
    One,
    /// None: an empty list (the 2022 JS SDK mock).
    #[serde(rename = "none")]
    Empty,
}

/// How prepareOrder (and the certificate's `authentication`) write the DNS validation entry.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DcvForm {
    /// The entry has `name` and `provisioning`; the line is `NAME.<TAB>300<TAB>IN<TAB>TXT<TAB>"token"`
    /// (the spec, and the 2020 JS SDK mock).
    #[default]
    Spec,
    /// A double tab after the record name: `NAME.<TAB><TAB>300<TAB>IN<TAB>TXT<TAB>"token"`
    /// (the 2018 help pages).
    DoubleTab,
    /// The entry has no `name` (nor `provisioning`): the client must read the name from the line
    /// (the 2018 help pages).
    NoName,
    /// Both of the above: exactly the 2018 help pages' prepareOrder answer.
    DoubleTabNoName,
}

impl DcvForm {
    pub fn double_tab(self) -> bool {
        matches!(self, Self::DoubleTab | Self::DoubleTabNoName)
    }

    pub fn named(self) -> bool {
        matches!(self, Self::Spec | Self::DoubleTab)
    }
}

/// The fault settings. Every field has a default that makes the simulator behave as the real
/// samples in `shared/autodns/real/` show the service: friendlier or older forms are knobs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests (0.0 to 1.0) that fail, on every route not named in `routes`.
    pub rate: f64,
    /// Per-route shares, keyed like `"POST /certificate"` or `"PUT /certificate/{id}"`.
    pub routes: BTreeMap<String, f64>,
    /// The kinds a failing request picks from, evenly; empty means all of them.
    pub kinds: Vec<FaultKind>,
    /// Client requests allowed per second per client IP address; 0 turns the limit off
    /// (default 3, as the help page "JSON API Basics" documents).
    pub rate_limit: f64,
    /// How a request over the rate limit is answered: `"429"` (default, no Retry-After),
    /// `"delay"` or `"429_retry_after"`.
    pub rate_limit_answer: RateLimitAnswer,
    /// How new jobs end.
    pub job_outcome: JobOutcome,
    /// Every poll message is queued twice.
    pub duplicate_poll: bool,
    /// Before each of our poll messages, a foreign one is queued: alternately a message about
    /// another client's job (another ctid) and a system notice without a job. It is the queue's
    /// head and stays there, unconfirmed by its owner, for `foreign_poll_hold`; then it is gone.
    /// A client may confirm it (the API accepts that), but the simulator counts it
    /// (`foreign_confirmed` in `GET /_sim/stats`).
    pub foreign_poll: bool,
    /// How long a foreign poll message stays at the head of the queue (default 10 min), e.g.
    /// `"10m"`, `"500ms"` or a number of seconds.
    #[serde(with = "duration_text")]
    pub foreign_poll_hold: Duration,
    /// How delivered certificates are spoiled, if at all.
    pub mutation: Option<Mutation>,
    /// A hostile API: prepareOrder answers this DCV line instead of its own, with `{name}` and
    /// `{token}` replaced by the name and the real token (a client must refuse what is not one
    /// TXT or CNAME record for its own names).
    pub dcv_line: Option<String>,
    /// A hostile API: prepareOrder's FILE entries name this `fileName` instead of their own,
    /// with `{name}` replaced by the name (a client must refuse what could leave the web root or
    /// names another host).
    pub file_name: Option<String>,
    /// Jobs carry the spec's `events[{jobId, ctid, object, type, subtype}]`, with the ctid of
    /// the request that started them. No real sample has them (default false).
    pub job_event_ctid: bool,
    /// A job that has ended stays at `GET /job/{id}` and in `POST /job/_search` as well as in
    /// the history. By default it moves: `GET /job/{id}` answers 404 `EF300101`, and it is
    /// served by `GET /job/history/{id}` and `POST /job/history/_search` only.
    pub finished_jobs_stay: bool,
    /// When a DNS job first becomes `DEFERRED` (its record not yet served), a poll message
    /// about it (job status DEFERRED, not final) is queued.
    pub notify_deferred: bool,
    /// `POST /job/_search` answers each job's `object.data` (the certificate id). The real
    /// sample has none, so a client cannot learn the certificate id there (default false).
    pub job_search_data: bool,
    /// `POST /certificate/_search` answers each certificate with its `id` and `name` only. No
    /// real search answer is published, and the API's `keys[]` names extra fields to return, so
    /// the default list may be short; a client must read the rest with `GET /certificate/{id}`
    /// (default false: the full certificate, as info answers it).
    pub search_brief: bool,
    /// `"second"` (default) or `"day"`: `created` of jobs and certificates truncated to midnight.
    pub created_precision: CreatedPrecision,
    /// `certificationAuthority`: `"both"` (default: intermediate, root), `"one"` (intermediate)
    /// or `"none"` (an empty list).
    pub ca_list: CaList,
    /// The certificate shows `payable` (the term end), `multiyear` and `reissueRequired`, as
    /// the 2022 sample does; the 2018–2020 samples have none of them (default false).
    pub payable: bool,
    /// The DNS validation entry: `"spec"` (default), `"double_tab"`, `"no_name"` or
    /// `"double_tab_no_name"`.
    pub dcv_form: DcvForm,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            routes: BTreeMap::new(),
            kinds: Vec::new(),
            rate_limit: 3.0,
            rate_limit_answer: RateLimitAnswer::default(),
            job_outcome: JobOutcome::Normal,
            duplicate_poll: false,
            foreign_poll: false,
            foreign_poll_hold: Duration::from_secs(600),
            mutation: None,
            dcv_line: None,
            file_name: None,
            job_event_ctid: false,
            finished_jobs_stay: false,
            notify_deferred: false,
            job_search_data: false,
            search_brief: false,
            created_precision: CreatedPrecision::default(),
            ca_list: CaList::default(),
            payable: false,
            dcv_form: DcvForm::default(),
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

/// A duration as text (`"10m"`, `"250ms"`) or a number of seconds.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Seconds(f64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Seconds(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
            Text::Seconds(s) => Err(serde::de::Error::custom(format!("{s} is not a duration"))),
            Text::Text(t) => crate::config::parse_duration(&t).map_err(serde::de::Error::custom),
        }
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
    fn every_knob_has_its_documented_name_and_a_sample_true_default() {
        let v = serde_json::to_value(Faults::default()).unwrap();
        for (knob, default) in [
            ("rate_limit", serde_json::json!(3.0)),
            ("rate_limit_answer", "429".into()),
            ("foreign_poll", false.into()),
            ("foreign_poll_hold", "600s".into()),
            ("job_event_ctid", false.into()),
            ("finished_jobs_stay", false.into()),
            ("notify_deferred", false.into()),
            ("job_search_data", false.into()),
            ("search_brief", false.into()),
            ("created_precision", "second".into()),
            ("ca_list", "both".into()),
            ("payable", false.into()),
            ("dcv_form", "spec".into()),
        ] {
            assert_eq!(v[knob], default, "{knob}");
        }
        let f: Faults = serde_json::from_str(
            r#"{"rate_limit_answer": "429_retry_after", "foreign_poll_hold": "250ms", "ca_list": "none",
                "dcv_form": "double_tab_no_name", "created_precision": "day", "payable": true}"#,
        )
        .unwrap();
        assert_eq!(
            (
                f.rate_limit_answer,
                f.foreign_poll_hold,
                f.ca_list,
                f.dcv_form,
                f.created_precision
            ),
            (
                RateLimitAnswer::Status429RetryAfter,
                Duration::from_millis(250),
                CaList::Empty,
                DcvForm::DoubleTabNoName,
                CreatedPrecision::Day
            )
        );
        assert_eq!(
            serde_json::from_value::<Faults>(serde_json::to_value(&f).unwrap()).unwrap(),
            f
        );
        let f: Faults = serde_json::from_str(r#"{"foreign_poll_hold": 1.5, "rate_limit_answer": "delay"}"#).unwrap();
        assert_eq!(
            (f.foreign_poll_hold, f.rate_limit_answer),
            (Duration::from_millis(1500), RateLimitAnswer::Delay)
        );
        assert!(serde_json::from_str::<Faults>(r#"{"ca_list": "all"}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"foreign_poll_hold": "soon"}"#).is_err());
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
