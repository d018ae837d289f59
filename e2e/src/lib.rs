//! End-to-end harness: the real gateway (with its embedded broker), real
//! agents and fake port-9100 printers, in one process on ephemeral ports,
//! each test in its own temporary directory (credentials, API keys, stores).
//!
//! ```no_run
//! # async fn demo() {
//! let mut fleet = kiosk_e2e::TestFleet::start(&["k1"]).await;
//! let printer = kiosk_testkit::FakePrinter::start().await.unwrap();
//! let agent = fleet.start_agent("k1", printer.addr()).await;
//! let job = fleet.create_job("k1", kiosk_e2e::text_job("hello")).await;
//! fleet.wait_job(&job, "printed").await;
//! # }
//! ```

pub mod bench;
pub mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod nats_cluster;
pub mod pki;

use kiosk_schemas::settings::Checked as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiosk_agent::{Agent, AgentConfig};
use kiosk_broker::{Role, hash_generated_secret, set_password};
use kiosk_gateway::{Gateway, GatewayConfig};
use kiosk_schemas::Secret;
use serde_json::{Value, json};

/// Default time a test waits for something to happen before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// How to build a [`TestFleet`].
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Kiosk ids to give credentials to.
    pub kiosks: Vec<String>,
    /// `delivery.republish_interval` of the gateway.
    pub republish_interval: Duration,
    /// Use this external broker (`broker.embedded = false`) instead of the
    /// embedded one.
    pub external_broker: Option<SocketAddr>,
    /// With `external_broker`: the gateway's `broker.urls` instead of
    /// `broker.url` (the nodes of a cluster, `mqtt://` each).
    pub external_cluster: Vec<SocketAddr>,
    /// `webhooks.url` (secret [`WEBHOOK_SECRET`], retries capped at 200 ms).
    pub webhook_url: Option<String>,
    /// `webhooks.events` patterns; empty: the default (cash events).
    pub webhook_events: Vec<String>,
    /// Give the embedded broker a TLS listener with a certificate from a
    /// private CA made for the test ([`TestFleet::pki`]); agents then
    /// connect with `mqtts://localhost:<port>` and that CA.
    pub tls: bool,
    /// Extra lines for the gateway's `[broker]` section (limits, ACL).
    pub broker_extra: String,
    /// Extra lines for the gateway's `[http]` section (timeouts, limits).
    pub http_extra: String,
    /// `http.rate_limit_per_second` and `http.rate_limit_burst`. `None`
    /// (the default here, not the gateway's): the limit is off, since
    /// tests poll and benchmarks post thousands of requests a second with
    /// their one API key.
    pub rate_limit: Option<(u32, u32)>,
    /// With `external_broker`: the gateway connects to this TLS address
    /// instead (`mqtts://localhost:<port>`), trusting this CA file.
    pub external_tls: Option<(SocketAddr, PathBuf)>,
    /// Use these users ([`fleet_users`]) instead of making new ones: for an
    /// external broker configured from them before the fleet starts.
    pub users: Option<FleetUsers>,
}

/// A credentials file and every user's password, as [`fleet_users`] makes
/// them.
#[derive(Debug, Clone)]
pub struct FleetUsers {
    /// The credentials file.
    pub credentials: PathBuf,
    /// Password of every user.
    pub secrets: BTreeMap<String, String>,
}

/// Writes `dir/credentials` with generated secrets for `kiosks`, `gateway`,
/// `backend` and `technician`.
///
/// # Panics
/// When the file cannot be written.
pub fn fleet_users(dir: &Path, kiosks: &[String]) -> FleetUsers {
    let credentials = dir.join("credentials");
    let mut secrets = BTreeMap::new();
    let users = kiosks.iter().map(|k| (k.clone(), Role::Kiosk)).chain([
        ("gateway".to_owned(), Role::Gateway),
        ("backend".to_owned(), Role::Backend),
        ("technician".to_owned(), Role::Technician),
    ]);
    for (user, role) in users {
        let secret = kiosk_broker::generate_secret();
        set_password(&credentials, &user, role, &hash_generated_secret(&secret))
            .expect("write credentials");
        secrets.insert(user, secret.expose().to_owned());
    }
    FleetUsers {
        credentials,
        secrets,
    }
}

/// The `webhooks.secret` of test fleets.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

impl FleetOptions {
    /// Embedded broker, these kiosks, republish every 500 ms.
    pub fn new(kiosks: &[&str]) -> Self {
        FleetOptions {
            kiosks: kiosks.iter().map(|k| (*k).to_owned()).collect(),
            republish_interval: Duration::from_millis(500),
            external_broker: None,
            external_cluster: Vec::new(),
            webhook_url: None,
            webhook_events: Vec::new(),
            tls: false,
            broker_extra: String::new(),
            http_extra: String::new(),
            rate_limit: None,
            external_tls: None,
            users: None,
        }
    }
}

/// A gateway and the files around it.
pub struct TestFleet {
    /// Everything lives here: `credentials`, `api-keys`, `gateway-store/`,
    /// `agent-<kiosk>/`.
    pub dir: tempfile::TempDir,
    /// The gateway configuration (ports fixed after the first start so a
    /// restart comes back on the same addresses).
    pub gateway_config: GatewayConfig,
    /// `http://127.0.0.1:<port>`.
    pub http_base: String,
    /// The broker's plain MQTT listener.
    pub mqtt_addr: SocketAddr,
    /// The broker's TLS listener, with [`FleetOptions::tls`].
    pub mqtts_addr: Option<SocketAddr>,
    /// The private CA and server certificate, with [`FleetOptions::tls`].
    pub pki: Option<pki::TestPki>,
    /// A valid API key (named `test`).
    pub api_key: String,
    /// Password of every MQTT user: each kiosk, `gateway`, `backend`, `technician`.
    pub secrets: BTreeMap<String, String>,
    gateway: Option<Gateway>,
    client: reqwest::Client,
}

impl TestFleet {
    /// A fleet with an embedded broker and credentials for `kiosks`.
    pub async fn start(kiosks: &[&str]) -> TestFleet {
        Self::start_with(FleetOptions::new(kiosks)).await
    }

    /// A fleet as `opts` says.
    ///
    /// # Panics
    /// When anything cannot be set up: this is test code.
    pub async fn start_with(opts: FleetOptions) -> TestFleet {
        kiosk_testkit::init_test_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let FleetUsers {
            credentials,
            secrets,
        } = opts
            .users
            .clone()
            .unwrap_or_else(|| fleet_users(dir.path(), &opts.kiosks));
        let api_keys = dir.path().join("api-keys");
        let api_key = kiosk_gateway::api_keys::add_key(&api_keys, "test").expect("api key");
        let pki = opts
            .tls
            .then(|| pki::TestPki::generate(dir.path(), "fleet"));
        let mut broker = match opts.external_broker {
            None => r#"embedded = true
listen = "127.0.0.1:0""#
                .to_owned(),
            Some(_) if !opts.external_cluster.is_empty() => format!(
                "embedded = false\nurls = {:?}",
                opts.external_cluster
                    .iter()
                    .map(|a| format!("mqtt://{a}"))
                    .collect::<Vec<_>>()
            ),
            Some(addr) => match &opts.external_tls {
                None => format!("embedded = false\nurl = \"mqtt://{addr}\""),
                Some((tls, ca)) => format!(
                    "embedded = false\nurl = \"mqtts://localhost:{}\"\nca_file = \"{}\"",
                    tls.port(),
                    ca.display()
                ),
            },
        };
        if let Some(pki) = &pki {
            broker.push_str(&format!(
                "\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
                pki.server_cert.display(),
                pki.server_key.display()
            ));
        }
        broker.push('\n');
        broker.push_str(&opts.broker_extra);
        let toml = format!(
            r#"
kiosks = []
[http]
listen = "127.0.0.1:0"
api_keys = "{api_keys}"
rate_limit_per_second = {rate_per_second}
rate_limit_burst = {rate_burst}
{http_extra}
[broker]
{broker}
credentials = "{credentials}"
password = "{gw_password}"
keep_alive = "5s"
[store]
path = "{store}"
[delivery]
republish_interval = "{republish}ms"
{webhooks}
"#,
            api_keys = api_keys.display(),
            http_extra = opts.http_extra,
            rate_per_second = opts.rate_limit.map_or(0, |(rate, _)| rate),
            rate_burst = opts.rate_limit.map_or(1, |(_, burst)| burst),
            credentials = credentials.display(),
            gw_password = secrets["gateway"],
            store = dir.path().join("gateway-store").display(),
            republish = opts.republish_interval.as_millis(),
            webhooks = opts.webhook_url.as_ref().map_or(String::new(), |url| format!(
                "[webhooks]\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmax_backoff = \"200ms\"\ntimeout = \"2s\"\n{events}",
                events = if opts.webhook_events.is_empty() {
                    String::new()
                } else {
                    format!("events = {:?}\n", opts.webhook_events)
                }
            )),
        );
        let gateway_config = GatewayConfig::from_toml(&toml).expect("gateway config");
        let mut fleet = TestFleet {
            dir,
            gateway_config,
            http_base: String::new(),
            mqtt_addr: opts
                .external_broker
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            mqtts_addr: None,
            pki,
            api_key,
            secrets,
            gateway: None,
            client: reqwest::Client::new(),
        };
        fleet.start_gateway().await;
        fleet
    }

    /// Starts the gateway (again), on the same store and, after the first
    /// start, the same ports.
    pub async fn start_gateway(&mut self) {
        assert!(self.gateway.is_none(), "gateway already running");
        let gateway = retry_locked(|| Gateway::start(self.gateway_config.clone())).await;
        self.gateway_config.http.listen = gateway.http_addr();
        if let Some(addr) = gateway.mqtt_addr() {
            if let Some(broker) = self.gateway_config.broker.embedded_mut() {
                broker.listen = Some(addr);
            }
            self.mqtt_addr = addr;
        }
        if let Some(addr) = gateway.mqtt_tls_addr() {
            if let Some(broker) = self.gateway_config.broker.embedded_mut() {
                broker.tls_listen = Some(addr);
            }
            self.mqtts_addr = Some(addr);
        }
        self.http_base = format!("http://{}", gateway.http_addr());
        self.gateway = Some(gateway);
        self.wait_healthy().await;
    }

    /// Stops the gateway (and its embedded broker) cleanly.
    pub async fn stop_gateway(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }

    /// Waits until `/healthz` says the gateway's MQTT session is up.
    pub async fn wait_healthy(&self) {
        let ok = wait_for(WAIT, || async {
            matches!(self.get("/healthz").await, (200, _))
        })
        .await;
        assert!(ok, "gateway never became healthy");
    }

    /// Directory of a kiosk's agent store.
    pub fn agent_store(&self, kiosk: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{kiosk}"))
    }

    /// The `[broker]` URL lines of an agent: `mqtts://localhost:<port>`
    /// with the fleet's CA when the fleet has TLS, else `mqtt://`.
    pub fn agent_broker_url(&self) -> String {
        match (&self.pki, self.mqtts_addr) {
            (Some(pki), Some(addr)) => format!(
                "url = \"mqtts://localhost:{}\"\nca_file = \"{}\"",
                addr.port(),
                pki.ca_cert.display()
            ),
            _ => format!("url = \"mqtt://{}\"", self.mqtt_addr),
        }
    }

    /// An agent configuration for `kiosk` with a `receipt` printer on
    /// `printer` (tcp), connecting to this fleet's broker (over TLS when
    /// the fleet has it).
    pub fn agent_config(&self, kiosk: &str, printer: SocketAddr) -> AgentConfig {
        AgentConfig::from_toml(&self.agent_toml(kiosk, printer)).expect("agent config")
    }

    /// The TOML text of [`TestFleet::agent_config`], for an agent started as
    /// its own process.
    pub fn agent_toml(&self, kiosk: &str, printer: SocketAddr) -> String {
        format!(
            r#"
kiosk_id = "{kiosk}"
[broker]
{url}
password = "{password}"
keep_alive = "5s"
reconnect_min = "50ms"
reconnect_max = "1s"
[store]
path = "{store}"
[print]
status_interval = "200ms"
[printers.receipt]
driver = "tcp"
address = "{printer}"
width = 48
code_page = "PC858"
timeout = "2s"
"#,
            url = self.agent_broker_url(),
            password = self.secrets.get(kiosk).map_or("unknown", String::as_str),
            store = self.agent_store(kiosk).display(),
        )
    }

    /// The TOML text of [`TestFleet::cash_agent_config`] with the fleet's
    /// own broker, for an agent started as its own process.
    pub fn cash_agent_toml(
        &self,
        kiosk: &str,
        printer: SocketAddr,
        port: &std::path::Path,
    ) -> String {
        let mut toml = self.agent_toml(kiosk, printer);
        toml.push_str(&format!(
            "[cash]\nport = \"{}\"\nbaud = 9600\ncurrency = \"EUR\"\nsettle = \"100ms\"\nreopen_interval = \"100ms\"\nresend_interval = \"500ms\"\n",
            port.display()
        ));
        toml
    }

    /// An agent configuration with a cash acceptor on `port` (EUR, short
    /// settle/reopen/resend times), reaching the broker at `broker` (for
    /// example through a [`kiosk_testkit::CutProxy`]) or the fleet's own.
    pub fn cash_agent_config(
        &self,
        kiosk: &str,
        printer: SocketAddr,
        port: &std::path::Path,
        broker: Option<SocketAddr>,
    ) -> AgentConfig {
        let mut config = self.agent_config(kiosk, printer);
        if let Some(b) = broker {
            config.broker.url = Some(format!("mqtt://{b}").parse().expect("broker URL"));
        }
        config.cash = Some(kiosk_agent::config::CashConfig {
            port: port.display().to_string(),
            baud: 9600,
            currency: kiosk_schemas::Currency::new("EUR").expect("EUR"),
            settle: Duration::from_millis(100),
            reopen_interval: Duration::from_millis(100),
            resend_interval: Duration::from_millis(500),
            max_credit: 100_000,
        });
        config
    }

    /// Opens a cash session of `amount_due` EUR cents on `kiosk`; asserts
    /// `201 open` and returns the body (with `view_token`).
    pub async fn open_session(&self, kiosk: &str, amount_due: i64) -> Value {
        let body = json!({"kiosk_id": kiosk, "order_id": format!("order-{amount_due}"),
            "amount_due": amount_due, "currency": "EUR"});
        let (status, resp) = self.post("/v1/cash-sessions", &body).await;
        assert_eq!(status, 201, "{resp}");
        assert_eq!(resp["state"], "open", "{resp}");
        resp
    }

    /// Waits until `GET /v1/cash-sessions/{id}` satisfies `done`.
    pub async fn wait_session(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_get(&format!("/v1/cash-sessions/{id}"), done)
            .await
            .unwrap_or_else(|last| {
                panic!("session {id} never reached the expected state; last: {last}")
            })
    }

    /// Waits until the kiosk reports its cash acceptor connected.
    pub async fn wait_cash_connected(&self, kiosk: &str, connected: bool) -> Value {
        self.wait_get(&format!("/v1/kiosks/{kiosk}"), |k| {
            k["cash"]["connected"] == connected
        })
        .await
        .unwrap_or_else(|last| {
            panic!("kiosk {kiosk} cash.connected never became {connected}: {last}")
        })
    }

    /// Starts `kiosk`'s agent with a `receipt` printer at `printer`.
    pub async fn start_agent(&self, kiosk: &str, printer: SocketAddr) -> Agent {
        self.start_agent_with(self.agent_config(kiosk, printer))
            .await
    }

    /// rumqttd's internal loopback listener of the embedded broker.
    pub fn internal_mqtt_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref()?.internal_mqtt_addr()
    }

    /// An outside MQTT client logged in as `user` (a kiosk id, `backend`,
    /// `technician`, `gateway`) with its password. Panics when refused.
    pub async fn mqtt_client(&self, client_id: &str, user: &str) -> mqtt::Client {
        mqtt::Client::connect(self.mqtt_addr, client_id, user, &self.secrets[user])
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
    }

    /// Starts an agent with a given configuration, waiting while a
    /// previous agent still holds the store.
    pub async fn start_agent_with(&self, config: AgentConfig) -> Agent {
        retry_locked(|| Agent::start(config.clone())).await
    }

    /// `GET path` with the API key; returns status and JSON body (or
    /// `Value::Null` when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.http_base))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with the API key and a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.http_base))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A raw request builder against the gateway (no API key added).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.http_base))
    }

    /// Posts a job for `kiosk`, asserts `202 queued`, returns its id.
    pub async fn create_job(&self, kiosk: &str, body: Value) -> String {
        let (status, resp) = self
            .post(&format!("/v1/kiosks/{kiosk}/print-jobs"), &body)
            .await;
        assert_eq!(status, 202, "{resp}");
        assert_eq!(resp["state"], "queued", "{resp}");
        resp["job_id"].as_str().expect("job_id").to_owned()
    }

    /// `GET /v1/print-jobs/{id}`.
    pub async fn job(&self, job_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/print-jobs/{job_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the job is in `state`; returns it. Panics after [`WAIT`].
    pub async fn wait_job(&self, job_id: &str, state: &str) -> Value {
        self.wait_get(&format!("/v1/print-jobs/{job_id}"), |b| b["state"] == state)
            .await
            .unwrap_or_else(|last| panic!("job {job_id} never became {state}; last seen: {last}"))
    }

    /// Waits until the kiosk's status is `status` (`online`/`offline`).
    pub async fn wait_kiosk(&self, kiosk: &str, status: &str) -> Value {
        self.wait_get(&format!("/v1/kiosks/{kiosk}"), |b| b["status"] == status)
            .await
            .unwrap_or_else(|last| panic!("kiosk {kiosk} never became {status}; last seen: {last}"))
    }

    /// Polls `GET path` until it answers 200 with a body for which `done`
    /// holds; `Err(last body)` after [`WAIT`].
    pub async fn wait_get(
        &self,
        path: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        self.wait_get_within(path, WAIT, done).await
    }

    /// [`TestFleet::wait_get`] for up to `within`, for what takes longer
    /// than [`WAIT`] by nature (a broker cluster moving its leaders).
    pub async fn wait_get_within(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return Ok(body);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts `body` as a job for `kiosk`, waits until it is `printed` and
    /// `printer` has it (its first job), and decodes it with testkit's
    /// ESC/POS decoder, asserting every command is one the decoder knows
    /// (no `Unknown`, no `Truncated`).
    pub async fn print_decoded(
        &self,
        kiosk: &str,
        printer: &kiosk_testkit::FakePrinter,
        body: Value,
    ) -> Vec<kiosk_testkit::escpos::Command> {
        use kiosk_testkit::escpos::{self, Command};
        let job_id = self.create_job(kiosk, body).await;
        self.wait_job(&job_id, "printed").await;
        let jobs = printer
            .wait_for_jobs(1, WAIT)
            .await
            .expect("the job at the printer");
        let commands = escpos::decode(&jobs[0]);
        assert!(
            !commands
                .iter()
                .any(|c| matches!(c, Command::Unknown(_) | Command::Truncated(_))),
            "{commands:?}"
        );
        commands
    }

    /// Password of an MQTT user as a [`Secret`].
    pub fn secret(&self, user: &str) -> Secret {
        Secret::new(self.secrets[user].clone())
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        // Dropping the gateway without shutdown is fine for tests: its tasks
        // die with the test's runtime, and the broker stops with its handle.
        self.gateway.take();
    }
}

/// Runs `start` until it stops failing because a store is still locked by
/// an instance that is shutting down (sled holds a file lock).
async fn retry_locked<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut start: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match start().await {
            Ok(t) => return t,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "start failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("could not start: {e}"),
        }
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Body of a text job for the `receipt` printer.
pub fn text_job(text: &str) -> Value {
    json!({"printer": "receipt", "document": {"kind": "text", "text": text}})
}

/// Body of a receipt job with the given `(quantity, name, amount)` items,
/// total the sum, in EUR.
pub fn receipt_job(items: &[(u32, &str, i64)]) -> Value {
    let total: i64 = items.iter().map(|i| i.2).sum();
    json!({
        "printer": "receipt",
        "document": {
            "kind": "receipt",
            "header": ["Test Shop"],
            "items": items.iter().map(|(q, n, a)| json!({"quantity": q, "name": n, "amount": a})).collect::<Vec<_>>(),
            "total": total,
            "currency": "EUR",
            "footer": ["Thanks"],
        }
    })
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Counts jobs among `jobs` whose bytes contain `marker`.
pub fn count_with(jobs: &[Vec<u8>], marker: &str) -> usize {
    jobs.iter()
        .filter(|j| contains(j, marker.as_bytes()))
        .count()
}

/// Reads Server-Sent Events from a streaming response until `n` arrived;
/// each is `(event name, data as JSON)`.
///
/// # Panics
/// When `n` events did not arrive within [`WAIT`] or the stream ended.
pub async fn sse_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut out = Vec::new();
    // One deadline for all events: keep-alive comments must not extend it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("SSE events in time")
            .expect("SSE read")
            .expect("stream still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !name.is_empty() {
                out.push((name, serde_json::from_str(&data).unwrap_or_default()));
            }
        }
    }
    out
}

/// The `amount` of every credit of a cash session body, in order.
pub fn credit_amounts(session: &Value) -> Vec<i64> {
    session["credits"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["amount"].as_i64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}
