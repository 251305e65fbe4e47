//! The `tokengate` binary: `check` on good and broken configs, `serve` from
//! TOKENGATE_CONFIG with a clean exit on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Upstream, client};

fn tokengate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokengate"))
}

fn check(path: &Path) -> Output {
    tokengate()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const VALID: &str = "\
upstreams:
  app:
    endpoints: [\"http://127.0.0.1:9\"]
routes:
  - name: public
    match: { path_prefix: / }
    upstream: app
    auth: none
";

#[test]
fn check_accepts_every_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = check(&path);
            assert!(
                out.status.success(),
                "{} was refused:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "config/ holds the reference and sidecar examples"
    );
}

/// Each broken config is refused with exit code 1 and a message naming these fragments.
#[test]
fn check_refuses_broken_configs_naming_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown key",
            VALID.replace("auth: none", "auth: none\n    timeout: 5s"),
            &["timeout", "line"],
        ),
        (
            "route naming a missing upstream",
            VALID.replace("upstream: app", "upstream: ordrs"),
            &["routes[0].upstream", "`public`", "`ordrs`", "app", "fix:"],
        ),
        (
            "route naming a missing issuer",
            format!(
                "{VALID}issuers:\n  - name: corp\n    issuer: https://idp\n    audiences: [a]\n    jwks: {{ url: \"https://idp/jwks\" }}\n"
            )
            .replace("auth: none", "auth:\n      issuers: [crop]"),
            &["routes[0].auth.issuers", "`crop`", "corp"],
        ),
        (
            "duration without a unit",
            VALID.replace("endpoints:", "connect_timeout: 30\n    endpoints:"),
            &["30s"],
        ),
        (
            "token route without issuers",
            VALID.replace("    auth: none\n", ""),
            &["routes[0].auth", "auth: none", "issuers"],
        ),
        (
            "missing JWKS file",
            format!(
                "{VALID}issuers:\n  - name: corp\n    issuer: https://idp\n    audiences: [a]\n    jwks: {{ file: no-such-jwks.json }}\n"
            ),
            &["issuers[0].jwks.file", "no-such-jwks.json"],
        ),
        (
            "JWKS file without a usable key",
            format!(
                "{VALID}issuers:\n  - name: corp\n    issuer: https://idp\n    audiences: [a]\n    jwks: {{ file: empty-jwks.json }}\n"
            ),
            &["issuers[0].jwks.file", "no usable signing key", "fix:"],
        ),
        (
            "malformed revocation line",
            format!("{VALID}revocation:\n  sources:\n    - file: bad-revoked.txt\n"),
            &["revocation.sources[0].file", "line 2", "jti:"],
        ),
        (
            "HMAC algorithm",
            format!(
                "{VALID}issuers:\n  - name: corp\n    issuer: https://idp\n    audiences: [a]\n    jwks: {{ url: \"https://idp/jwks\" }}\n    algorithms: [HS256]\n"
            ),
            &["issuers[0].algorithms", "HS256", "never"],
        ),
        (
            "empty audiences",
            format!(
                "{VALID}issuers:\n  - name: corp\n    issuer: https://idp\n    audiences: []\n    jwks: {{ url: \"https://idp/jwks\" }}\n"
            ),
            &["issuers[0].audiences"],
        ),
        (
            "path not in normal form",
            VALID.replace("path_prefix: /", "path_prefix: /a/../b"),
            &["routes[0].match.path_prefix", "`/b`"],
        ),
        (
            "duplicate YAML key",
            VALID.replace("    auth: none\n", "    auth: none\n    auth: none\n"),
            &["auth"],
        ),
        (
            "TLS files missing",
            format!("server:\n  tls: {{ cert: c.pem, key: k.pem }}\n{VALID}"),
            &["server.tls", "fix:"],
        ),
        ("not YAML at all", "routes: [\n".to_owned(), &["line"]),
        (
            "bad listen address",
            format!("server:\n  listen: \"localhost\"\n{VALID}"),
            &["server.listen", "0.0.0.0:8080"],
        ),
    ];
    std::fs::write(
        dir.path().join("empty-jwks.json"),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("bad-revoked.txt"), "good\njti:\n").unwrap();
    for (name, text, fragments) in cases {
        let path = write(dir.path(), "broken.yaml", text);
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: expected exit 1, got {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("broken.yaml"),
            "{name}: the file is named:\n{stderr}"
        );
        for fragment in *fragments {
            assert!(
                stderr.contains(fragment),
                "{name}: `{fragment}` missing from:\n{stderr}"
            );
        }
    }
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = check(Path::new("/nonexistent/tokengate.yaml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tokengate.yaml"));
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_reads_tokengate_config_and_exits_cleanly_on_sigterm() {
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "tokengate.yaml",
        &format!(
            "server:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n{}",
            VALID.replace("http://127.0.0.1:9", &upstream.url())
        ),
    );
    let mut command = tokengate();
    command
        .args(["--log-format", "json", "serve"])
        .env("TOKENGATE_CONFIG", &config);
    let mut served = support::Served::spawn(command);
    let (addr, lines_rx) = (served.addr, &served.lines);
    let response = client()
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let access = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an access log line");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["target"] == "tokengate::access" {
            break event;
        }
    };
    assert_eq!(access["route"], "public");
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream"], "app");
    assert!(
        access["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    let pid = served.child.id().to_string();
    // SIGHUP does not end the process.
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the gateway"
    );
    let response = client()
        .get(format!("http://{addr}/after-hup"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[tokio::test]
async fn the_demo_prints_tokens_and_curl_lines_that_work() {
    let mut child = Running(
        tokengate()
            .arg("demo")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut base, mut reader, mut outsider) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while base.is_none() || reader.is_none() || outsider.is_none() {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo printed its address and tokens");
        let value = |prefix: &str| {
            line.trim()
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        if let Some(rest) = line.strip_prefix("tokengate demo: gateway on http://") {
            base = rest.split(',').next().map(str::to_owned);
        }
        reader = reader.or_else(|| value("READER=\""));
        outsider = outsider.or_else(|| value("OUTSIDER=\""));
    }
    let (base, reader, outsider) = (base.unwrap(), reader.unwrap(), outsider.unwrap());
    let url = format!("http://{base}/orders/42");
    let ok = client()
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text()
            .await
            .unwrap()
            .contains("\"x-auth-subject\": \"alice\"")
    );
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&outsider)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    let public = client()
        .get(format!("http://{base}/public/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the demo ignored Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
