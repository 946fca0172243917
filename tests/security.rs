//! The agent's security model against attacks, with the real agent binary and
//! a small local HTTPS server standing in for MCIAS (the only stand-in the
//! project allows): plaintext and untrusted clients, every token case with
//! its exact status code, the validation cache, the health check, `mcp
//! login`, and no token in the agent's log.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{free_port, Agent, Operator, Podman};
use mcp::proto::agent_client::AgentClient;
use mcp::proto::ListServicesRequest;
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

const TOKEN_ADMIN: &str = "tok-admin-4f1e9a7c2b";
const TOKEN_VIEWER: &str = "tok-viewer-8d3c0b6e1a";
const TOKEN_EXPIRED: &str = "tok-expired-2a9f7e4d6c";
const TOKEN_SHORT: &str = "tok-short-lived-7b2e5c9a0f";
const TOKEN_UNKNOWN: &str = "tok-unknown-3c8a1f6b2d";
const ALL_TOKENS: [&str; 5] = [
    TOKEN_ADMIN,
    TOKEN_VIEWER,
    TOKEN_EXPIRED,
    TOKEN_SHORT,
    TOKEN_UNKNOWN,
];

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[derive(Default)]
struct StubState {
    /// token -> (subject, roles, expires_at)
    tokens: HashMap<String, (String, Vec<String>, i64)>,
    /// Validation requests per token.
    calls: HashMap<String, usize>,
    down: bool,
}

/// A stand-in for MCIAS: HTTPS with its own CA, the validation and login
/// endpoints, and switches for the cases under test. Start it inside a
/// tokio runtime.
struct StubMcias {
    addr: SocketAddr,
    ca_path: std::path::PathBuf,
    state: Arc<Mutex<StubState>>,
    _dir: tempfile::TempDir,
}

impl StubMcias {
    fn start() -> StubMcias {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_path = dir.path().join("mcias-ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let state = Arc::new(Mutex::new(StubState::default()));
        {
            let mut s = state.lock().unwrap();
            let exp = now_secs() + 3600;
            s.tokens.insert(
                TOKEN_ADMIN.into(),
                ("alice".into(), vec!["admin".into()], exp),
            );
            s.tokens.insert(
                TOKEN_VIEWER.into(),
                ("bob".into(), vec!["viewer".into()], exp),
            );
            s.tokens.insert(
                TOKEN_EXPIRED.into(),
                ("carol".into(), vec!["admin".into()], now_secs() - 10),
            );
            s.tokens.insert(
                TOKEN_SHORT.into(),
                ("dave".into(), vec!["admin".into()], now_secs() + 2),
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/token/validate", post(validate))
            .route("/v1/auth/login", post(login))
            .with_state(state.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
        // On the test's runtime: it ends with the test.
        tokio::spawn(async move {
            axum_server::from_tcp_rustls(listener, config)
                .serve(app.into_make_service())
                .await
                .unwrap();
        });
        StubMcias {
            addr,
            ca_path,
            state,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn calls(&self, token: &str) -> usize {
        *self.state.lock().unwrap().calls.get(token).unwrap_or(&0)
    }

    fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

async fn validate(
    State(state): State<Arc<Mutex<StubState>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut s = state.lock().unwrap();
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let token = body["token"].as_str().unwrap_or_default().to_string();
    *s.calls.entry(token.clone()).or_default() += 1;
    match s.tokens.get(&token) {
        Some((subject, roles, exp)) => (
            StatusCode::OK,
            Json(json!({"valid": true, "subject": subject, "roles": roles, "expires_at": exp})),
        ),
        None => (StatusCode::OK, Json(json!({"valid": false}))),
    }
}

async fn login(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body["username"] == "alice" && body["password"] == "correct horse" {
        (
            StatusCode::OK,
            Json(json!({"token": TOKEN_ADMIN, "expires_at": now_secs() + 3600})),
        )
    } else {
        (StatusCode::UNAUTHORIZED, Json(json!({})))
    }
}

fn mcias_agent(podman: &Podman, stub: &StubMcias) -> Agent {
    let ca = stub.ca_path.display().to_string();
    let url = stub.url();
    Agent::start_with(
        podman,
        "n1",
        None,
        &["--auth", "mcias", "--mcias-url", &url, "--mcias-ca", &ca],
    )
}

async fn channel(agent: &Agent, ca_pem: &[u8]) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("127.0.0.1");
    Channel::from_shared(format!("https://127.0.0.1:{}", agent.port))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// ListServices with the given authorization header value; the status code.
async fn list_with(channel: &Channel, authorization: Option<&str>) -> Code {
    let mut client = AgentClient::new(channel.clone());
    let mut request = tonic::Request::new(ListServicesRequest {});
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    match client.list_services(request).await {
        Ok(_) => Code::Ok,
        Err(status) => {
            for t in ALL_TOKENS {
                assert!(
                    !status.message().contains(t),
                    "a token in an error: {status:?}"
                );
            }
            status.code()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_case_gets_its_exact_status_and_no_token_is_logged() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub);
    let ca = std::fs::read(agent.ca_path()).unwrap();
    let ch = channel(&agent, &ca).await.unwrap();

    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(list_with(&ch, None).await, Code::Unauthenticated, "missing");
    assert_eq!(
        list_with(&ch, Some("Basic YWxpY2U6eA==")).await,
        Code::Unauthenticated,
        "malformed"
    );
    assert_eq!(
        list_with(&ch, Some("Bearer")).await,
        Code::Unauthenticated,
        "empty"
    );
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_UNKNOWN))).await,
        Code::Unauthenticated,
        "unknown"
    );
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_EXPIRED))).await,
        Code::Unauthenticated,
        "expired"
    );
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_VIEWER))).await,
        Code::PermissionDenied,
        "wrong role"
    );
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_ADMIN))).await,
        Code::Ok,
        "valid"
    );

    // The health check needs no token; nothing else answers without one.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A valid token is validated once, then served from the cache...
    let before = stub.calls(TOKEN_ADMIN);
    for _ in 0..5 {
        assert_eq!(list_with(&ch, Some(&bearer(TOKEN_ADMIN))).await, Code::Ok);
    }
    assert_eq!(stub.calls(TOKEN_ADMIN), before, "the cache was not used");
    assert_eq!(before, 1);
    // ... but never past the token's expiry.
    assert_eq!(list_with(&ch, Some(&bearer(TOKEN_SHORT))).await, Code::Ok);
    assert_eq!(list_with(&ch, Some(&bearer(TOKEN_SHORT))).await, Code::Ok);
    assert_eq!(stub.calls(TOKEN_SHORT), 1);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_SHORT))).await,
        Code::Unauthenticated
    );
    assert_eq!(
        stub.calls(TOKEN_SHORT),
        2,
        "an expired cache entry was served"
    );

    // MCIAS down: refused as UNAVAILABLE, never accepted (the unknown-to-the-
    // cache viewer token, and a new one).
    stub.set_down(true);
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_VIEWER))).await,
        Code::Unavailable
    );
    assert_eq!(
        list_with(&ch, Some(&bearer("tok-never-seen-1234"))).await,
        Code::Unavailable
    );
    stub.set_down(false);

    // After all of that, the agent's log holds no token.
    let log = agent.log();
    assert!(
        log.contains("refused request"),
        "the refusals are logged:\n{log}"
    );
    for t in ALL_TOKENS {
        assert!(!log.contains(t), "token {t} in the agent log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mcias_means_unavailable() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let ca = stub.ca_path.display().to_string();
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let agent = Agent::start_with(
        &podman,
        "n1",
        None,
        &[
            "--auth",
            "mcias",
            "--mcias-url",
            &nowhere,
            "--mcias-ca",
            &ca,
        ],
    );
    let ch = channel(&agent, &std::fs::read(agent.ca_path()).unwrap())
        .await
        .unwrap();
    let code = list_with(&ch, Some(&format!("Bearer {TOKEN_ADMIN}"))).await;
    assert_eq!(code, Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusting_clients_are_refused() {
    let podman = Podman::start();
    let agent = Agent::start(&podman, "n1");

    // A plaintext HTTP/2 client: the TLS listener never speaks gRPC to it.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", agent.port))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let outcome = match plain.connect().await {
        Err(_) => Code::Unavailable,
        Ok(ch) => list_with(&ch, Some(&format!("Bearer {}", agent.token()))).await,
    };
    assert_ne!(outcome, Code::Ok, "a plaintext client was served");

    // A client that trusts another CA.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&other_key).unwrap().pem();
    assert!(
        channel(&agent, other_ca.as_bytes()).await.is_err(),
        "an untrusted server was accepted"
    );

    // The same through the CLI: it names the problem.
    let operator = Operator::new(&[&agent]);
    let ca_file = operator.home.path().join("other-ca.pem");
    std::fs::write(&ca_file, other_ca).unwrap();
    let config = operator.home.path().join("mcp/mcp.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let ca_line = format!("ca = \"{}\"", agent.ca_path().display());
    std::fs::write(
        &config,
        text.replace(&ca_line, &format!("ca = \"{}\"", ca_file.display())),
    )
    .unwrap();
    let run = operator.fails(&["list"], "cannot reach the agent");
    assert!(
        run.stderr.to_lowercase().contains("certificate") || run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_private_token_that_the_agent_accepts() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub);
    let operator = Operator::new(&[&agent]);
    let config = operator.home.path().join("mcp/mcp.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[mcias]\nurl = \"{}\"\nca = \"{}\"\n",
        stub.url(),
        stub.ca_path.display()
    ));
    std::fs::write(&config, text).unwrap();

    let login = |password: &str| {
        let mut child = operator
            .command(&["login", "--username", "alice"])
            .env_remove("MCP_TOKEN")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = login("wrong");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad username or password"));

    let ok = login("correct horse");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let token_file = operator.home.path().join("mcp/token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), TOKEN_ADMIN);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The stored token works without MCP_TOKEN.
    let list = operator
        .command(&["list"])
        .env_remove("MCP_TOKEN")
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(!String::from_utf8_lossy(&ok.stderr).contains(TOKEN_ADMIN));
}

#[test]
fn init_prints_the_ca_and_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"))
        .args(["init", "--node", "n1", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8_lossy(&run.stdout);
    let ca = dir.path().join("tls/ca.pem");
    assert!(out.contains(&ca.display().to_string()), "{out}");
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint SHA256:"))
        .unwrap()
        .to_string();
    assert_eq!(fp.split(':').count(), 32, "{fp}");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("tls/server.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);
    // A second init keeps the certificate.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"))
        .args(["init", "--node", "n1", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("already initialised"), "{again}");
    assert!(again.contains(&fp));
}
