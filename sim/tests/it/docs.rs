use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// `(method, path, body)` of every request example in a help page: a line `METHOD /path`
/// followed by a JSON object (or by nothing, for GET and PUT without a body).
fn requests(text: &str) -> Vec<(String, String, Option<Value>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((method, path)) = line.trim().split_once(' ') else {
            continue;
        };
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) || !path.starts_with('/') || path.contains(' ') {
            continue;
        }
        if i == 0 || lines[i - 1].trim() != "Request" {
            continue; // a row of the task table, not an example
        }
        let body = if lines.get(i + 1).is_some_and(|l| l.trim() == "{") {
            let mut depth = 0;
            let mut text = String::new();
            for l in &lines[i + 1..] {
                text.push_str(l);
                text.push('\n');
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth == 0 {
                    break;
                }
            }
            Some(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("example after '{line}' is not JSON: {e}\n{text}")),
            )
        } else {
            None
        };
        out.push((method.to_string(), path.to_string(), body));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_request_example_of_the_help_pages_gets_an_answer_of_the_documented_shape() {
    let Some(dir) = shared("autodns/docs") else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut replayed = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let examples = requests(&text);
        if examples.is_empty() {
            continue; // the S/MIME page has XML examples only
        }
        let api = start().await;
        let contact = api.contact().await;
        let csr = csr(&["example.com"]);
        let (mut cert_id, mut job, mut msg) = (None::<i64>, None::<i64>, None::<i64>);
        if examples
            .iter()
            .any(|(m, p, _)| m == "PUT" && p.starts_with("/certificate/"))
        {
            // The reissue pages start from an existing certificate.
            let (j, _) = api.order(&["example.com"], contact, true, "setup").await;
            let m = api.wait_poll(j).await;
            cert_id = m["object"]["data"]["id"].as_i64();
            api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
        }
        let mut dns = String::new();
        for (method, path, body) in examples {
            let method: Method = method.parse().unwrap();
            let mut body = body;
            if let Some(b) = body.as_mut() {
                // A real CSR, DCV line and contact in place of the placeholders.
                for key in ["plain", "csr"] {
                    if b.get(key).is_some() {
                        b[key] = json!(csr);
                    }
                }
                if b["authentication"]["dns"].is_string() {
                    b["authentication"]["dns"] = json!(dns);
                }
                for key in ["adminContact", "technicalContact"] {
                    if b.get(key).is_some() {
                        b[key] = json!({"id": contact});
                    }
                }
            }
            let path = path
                .replace("/certiicate/", "/certificate/")
                .replace("$id", &cert_id.map(|i| i.to_string()).unwrap_or_default())
                .replace("{id}", &msg.map(|i| i.to_string()).unwrap_or_default());
            if path == "/poll" {
                let j = job.expect("a poll example follows an order");
                let m = api.wait_poll(j).await;
                msg = m["id"].as_i64();
                cert_id = m["object"]["data"]["id"].as_i64().or(cert_id);
            }
            let a = api.call(method.clone(), &path, body).await;
            assert_eq!(a.status, 200, "{} {method} {path}: {}", file.display(), a.body);
            let def = match (method.as_str(), path.as_str()) {
                ("POST", "/sslcontact") => "JsonResponseDataSslContact",
                ("POST", p) if p.ends_with("prepareOrder") => {
                    dns = dns_line(&a.body);
                    "JsonResponseDataCertificateData"
                }
                ("POST", "/certificate") | ("PUT", _) if path.starts_with("/certificate") => {
                    job = a.body["data"][0]["id"].as_i64();
                    "JsonResponseDataJob"
                }
                ("GET", "/poll") => "JsonResponseDataPollMessage",
                ("PUT", _) => "JsonResponseDataJsonNoData",
                ("GET", _) => "JsonResponseDataCertificate",
                other => panic!("no response definition for {other:?}"),
            };
            assert_schema(def, &a.body);
            replayed += 1;
        }
    }
    assert!(replayed >= 15, "only {replayed} examples were replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_walkthrough_in_the_readme_works_as_written() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("README.md marks its walk-through");
    let end = readme.find("<!-- walkthrough:end -->").unwrap();
    let block = &readme[start..end];
    let script: String = block
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    for tool in ["curl", "openssl"] {
        if std::process::Command::new(tool).arg("--version").output().is_err()
            && std::process::Command::new(tool).arg("version").output().is_err()
        {
            panic!("{tool} is needed by the README walk-through; .ci/run installs it");
        }
    }
    // The script runs in `dir` as in a clone's root, its `mktemp -d` under `dir/tmp`. Its first
    // command, the release build, is the one thing stood in for: a build inside the test would
    // wait for the lock of the `cargo test` that runs it. This `cargo` takes exactly that
    // command and links the simulator the test has built where the build would put it.
    let dir = std::env::temp_dir().join(format!("sim-walkthrough-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::create_dir_all(dir.join("shim")).unwrap();
    let cargo = dir.join("shim/cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\n[ \"$*\" = \"build --release -p autodns-sim\" ] || {{ echo \"unexpected: cargo $*\" >&2; exit 1; }}\nmkdir -p target/release && ln -sf '{}' target/release/autodns-sim\n",
            env!("CARGO_BIN_EXE_autodns-sim")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.join("shim").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .env("TMPDIR", dir.join("tmp"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), async {
        let mut stdout = String::new();
        let mut stderr = String::new();
        use tokio::io::AsyncReadExt;
        child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
        (child.wait().await.unwrap(), stdout, stderr)
    })
    .await;
    // Whatever happened, the simulator the script started is stopped by its PID.
    let work = std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("sim.json")))
        .find(|p| p.exists());
    if let Some(line) = work.and_then(|p| std::fs::read_to_string(p).ok())
        && let Some(pid) = serde_json::from_str::<Value>(line.trim())
            .ok()
            .and_then(|v| v["pid"].as_u64())
    {
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    }
    let (status, stdout, stderr) = out.expect("the walk-through did not finish within 60 s");
    assert!(status.success(), "the walk-through failed:\n{stdout}\n{stderr}");
    for expected in [
        "S0000",
        "S400201",
        "S400110",
        "N400101",
        "S0906",
        "S400104",
        "N400102",
        "S300134",
        "cert.pem: OK",
        "the key matches",
    ] {
        assert!(
            stdout.contains(expected),
            "'{expected}' missing from the walk-through's output:\n{stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
