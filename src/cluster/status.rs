//! `certkeeper status --cluster`: per certificate, the serial the leader published and which
//! members serve it, read from etcd.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Fleet, Material, Report};
use crate::config::Config;

#[derive(Serialize, Debug)]
pub(crate) struct CertView {
    pub(crate) name: String,
    /// The serial the leader published; `None` before its first issuance.
    pub(crate) issued: Option<String>,
    /// Each member that reported, with what it serves.
    pub(crate) members: BTreeMap<String, Report>,
}

#[derive(Serialize, Debug)]
pub(crate) struct FleetView {
    pub(crate) leader: Option<String>,
    pub(crate) certificates: Vec<CertView>,
}

/// Reads the fleet's view from etcd.
pub(crate) async fn read(config: &Config) -> Result<FleetView, String> {
    let cfg = config
        .cluster
        .clone()
        .ok_or_else(|| "the configuration has no [cluster]".to_string())?;
    let fleet = Fleet::connect(cfg)?;
    view(&fleet, config).await
}

/// The fleet's view of `config`'s certificates, read from etcd through `fleet`.
pub(crate) async fn view(fleet: &Fleet, config: &Config) -> Result<FleetView, String> {
    let (material, _) = fleet.list("material/").await?;
    let (reports, _) = fleet.list("members/").await?;
    let (leaders, _) = fleet.list("leader/").await?;
    let mut issued = BTreeMap::new();
    for e in material {
        let Some(name) = e.key.strip_prefix(&fleet.key("material/")) else {
            continue;
        };
        // The serial only; the key stays sealed unless this member's fleet key opens it.
        let serial = fleet
            .seal
            .open(&e.key, &e.value)
            .ok()
            .and_then(|p| serde_json::from_slice::<Material>(&p).ok())
            .map(|m| m.serial);
        issued.insert(name.to_string(), serial);
    }
    let mut by_cert: BTreeMap<String, BTreeMap<String, Report>> = BTreeMap::new();
    for e in reports {
        let Some(rest) = e.key.strip_prefix(&fleet.key("members/")) else {
            continue;
        };
        let Some((member, name)) = rest.split_once('/') else {
            continue;
        };
        if let Ok(r) = serde_json::from_slice::<Report>(&e.value) {
            by_cert
                .entry(name.to_string())
                .or_default()
                .insert(member.to_string(), r);
        }
    }
    // The election's keys, oldest first (by create revision): the first is the leader's.
    let leader = leaders.first().map(|e| String::from_utf8_lossy(&e.value).into_owned());
    let certificates = config
        .certificates
        .iter()
        .map(|c| CertView {
            name: c.name.clone(),
            issued: issued.get(&c.name).cloned().flatten(),
            members: by_cert.remove(&c.name).unwrap_or_default(),
        })
        .collect();
    Ok(FleetView { leader, certificates })
}

impl CertView {
    /// How many members report serving the serial the leader published.
    pub(crate) fn deployed(&self) -> usize {
        self.members
            .values()
            .filter(|r| r.deployed && r.serial.is_some() && r.serial == self.issued)
            .count()
    }
}

/// How long a reading of the fleet's view serves scrapes, and how long one may take.
const METRICS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);
const METRICS_READ: std::time::Duration = std::time::Duration::from_millis(1500);

/// The last reading for the metrics: when, and per certificate the members serving the issued
/// serial (`None`: etcd did not answer in time). One reading at a time.
#[allow(clippy::type_complexity)]
static LAST: tokio::sync::Mutex<Option<(std::time::Instant, Option<Vec<(String, usize)>>)>> =
    tokio::sync::Mutex::const_new(None);

/// A member's fleet metrics: whether etcd answered, whether this member leads (known here, also
/// without etcd), and per certificate how many members serve what the leader published. Read
/// from etcd at most every [`METRICS_FRESH`], each reading within [`METRICS_READ`], so that
/// scrapes neither pile reads on etcd nor lose the gauges when it hangs.
pub(crate) async fn metrics(fleet: &Fleet, config: &Config) -> String {
    let counts = {
        let mut last = LAST.lock().await;
        match &*last {
            Some((at, counts)) if at.elapsed() < METRICS_FRESH => counts.clone(),
            _ => {
                let counts = match tokio::time::timeout(METRICS_READ, view(fleet, config)).await {
                    Ok(Ok(v)) => Some(v.certificates.iter().map(|c| (c.name.clone(), c.deployed())).collect()),
                    _ => None,
                };
                *last = Some((std::time::Instant::now(), counts.clone()));
                counts
            }
        }
    };
    let mut out = format!(
        "# HELP certkeeper_cluster_etcd_up 1 when etcd answered the fleet's last reading (at most 5 s old), else 0.\n# TYPE certkeeper_cluster_etcd_up gauge\ncertkeeper_cluster_etcd_up {}\n# HELP certkeeper_cluster_leader 1 while this member is the fleet's leader, else 0.\n# TYPE certkeeper_cluster_leader gauge\ncertkeeper_cluster_leader {}\n",
        u8::from(counts.is_some()),
        u8::from(fleet.is_leader())
    );
    if let Some(counts) = counts {
        out.push_str("# HELP certkeeper_cluster_members_deployed The fleet's members whose last report says they serve the serial the leader published (a member removed from the fleet counts until its reports are deleted).\n# TYPE certkeeper_cluster_members_deployed gauge\n");
        for (name, n) in counts {
            out.push_str(&format!("certkeeper_cluster_members_deployed{{name=\"{name}\"}} {n}\n"));
        }
    }
    out
}

/// The view as a table: one line per certificate.
pub(crate) fn table(view: &FleetView) -> String {
    let mut out = format!(
        "leader: {}\n{:<40} {:<40} SERVED BY\n",
        view.leader.as_deref().unwrap_or("(none)"),
        "NAME",
        "ISSUED SERIAL"
    );
    for c in &view.certificates {
        let issued = c.issued.as_deref().unwrap_or("-");
        let mut served: Vec<String> = Vec::new();
        for (member, r) in &c.members {
            let line = match (&r.serial, r.deployed, &r.error) {
                (Some(s), true, _) if Some(s.as_str()) == c.issued.as_deref() => member.clone(),
                (_, _, Some(e)) => format!("{member} (failed: {e})"),
                (Some(s), _, None) => format!("{member} (serves {s})"),
                (None, _, None) => format!("{member} (nothing)"),
            };
            served.push(line);
        }
        out.push_str(&format!("{:<40} {:<40} {}\n", c.name, issued, served.join(", ")));
    }
    out
}
