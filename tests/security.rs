//! The agent's security model against attacks, with the real agent binary and
//! a small local HTTPS server standing in for MCIAS (the only stand-in the
//! project allows): it signs real Ed25519 JWTs, publishes its public key as a
//! JWK or a JWKS, answers online validations in each shape MCIAS may use, and
//! logs in (service name, tags, TOTP). Plaintext and untrusted clients, every
//! token case with its exact status code, local verification with MCIAS
//! stopped, forged tokens, the validation cache and its limits, the
//! authorization table, `mcp login`, `mcp whoami`, and no token in the
//! agent's log.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{free_port, Agent, Operator, Podman, Run, TEST_IMAGE};
use mcp::proto::agent_client::AgentClient;
use mcp::proto::files_client::FilesClient;
use mcp::proto::{DeployRequest, ListServicesRequest, PullRequest, WhoAmIRequest};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Status};

// Opaque tokens, for online validation.
const TOKEN_ADMIN: &str = "tok-admin-4f1e9a7c2b";
const TOKEN_VIEWER: &str = "tok-viewer-8d3c0b6e1a";
const TOKEN_GUEST: &str = "tok-guest-5e2d8c1f7a";
const TOKEN_USER: &str = "tok-user-9b4a6e2c0d";
const TOKEN_EXPIRED: &str = "tok-expired-2a9f7e4d6c";
const TOKEN_SHORT: &str = "tok-short-lived-7b2e5c9a0f";
const TOKEN_UNKNOWN: &str = "tok-unknown-3c8a1f6b2d";
const ALL_TOKENS: [&str; 7] = [
    TOKEN_ADMIN,
    TOKEN_VIEWER,
    TOKEN_GUEST,
    TOKEN_USER,
    TOKEN_EXPIRED,
    TOKEN_SHORT,
    TOKEN_UNKNOWN,
];
/// The `iss` of the stub's JWTs.
const ISSUER: &str = "https://mcias.test";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// `header.claims.signature`, signed with `key` (Ed25519).
fn sign(key: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(key.sign(input.as_bytes()).as_ref()))
}

/// Claims as MCIAS issues them.
fn claims(sub: &str, username: Option<&str>, roles: &[&str], exp: i64) -> Value {
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let mut c = json!({
        "sub": sub, "roles": roles, "iss": ISSUER, "iat": now_secs(), "exp": exp,
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)),
    });
    if let Some(u) = username {
        c["username"] = json!(u);
    }
    c
}

#[derive(Default)]
struct StubState {
    /// Opaque token -> (HTTP status, body) of the validation endpoint;
    /// unknown tokens get 200 `{"valid": false}`.
    answers: HashMap<String, (u16, Value)>,
    /// Validation requests per token.
    calls: HashMap<String, usize>,
    validations: usize,
    key_fetches: usize,
    /// Validations and key fetches answer 503.
    down: bool,
    /// The key is served as one JWK rather than a JWKS.
    single_jwk: bool,
    /// Validations wait for `release` (the in-flight cap); how many wait.
    stalled: bool,
    waiting: usize,
    /// Login request bodies, passwords included (the stub's own record).
    logins: Vec<Value>,
}

struct Shared {
    state: Mutex<StubState>,
    key: Ed25519KeyPair,
    release: tokio::sync::watch::Sender<bool>,
}

/// A stand-in for MCIAS: HTTPS with its own CA, the keys, validation and
/// login endpoints, and switches for the cases under test. Start it inside
/// a tokio runtime.
struct StubMcias {
    addr: SocketAddr,
    ca_path: std::path::PathBuf,
    shared: Arc<Shared>,
    handle: axum_server::Handle,
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

        let shared = Arc::new(Shared {
            state: Mutex::new(StubState::default()),
            key: new_key(),
            release: tokio::sync::watch::channel(false).0,
        });
        {
            let mut s = shared.state.lock().unwrap();
            let exp = now_secs() + 3600;
            let valid = |sub: &str, roles: &[&str], exp: i64| {
                (
                    200,
                    json!({"valid": true, "subject": sub, "roles": roles, "expires_at": exp}),
                )
            };
            s.answers
                .insert(TOKEN_ADMIN.into(), valid("alice", &["admin"], exp));
            s.answers
                .insert(TOKEN_VIEWER.into(), valid("bob", &["viewer"], exp));
            s.answers
                .insert(TOKEN_GUEST.into(), valid("gus", &["guest"], exp));
            s.answers
                .insert(TOKEN_USER.into(), valid("uma", &["user"], exp));
            s.answers.insert(
                TOKEN_EXPIRED.into(),
                valid("carol", &["admin"], now_secs() - 10),
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/keys", get(keys))
            .route("/v1/token/validate", post(validate))
            .route("/v1/auth/login", post(stub_login))
            .with_state(shared.clone());
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
        let handle = axum_server::Handle::new();
        // On the test's runtime: it ends with the test, or with stop().
        let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
        tokio::spawn(async move {
            server.serve(app.into_make_service()).await.unwrap();
        });
        StubMcias {
            addr,
            ca_path,
            shared,
            handle,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StubState> {
        self.shared.state.lock().unwrap()
    }

    fn calls(&self, token: &str) -> usize {
        *self.state().calls.get(token).unwrap_or(&0)
    }

    fn answer(&self, token: &str, status: u16, body: Value) {
        self.state().answers.insert(token.into(), (status, body));
    }

    /// A JWT signed with the stub's key, as MCIAS issues them.
    fn jwt(&self, sub: &str, username: Option<&str>, roles: &[&str], exp: i64) -> String {
        sign(
            &self.shared.key,
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}),
            &claims(sub, username, roles, exp),
        )
    }

    fn public_key(&self) -> Vec<u8> {
        self.shared.key.public_key().as_ref().to_vec()
    }

    /// Stops serving, and waits until the port refuses connections.
    async fn stop(&self) {
        self.handle.shutdown();
        until("the stub MCIAS to stop", Duration::from_secs(10), || {
            std::net::TcpStream::connect(self.addr).is_err()
        })
        .await;
    }
}

async fn keys(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    let mut s = shared.state.lock().unwrap();
    s.key_fetches += 1;
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "k1",
        "x": b64(shared.key.public_key().as_ref()),
    });
    if s.single_jwk {
        return (StatusCode::OK, Json(jwk));
    }
    // A key of another type comes first: it must be skipped.
    let rsa = json!({"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"});
    (StatusCode::OK, Json(json!({ "keys": [rsa, jwk] })))
}

async fn validate(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let token = body["token"].as_str().unwrap_or_default().to_string();
    let stalled = {
        let mut s = shared.state.lock().unwrap();
        if s.down {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
        }
        *s.calls.entry(token.clone()).or_default() += 1;
        s.validations += 1;
        if s.stalled {
            s.waiting += 1;
        }
        s.stalled
    };
    if stalled {
        let mut released = shared.release.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
    let s = shared.state.lock().unwrap();
    match s.answers.get(&token) {
        Some((status, answer)) => (StatusCode::from_u16(*status).unwrap(), Json(answer.clone())),
        None => (StatusCode::OK, Json(json!({"valid": false}))),
    }
}

/// alice: plain login; tina: TOTP 123456; nora: an answer without
/// expires_at; mallory: refused by policy; anyone else: bad credentials.
async fn stub_login(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    shared.state.lock().unwrap().logins.push(body.clone());
    let exp = now_secs() + 3600;
    let token = |sub: &str, user: &str| {
        sign(
            &shared.key,
            &json!({"alg": "EdDSA", "kid": "k1"}),
            &claims(sub, Some(user), &["admin"], exp),
        )
    };
    let user = body["username"].as_str().unwrap_or_default();
    let password = body["password"].as_str().unwrap_or_default();
    match (user, password, body["totp_code"].as_str()) {
        ("alice", "correct horse", _) => (
            StatusCode::OK,
            Json(json!({"token": token("u-alice", "alice"), "expires_at": exp})),
        ),
        ("tina", "pw", None) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"totp_required": true})),
        ),
        ("tina", "pw", Some("123456")) => (
            StatusCode::OK,
            Json(json!({"token": token("u-tina", "tina"), "expires_at": rfc3339(exp)})),
        ),
        ("tina", "pw", Some(_)) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"totp_required": true, "error": "bad TOTP code"})),
        ),
        ("nora", "pw", _) => (
            StatusCode::OK,
            Json(json!({"token": token("u-nora", "nora")})),
        ),
        ("mallory", _, _) => (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "account locked by policy"})),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid credentials"})),
        ),
    }
}

/// Polls `ready` every 50 ms until it holds, or panics after `timeout`.
async fn until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mcias_agent(podman: &Podman, stub: &StubMcias, config: Option<&str>, extra: &[&str]) -> Agent {
    let ca = stub.ca_path.display().to_string();
    let url = stub.url();
    let mut args = vec!["--auth", "mcias", "--mcias-url", &url, "--mcias-ca", &ca];
    args.extend_from_slice(extra);
    Agent::start_with(podman, "n1", config, &args)
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

async fn agent_channel(agent: &Agent) -> Channel {
    channel(agent, &std::fs::read(agent.ca_path()).unwrap())
        .await
        .unwrap()
}

/// `message` with `authorization: Bearer <token>`.
fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The status code of a call; its message must not hold `token` (nor, for a
/// JWT, its signature).
fn code_of<T>(result: Result<T, Status>, token: &str) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => {
            assert!(
                !status.message().contains(token) && !contains_signature(status.message(), token),
                "a token in an error: {status:?}"
            );
            status.code()
        }
    }
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

/// ListServices (read level) with `token`.
async fn list_as(ch: &Channel, token: &str) -> Result<(), Status> {
    AgentClient::new(ch.clone())
        .list_services(authed(ListServicesRequest {}, token))
        .await
        .map(|_| ())
}

/// Deploy without a definition (operate level): INVALID_ARGUMENT once
/// authorization let it through, PERMISSION_DENIED before.
async fn deploy_as(ch: &Channel, token: &str) -> Result<(), Status> {
    AgentClient::new(ch.clone())
        .deploy(authed(DeployRequest::default(), token))
        .await
        .map(|_| ())
}

/// Files/Pull (read level) of a file that does not exist.
async fn pull_missing_as(ch: &Channel, token: &str) -> Result<(), Status> {
    let request = PullRequest {
        service: "web".into(),
        path: "missing.txt".into(),
    };
    FilesClient::new(ch.clone())
        .pull(authed(request, token))
        .await
        .map(|_| ())
}

/// A unary call of `path` (any path: the table decides) with an empty body.
async fn call_path(ch: &Channel, path: &'static str, token: &str) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec =
        tonic_prost::ProstCodec::<ListServicesRequest, mcp::proto::ListServicesResponse>::default();
    grpc.unary(
        authed(ListServicesRequest {}, token),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| ())
}

/// `mcp` with `token` as MCP_TOKEN.
fn run_as(operator: &Operator, token: &str, args: &[&str]) -> Run {
    let out = operator
        .command(args)
        .env("MCP_TOKEN", token)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether `text` holds the signature part of a JWT `token` (when it has one).
fn contains_signature(text: &str, token: &str) -> bool {
    match token.rsplit_once('.') {
        Some((_, signature)) if signature.len() >= 16 => text.contains(signature),
        _ => false,
    }
}

fn assert_not_logged(agent: &Agent, tokens: &[&str]) {
    let log = agent.log();
    for t in tokens {
        assert!(
            !log.contains(t) && !contains_signature(&log, t),
            "token {t} in the agent log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_case_gets_its_exact_status_and_no_token_is_logged() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub, None, &["--mcias-verify", "online"]);
    let ch = agent_channel(&agent).await;

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
        list_with(&ch, Some(&bearer(TOKEN_GUEST))).await,
        Code::PermissionDenied,
        "a guest gets nothing"
    );
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_VIEWER))).await,
        Code::Ok,
        "a viewer reads"
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
    // ... an invalid one is remembered for a while too ...
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_UNKNOWN))).await,
        Code::Unauthenticated
    );
    assert_eq!(stub.calls(TOKEN_UNKNOWN), 1, "no negative cache");
    // ... but a valid one never past the token's expiry.
    let short_expiry = now_secs() + 2;
    stub.answer(
        TOKEN_SHORT,
        200,
        json!({"valid": true, "sub": "dave", "roles": ["admin"], "expires_at": short_expiry}),
    );
    assert_eq!(list_with(&ch, Some(&bearer(TOKEN_SHORT))).await, Code::Ok);
    assert_eq!(list_with(&ch, Some(&bearer(TOKEN_SHORT))).await, Code::Ok);
    assert_eq!(stub.calls(TOKEN_SHORT), 1);
    // Past the token's expiry (the clock is the condition).
    until("the short token's expiry", Duration::from_secs(10), || {
        now_secs() > short_expiry
    })
    .await;
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_SHORT))).await,
        Code::Unauthenticated
    );
    assert_eq!(
        stub.calls(TOKEN_SHORT),
        2,
        "an expired cache entry was served"
    );

    // MCIAS down: a token it has not vouched for lately is refused as
    // UNAVAILABLE, never accepted; one it has is still served from the cache.
    stub.state().down = true;
    assert_eq!(
        list_with(&ch, Some(&bearer(TOKEN_USER))).await,
        Code::Unavailable
    );
    assert_eq!(
        list_with(&ch, Some(&bearer("tok-never-seen-1234"))).await,
        Code::Unavailable
    );
    assert_eq!(list_with(&ch, Some(&bearer(TOKEN_ADMIN))).await, Code::Ok);
    stub.state().down = false;
    // Online mode never fetches keys.
    assert_eq!(stub.state().key_fetches, 0);

    // After all of that, the agent's log holds no token.
    let log = agent.log();
    assert!(
        log.contains("refused request"),
        "the refusals are logged:\n{log}"
    );
    assert_not_logged(&agent, &ALL_TOKENS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mcias_means_unavailable() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let ca = stub.ca_path.display().to_string();
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let flags = [
        "--auth",
        "mcias",
        "--mcias-url",
        &nowhere,
        "--mcias-ca",
        &ca,
    ];
    let auto = Agent::start_with(&podman, "n1", None, &flags);
    let ch = agent_channel(&auto).await;
    // No key could be fetched: auto goes online, which cannot answer.
    let code = list_with(&ch, Some(&format!("Bearer {TOKEN_ADMIN}"))).await;
    assert_eq!(code, Code::Unavailable);
    let jwt = stub.jwt("u-1", None, &["admin"], now_secs() + 600);
    assert_eq!(code_of(list_as(&ch, &jwt).await, &jwt), Code::Unavailable);

    // Local verification without a key: unavailable too, and a token that is
    // not even a JWT is refused outright.
    let mut local_flags = flags.to_vec();
    local_flags.extend(["--mcias-verify", "local"]);
    let local = Agent::start_with(&podman, "n2", None, &local_flags);
    let ch = agent_channel(&local).await;
    let status = list_as(&ch, &jwt).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("signing key"), "{status:?}");
    assert_eq!(
        code_of(list_as(&ch, TOKEN_ADMIN).await, TOKEN_ADMIN),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_verify_locally_with_mcias_stopped_and_forgeries_are_refused() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub, None, &["--mcias-issuer", ISSUER]);
    let ch = agent_channel(&agent).await;
    let exp = now_secs() + 600;
    let mut used = Vec::new();

    // MCIAS up: the key is fetched (a JWKS, its RSA key skipped) and the
    // token verified locally, without a validation call.
    let good = stub.jwt("u-alice", Some("alice"), &["admin"], exp);
    assert_eq!(code_of(list_as(&ch, &good).await, &good), Code::Ok);
    assert!(stub.state().key_fetches >= 1);
    // Garbage is refused locally too: no flood reaches MCIAS.
    for garbage in ["tok-random-1", "a.b.c", TOKEN_ADMIN] {
        assert_eq!(
            code_of(list_as(&ch, garbage).await, garbage),
            Code::Unauthenticated,
            "{garbage}"
        );
    }
    assert_eq!(stub.state().validations, 0, "a token went online");
    used.push(good);

    stub.stop().await;

    // A valid JWT still verifies: the key is held.
    let again = stub.jwt("u-bob", Some("bob"), &["user"], exp);
    assert_eq!(code_of(list_as(&ch, &again).await, &again), Code::Ok);
    used.push(again.clone());

    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"});
    let admin = claims("u-eve", Some("eve"), &["admin"], exp);
    let expired = stub.jwt("u-alice", Some("alice"), &["admin"], now_secs() - 10);
    let other_key = sign(&new_key(), &header, &admin);
    let other_kid = sign(&new_key(), &json!({"alg": "EdDSA", "kid": "k2"}), &admin);
    let other_issuer = {
        let mut c = admin.clone();
        c["iss"] = json!("https://elsewhere.test");
        sign(&stub.shared.key, &header, &c)
    };
    let unsigned = |alg: &str| {
        format!(
            "{}.{}",
            b64(json!({"alg": alg, "typ": "JWT", "kid": "k1"})
                .to_string()
                .as_bytes()),
            b64(admin.to_string().as_bytes())
        )
    };
    let alg_none = format!("{}.", unsigned("none"));
    let hmac = |secret: &[u8]| {
        let input = unsigned("HS256");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "{input}.{}",
            b64(ring::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let public = stub.public_key();
    let hs256_raw = hmac(&public);
    let hs256_jwk_x = hmac(b64(&public).as_bytes());
    let rs256 = format!("{}.{}", unsigned("RS256"), b64(&[7u8; 256]));
    // A viewer's token with its payload swapped for an admin's.
    let tampered = {
        let viewer = stub.jwt("u-eve", Some("eve"), &["viewer"], exp);
        let parts: Vec<&str> = viewer.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(admin.to_string().as_bytes()),
            parts[2]
        )
    };
    for (what, token) in [
        ("expired", &expired),
        ("signed by another key", &other_key),
        ("signed by another key, unknown kid", &other_kid),
        ("another issuer", &other_issuer),
        ("alg none", &alg_none),
        ("HS256 keyed with the public key", &hs256_raw),
        ("HS256 keyed with the JWK's x", &hs256_jwk_x),
        ("RS256", &rs256),
        ("tampered payload", &tampered),
    ] {
        let status = list_as(&ch, token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        code_of::<()>(Err(status), token);
        used.push(token.clone());
    }
    // Verified locally, the caller is who the claims say.
    let who = AgentClient::new(ch.clone())
        .who_am_i(authed(WhoAmIRequest {}, &again))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.name.as_str(), who.subject.as_str(), who.level.as_str()),
        ("bob", "u-bob", "operate")
    );
    assert_eq!(who.roles, vec!["user"]);
    assert_eq!(who.expires_at, exp);

    let refs: Vec<&str> = used.iter().map(String::as_str).collect();
    assert_not_logged(&agent, &refs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_jwk_is_read_and_local_mode_never_asks_online() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    stub.state().single_jwk = true;
    let agent = mcias_agent(&podman, &stub, None, &["--mcias-verify", "local"]);
    let ch = agent_channel(&agent).await;
    let jwt = stub.jwt("u-1", None, &["viewer"], now_secs() + 600);
    assert_eq!(code_of(list_as(&ch, &jwt).await, &jwt), Code::Ok);
    assert_eq!(
        code_of(list_as(&ch, TOKEN_ADMIN).await, TOKEN_ADMIN),
        Code::Unauthenticated
    );
    assert_eq!(stub.state().validations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_answers_in_each_shape_and_the_in_flight_cap() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub, None, &["--mcias-verify", "online"]);
    let operator = Operator::new(&[&agent]);
    let exp = now_secs() + 3600;
    let shapes = [
        (
            "tok-shape-sub-seconds",
            json!({"valid": true, "sub": "u-a", "roles": ["admin"], "expires_at": exp}),
            ("u-a", "u-a", "", "operate", exp),
        ),
        (
            "tok-shape-subject-username-rfc3339",
            json!({"valid": true, "subject": "u-b", "username": "bob", "roles": ["user"], "expires_at": rfc3339(exp)}),
            ("bob", "u-b", "bob", "operate", exp),
        ),
        (
            "tok-shape-sub-username-string-seconds",
            json!({"valid": true, "sub": "u-c", "username": "carol", "roles": ["viewer"], "expires_at": exp.to_string()}),
            ("carol", "u-c", "carol", "read", exp),
        ),
        (
            "tok-shape-subject-no-expiry",
            json!({"valid": true, "subject": "u-d", "roles": ["admin"]}),
            ("u-d", "u-d", "", "operate", 0),
        ),
    ];
    for (token, answer, _) in &shapes {
        stub.answer(token, 200, answer.clone());
    }
    for (token, _, (name, subject, username, level, expires)) in &shapes {
        let run = run_as(&operator, token, &["whoami", "-o", "json"]);
        assert_eq!(run.code, 0, "{token}: {}", run.stderr);
        let who = &run.json()[0];
        assert_eq!(who["name"], *name, "{token}: {who}");
        assert_eq!(who["subject"], *subject, "{token}: {who}");
        assert_eq!(who["username"], *username, "{token}: {who}");
        assert_eq!(who["level"], *level, "{token}: {who}");
        assert_eq!(who["expires_at"], *expires, "{token}: {who}");
        // Once more: the answer comes from the cache.
        assert_eq!(run_as(&operator, token, &["whoami"]).code, 0);
        assert_eq!(stub.calls(token), 1, "{token}");
    }

    // Each way of saying no, and of failing to answer.
    let ch = agent_channel(&agent).await;
    let refusals = [
        ("tok-401", 401, json!({}), Code::Unauthenticated),
        ("tok-404", 404, json!({}), Code::Unauthenticated),
        (
            "tok-valid-false",
            200,
            json!({"valid": false}),
            Code::Unauthenticated,
        ),
        (
            "tok-expired-rfc3339",
            200,
            json!({"valid": true, "sub": "u", "roles": ["admin"], "expires_at": rfc3339(now_secs() - 60)}),
            Code::Unauthenticated,
        ),
        ("tok-500", 500, json!({}), Code::Unavailable),
        (
            "tok-no-subject",
            200,
            json!({"valid": true, "roles": ["admin"]}),
            Code::Unavailable,
        ),
    ];
    for (token, status, body, code) in refusals {
        stub.answer(token, status, body);
        assert_eq!(code_of(list_as(&ch, token).await, token), code, "{token}");
    }

    // At most 32 validations at once: with MCIAS stalled, the 33rd and
    // later are refused at once as UNAVAILABLE, without a call.
    stub.state().stalled = true;
    let validations = stub.state().validations;
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let ch = ch.clone();
            tokio::spawn(async move { list_as(&ch, &format!("tok-flood-{i}")).await })
        })
        .collect();
    until("32 validations at MCIAS", Duration::from_secs(20), || {
        stub.state().waiting == 32
    })
    .await;
    until("8 refusals", Duration::from_secs(20), || {
        calls.iter().filter(|c| c.is_finished()).count() == 8
    })
    .await;
    stub.shared.release.send_replace(true);
    let mut too_many = 0;
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unavailable => {
                assert!(status.message().contains("too many"), "{status:?}");
                too_many += 1;
            }
            Code::Unauthenticated => {}
            other => panic!("{other:?}: {status:?}"),
        }
    }
    assert_eq!(too_many, 8);
    assert_eq!(stub.state().validations - validations, 32);
}

/// A definition of service `web` on node n1.
fn web_definition() -> String {
    format!(
        r#"name = "web"
node = "n1"
active = true

[[components]]
name  = "app"
image = "{TEST_IMAGE}"
cmd   = ["/bin/busybox", "sleep", "3600"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_table_per_level_role_and_account() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let srv = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(srv.path().join("web")).unwrap();
    let config =
        "[auth]\noperate_accounts = [\"ci-deployer\"]\nread_accounts = [\"svc-monitor\"]\n";
    let agent = mcias_agent(
        &podman,
        &stub,
        Some(config),
        &["--srv-root", srv.path().to_str().unwrap()],
    );
    let ch = agent_channel(&agent).await;
    let exp = now_secs() + 600;
    let admin = stub.jwt("u-ada", Some("ada"), &["admin"], exp);
    let viewer = stub.jwt("u-vera", Some("vera"), &["viewer"], exp);
    let guest = stub.jwt("u-gus", Some("gus"), &["guest"], exp);
    // System accounts: no roles; one named by username, one by subject.
    let ci = stub.jwt("svc-7f3a", Some("ci-deployer"), &[], exp);
    let monitor = stub.jwt("svc-monitor", None, &[], exp);
    let stranger = stub.jwt("svc-0000", Some("nobody"), &[], exp);

    use Code::{InvalidArgument as Passed, NotFound, Ok as Yes, PermissionDenied as No};
    for (who, token, list, pull, deploy) in [
        ("admin", &admin, Yes, NotFound, Passed),
        ("viewer", &viewer, Yes, NotFound, No),
        ("guest", &guest, No, No, No),
        ("ci-deployer", &ci, Yes, NotFound, Passed),
        ("svc-monitor", &monitor, Yes, NotFound, No),
        ("unnamed system account", &stranger, No, No, No),
    ] {
        assert_eq!(
            code_of(list_as(&ch, token).await, token),
            list,
            "{who} list"
        );
        assert_eq!(
            code_of(pull_missing_as(&ch, token).await, token),
            pull,
            "{who} pull"
        );
        assert_eq!(
            code_of(deploy_as(&ch, token).await, token),
            deploy,
            "{who} deploy"
        );
    }
    // The refusal names the method, the level it needs, and the caller.
    let denied = deploy_as(&ch, &viewer).await.unwrap_err();
    assert_eq!(
        denied.message(),
        "/mcp.v1.Agent/Deploy needs level operate; vera (roles viewer) has level read only"
    );
    let denied = list_as(&ch, &guest).await.unwrap_err();
    assert!(
        denied.message().contains("gus (roles guest) has no access"),
        "{denied:?}"
    );
    // A method not in the table is refused, even for an admin.
    let unknown = call_path(&ch, "/mcp.v1.Agent/Teleport", &admin)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), No, "{unknown:?}");
    assert!(unknown.message().contains("not in"), "{unknown:?}");

    // Through the CLI: the system account deploys and stops for real; the
    // viewer reads and is told why it may not deploy.
    let operator = Operator::new(&[&agent]);
    operator.define("web", &web_definition());
    let run = run_as(&operator, &ci, &["deploy", "web"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(podman.state_of("web-app").as_deref(), Some("running"));
    let run = run_as(&operator, &viewer, &["list", "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()[0]["services"][0]["name"], "web");
    let run = run_as(&operator, &viewer, &["stop", "web"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("/mcp.v1.Agent/Stop needs level operate")
            && run.stderr.contains("mcp whoami"),
        "{}",
        run.stderr
    );
    let run = run_as(&operator, &ci, &["stop", "web"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_ne!(podman.state_of("web-app").as_deref(), Some("running"));

    assert_not_logged(&agent, &[&admin, &viewer, &guest, &ci, &monitor, &stranger]);
}

/// Adds `[mcias]` to the operator's mcp.toml, with `extra` lines.
fn add_mcias(operator: &Operator, stub: &StubMcias, extra: &str) {
    let mut text = std::fs::read_to_string(operator.config_path()).unwrap();
    text.push_str(&format!(
        "[mcias]\nurl = \"{}\"\nca = \"{}\"\n{extra}",
        stub.url(),
        stub.ca_path.display()
    ));
    std::fs::write(operator.config_path(), text).unwrap();
}

/// `mcp login --username USER`, `input` on stdin (password, TOTP code).
fn mcp_login(operator: &Operator, user: &str, input: &str) -> Run {
    use std::io::Write;
    let mut child = operator
        .command(&["login", "--username", user])
        .env_remove("MCP_TOKEN")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sends_the_service_asks_for_totp_and_stores_a_private_token() {
    use std::os::unix::fs::PermissionsExt;
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub, None, &[]);
    let operator = Operator::new(&[&agent]);
    add_mcias(&operator, &stub, "");
    let token_file = operator.home.path().join("mcp/token");

    // Refusals, each in its words; nothing stored.
    let run = mcp_login(&operator, "alice", "wrong\n");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("bad username or password"),
        "{}",
        run.stderr
    );
    let run = mcp_login(&operator, "mallory", "pw\n");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("login refused by policy: account locked by policy"),
        "{}",
        run.stderr
    );
    assert!(!token_file.exists());

    // The defaults: service_name "mcp", no tags.
    let run = mcp_login(&operator, "alice", "correct horse\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = stub.state().logins.last().cloned().unwrap();
    assert_eq!(sent["service_name"], "mcp");
    assert!(
        sent.get("tags").is_none() && sent.get("totp_code").is_none(),
        "{sent}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(run.stderr.contains("logged in as alice"), "{}", run.stderr);
    assert!(run.stderr.contains("expires at"), "{}", run.stderr);
    assert!(!run.stderr.contains(&token) && !run.stderr.contains("correct horse"));

    // The stored token works without MCP_TOKEN.
    let who = operator
        .command(&["whoami", "-o", "json"])
        .env_remove("MCP_TOKEN")
        .output()
        .unwrap();
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who[0]["name"], "alice");

    // With service_name and tags from mcp.toml, and an account with TOTP:
    // asked for, sent, and a wrong code refused.
    std::fs::write(
        operator.config_path(),
        std::fs::read_to_string(operator.config_path())
            .unwrap()
            .replace(
                "[mcias]\n",
                "[mcias]\nservice_name = \"mcp-test\"\ntags = [\"env:test\", \"team:infra\"]\n",
            ),
    )
    .unwrap();
    let run = mcp_login(&operator, "tina", "pw\n");
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("none was given"), "{}", run.stderr);
    let run = mcp_login(&operator, "tina", "pw\n000000\n");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("TOTP code was not accepted"),
        "{}",
        run.stderr
    );
    let run = mcp_login(&operator, "tina", "pw\n123456\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let logins = stub.state().logins.clone();
    let (first, second) = (&logins[logins.len() - 2], &logins[logins.len() - 1]);
    assert_eq!(first["service_name"], "mcp-test");
    assert_eq!(first["tags"], json!(["env:test", "team:infra"]));
    assert!(first.get("totp_code").is_none(), "{first}");
    assert_eq!(second["totp_code"], "123456");
    assert_eq!(second["password"], "pw");
    assert!(run.stderr.contains("logged in as tina"), "{}", run.stderr);
    // expires_at in RFC 3339 was read: the token's expiry is printed.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    let exp = serde_json::from_slice::<Value>(&payload).unwrap()["exp"]
        .as_i64()
        .unwrap();
    assert!(
        run.stderr.contains(&format!("expires at {}", rfc3339(exp))),
        "{} not in {}",
        rfc3339(exp),
        run.stderr
    );

    // No expires_at in the answer: the expiry comes from the token's exp.
    let run = mcp_login(&operator, "nora", "pw\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("expires at"), "{}", run.stderr);
    assert!(
        run.stderr.contains("(in 59m)") || run.stderr.contains("(in 1h0m)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_asks_every_node_in_a_table_and_in_json() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let n1 = mcias_agent(&podman, &stub, None, &[]);
    let n2 = Agent::start(&podman, "n2");
    let operator = Operator::new(&[&n1]);
    let n2_token = operator.home.path().join("mcp/token-n2");
    std::fs::write(&n2_token, n2.token()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&n2_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    operator.add_node(
        "n2",
        &format!("127.0.0.1:{}", n2.port),
        &n2.ca_path(),
        Some(&n2_token),
    );
    let exp = now_secs() + 7200;
    let jwt = stub.jwt("u-alice", Some("alice"), &["admin", "viewer"], exp);

    let run = run_as(&operator, &jwt, &["whoami"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    for header in ["NODE", "NAME", "SUBJECT", "ROLES", "LEVEL", "EXPIRES"] {
        assert!(lines[0].contains(header), "{}", run.stdout);
    }
    let n1_row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        n1_row[..5],
        ["n1", "alice", "u-alice", "admin,viewer", "operate"],
        "{}",
        run.stdout
    );
    assert!(lines[1].contains(&rfc3339(exp)), "{}", run.stdout);
    let n2_row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        n2_row,
        [
            "n2",
            "local-operator",
            "local-operator",
            "-",
            "operate",
            "no",
            "expiry"
        ],
        "{}",
        run.stdout
    );

    let json = run_as(&operator, &jwt, &["whoami", "-o", "json"]).json();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json[0]["node"], "n1");
    assert_eq!(json[0]["name"], "alice");
    assert_eq!(json[0]["subject"], "u-alice");
    assert_eq!(json[0]["roles"], json!(["admin", "viewer"]));
    assert_eq!(json[0]["level"], "operate");
    assert_eq!(json[0]["expires_at"], exp);
    assert_eq!(json[1]["node"], "n2");
    assert_eq!(json[1]["name"], "local-operator");
    assert_eq!(json[1]["level"], "operate");
    assert_eq!(json[1]["expires_at"], 0);

    // One node only; and a node that refuses the token is named, the other
    // still answers.
    let one = run_as(&operator, &jwt, &["whoami", "n2", "-o", "json"]).json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["node"], "n2");
    let guest = stub.jwt("u-gus", Some("gus"), &["guest"], exp);
    let run = run_as(&operator, &guest, &["whoami"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("node n1: FAILED")
            && run.stderr.contains("gus (roles guest) has no access"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("local-operator"), "{}", run.stdout);
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
        run.stderr.contains("not signed by the CA in") && run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("is mcp-agent running"),
        "{}",
        run.stderr
    );
    // A CA file that holds no certificate is named as such.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    operator.fails(&["list"], "holds no PEM certificate");
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

/// Who did what: a deploy by one account and a stop by another are in the
/// events with their names (`mcp events` BY, `--by`), and the agent logs
/// one audit line per mutating call, with no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_the_log_say_who_did_what() {
    let podman = Podman::start();
    let stub = StubMcias::start();
    let agent = mcias_agent(&podman, &stub, None, &[]);
    let operator = Operator::new(&[&agent]);
    operator.define(
        "audited",
        &format!(
            "name = \"audited\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\n\
             image = \"{}\"\ncmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
            common::TEST_IMAGE
        ),
    );
    let exp = now_secs() + 600;
    let alice = stub.jwt("u-alice", Some("alice"), &["admin"], exp);
    let bob = stub.jwt("u-bob", Some("bob"), &["user"], exp);
    let alice_token = alice.clone();
    let (operator, deploy) = tokio::task::spawn_blocking(move || {
        let deploy = run_as(&operator, &alice_token, &["deploy", "audited"]);
        (operator, deploy)
    })
    .await
    .unwrap();
    assert_eq!(deploy.code, 0, "{}", deploy.stderr);
    let bob_token = bob.clone();
    let (operator, stop, events, by_bob, table) = tokio::task::spawn_blocking(move || {
        let stop = run_as(&operator, &bob_token, &["stop", "audited"]);
        let events = run_as(&operator, &bob_token, &["events", "audited", "-o", "json"]);
        let by_bob = run_as(
            &operator,
            &bob_token,
            &["events", "--by", "bob", "-o", "json"],
        );
        let table = run_as(&operator, &bob_token, &["events", "audited"]);
        (operator, stop, events, by_bob, table)
    })
    .await
    .unwrap();
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let events = events.json();
    let who: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        who.contains(&("deployed".into(), "alice".into())),
        "{who:?}"
    );
    assert!(who.contains(&("stopped".into(), "bob".into())), "{who:?}");
    let by_bob = by_bob.json();
    let bobs: Vec<&str> = by_bob
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(bobs, ["stopped"], "{bobs:?}");
    let header = table.stdout.lines().next().unwrap_or_default().to_string();
    assert!(header.contains("BY"), "{}", table.stdout);
    assert!(table.stdout.contains("alice") && table.stdout.contains("bob"));

    // One audit line per mutating call (the deploy, the stop), none for the
    // reads, and no token anywhere.
    let log = agent.log();
    let audits: Vec<&str> = log.lines().filter(|l| l.contains("mcp::audit")).collect();
    assert_eq!(audits.len(), 2, "{audits:#?}");
    assert!(
        audits[0].contains("method=\"Deploy\"") || audits[0].contains("method=\"DeployWatch\""),
        "{audits:#?}"
    );
    assert!(audits[0].contains("caller=\"alice\"") && audits[0].contains("target=\"audited\""));
    assert!(audits[1].contains("method=\"Stop\"") && audits[1].contains("caller=\"bob\""));
    assert!(audits[1].contains("outcome=ok"), "{audits:#?}");
    drop(operator);
    for token in [&alice, &bob] {
        assert!(!log.contains(token.as_str()), "a token in the log");
    }
}
