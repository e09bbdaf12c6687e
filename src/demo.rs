//! `certkeeper demo`: the main job on an embedded autodns-sim, with no network and no
//! credentials. It writes a real configuration under the demo directory, issues two
//! certificates (one validated through AutoDNS provisioning, one through a DNS hook), reissues
//! one, and shows the status and the files.

// A command of its own, which talks to the terminal like the command line.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;

use autodns_sim::{Sim, SimConfig};

use crate::config;
use crate::order::Agent;
use crate::run::{self, Exit};

fn say(s: &str) {
    crate::run::say(s);
}

/// The file that marks a directory as the demo's own.
const MARKER: &str = ".certkeeper-demo";

/// Runs the demo in `dir` (`force`: even in a directory the demo did not make).
pub(crate) async fn run(dir: &Path, force: bool) -> Exit {
    if let Err(e) = claim(dir, force) {
        eprintln!("certkeeper demo: {e}");
        return Exit::Config;
    }
    match run_inner(dir).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certkeeper demo: {e:#}");
            Exit::Error
        }
    }
}

/// Makes `dir` the demo's: a new or empty directory is marked; a marked one is reused; any
/// other is refused without `force` (`demo --dir /etc/certkeeper` would wipe real keys). The
/// directory must be one no other user can write, since the demo writes files into it.
fn claim(dir: &Path, force: bool) -> Result<(), String> {
    let existed = dir.exists();
    crate::host::ensure_dir(dir, 0o755).map_err(|e| e.to_string())?;
    let marked = dir.join(MARKER).exists();
    let empty = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .next()
        .is_none();
    if existed && !marked && !empty && !force {
        return Err(format!(
            "{} was not made by the demo (it has no {MARKER}); the demo would overwrite its certkeeper.toml and api-password and remove its state and live directories. Choose another --dir, or add --force",
            dir.display()
        ));
    }
    if !marked {
        std::fs::write(
            dir.join(MARKER),
            "made by `certkeeper demo`; remove the directory when done\n",
        )
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

async fn run_inner(dir: &Path) -> anyhow::Result<Exit> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.canonicalize()?;
    for sub in ["state", "live"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let ca_file = dir.join("root.pem");
    let _ = std::fs::remove_file(&ca_file);
    let sim = Sim::start(SimConfig {
        ca_file: Some(ca_file.clone()),
        ..SimConfig::default()
    })
    .await?;
    say(&format!(
        "Started the embedded AutoDNS simulator: API {}, DNS {}",
        sim.api_url, sim.dns_addr
    ));

    let password = dir.join("api-password");
    let _ = std::fs::remove_file(&password);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&password)?;
        std::io::Write::write_all(&mut f, b"demo-password\n")?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let exe = std::env::current_exe()?;
    let config_path = dir.join("certkeeper.toml");
    let text = format!(
        r#"# Written by `certkeeper demo` for its embedded simulator.
[api]
url = "{api}"
user = "demo"
context = 4
password_file = "api-password"
ca_file = "root.pem"

[store]
state_dir = "state"
live_dir = "live"

[dns]
resolvers = ["{dns}"]
nameserver_port = {port}
check_interval = "200ms"
propagation_timeout = "30s"

[order]
poll_interval = "100ms"
poll_interval_max = "1s"
job_timeout = "2m"

[defaults]
product = "QUICKSSLPREMIUM"
lifetime_months = 12
admin_contact = {{ fname = "Demo", lname = "Admin", email = "admin@example.com", phone = "+49-941-1234560", country = "DE" }}
technical_contact = {{ fname = "Demo", lname = "Admin", email = "admin@example.com", phone = "+49-941-1234560", country = "DE" }}

# AutoDNS publishes the validation record itself.
[[certificate]]
name = "www.example.com"
alt_names = ["example.com"]
dns = "autodns"

# A hook publishes the validation record; certkeeper checks every authoritative nameserver.
[[certificate]]
name = "shop.example.net"
key = "rsa-2048"
dns = "hook"
dns_hook = ["{exe}", "demo-dns-hook", "{sim}", "{ca}"]
"#,
        api = sim.api_url,
        dns = sim.dns_addr,
        port = sim.dns_addr.port(),
        exe = exe.display(),
        sim = sim.sim_url(),
        ca = ca_file.display(),
    );
    // Never through a link someone left: the file is made anew.
    let _ = std::fs::remove_file(&config_path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config_path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))?;
    say(&format!("Wrote {}", config_path.display()));

    let config = config::read(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let agent = Arc::new(Agent::new(config.clone())?);
    agent.store.prepare()?;
    let _lock = agent.store.lock().map_err(anyhow::Error::msg)?;

    say("\n== Issuing both certificates ==");
    let code = run::run_all(&agent, None).await;
    if code != Exit::Ok {
        anyhow::bail!("issuing failed (exit code {}); see the log above", code.code());
    }
    say("\n== Reissuing www.example.com (free within the order term) ==");
    let code = run::run_all(&agent, Some(&["www.example.com".to_string()])).await;
    if code != Exit::Ok {
        anyhow::bail!("reissuing failed (exit code {}); see the log above", code.code());
    }

    say("\n== Status ==");
    say(&crate::status::table(&crate::status::rows(&config)));
    say("== Files ==");
    for c in &config.certificates {
        for f in crate::store::files::ALL {
            say(&format!("  {}", config.store.live_dir.join(&c.name).join(f).display()));
        }
    }
    let ledger = sim.control().ledger();
    say("\n== What the simulated SSL Manager recorded ==");
    for l in &ledger {
        say(&format!(
            "  {:<8} {:<18} charged: {:<5} ctid {}",
            l.kind,
            l.name,
            l.charged,
            l.ctid.as_deref().unwrap_or("-")
        ));
    }
    say(&format!(
        "\n{} paid order(s), {} free reissue(s). Check a certificate yourself:\n  openssl verify -CAfile {} -untrusted {} {}",
        ledger.iter().filter(|l| l.charged).count(),
        ledger.iter().filter(|l| !l.charged).count(),
        ca_file.display(),
        config
            .store
            .live_dir
            .join("www.example.com")
            .join(crate::store::files::CHAIN)
            .display(),
        config
            .store
            .live_dir
            .join("www.example.com")
            .join(crate::store::files::CERT)
            .display(),
    ));
    Ok(Exit::Ok)
}

/// The demo's DNS hook: `certkeeper demo-dns-hook SIM_URL CA_FILE present|cleanup`, with the
/// record in `CERTKEEPER_RECORD_*`.
pub(crate) async fn dns_hook(sim_url: &str, ca_file: &Path, action: &str) -> Exit {
    use crate::hooks::vars;
    let name = std::env::var(vars::RECORD_NAME).unwrap_or_default();
    let kind = std::env::var(vars::RECORD_TYPE).unwrap_or_else(|_| "TXT".into());
    let value = std::env::var(vars::RECORD_VALUE).unwrap_or_default();
    let body = match action {
        "present" => serde_json::json!({ "action": "add", "name": name, "type": kind, "value": value }),
        "cleanup" => serde_json::json!({ "action": "clear", "name": name, "type": kind }),
        other => {
            eprintln!("demo-dns-hook: unknown action {other}");
            return Exit::Error;
        }
    };
    let result = async {
        let pem = std::fs::read(ca_file)?;
        let client = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?)
            .build()?;
        let r = client.post(format!("{sim_url}/dns")).json(&body).send().await?;
        anyhow::ensure!(r.status().is_success(), "the simulator answered {}", r.status());
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("demo-dns-hook: {e:#}");
            Exit::Error
        }
    }
}
