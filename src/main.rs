//! The `compute-gateway` command: `serve` (the default: gRPC backend + REST gateway),
//! `backend` (gRPC only) and `gateway` (REST only, in front of any backend).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use compute_gateway::backend::{
    self, AuthConfig, Backend, BackendConfig, MessageLimits, RateLimit, Retention,
};
use compute_gateway::gateway::{
    self, CorsOrigins, EdgeOptions, Gateway, GatewayConfig, HeaderPattern, InputOptions,
    ListenerOptions, RenderOptions,
};
use compute_gateway::iam::{Audience, AuthMode, IamConfig};
use compute_gateway::net::{self, BackendTls, ConnOptions, Shutdown, Tls};
use compute_gateway::serve::{ServeConfig, Server};
use compute_gateway::store::{EmbeddedStore, PostgresOptions, PostgresStore, Store};
use compute_gateway::telemetry::{LogFormat, Spans};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;

/// mimalloc instead of glibc's malloc: the request path allocates many small short-lived
/// buffers, and glibc's malloc/free was a large share of the gateway's CPU under load. Built
/// without transparent huge pages (`no_thp`), which raised `serve`'s peak RSS under load.
/// Figures: `bench/RESULTS.md`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Yandex Cloud Compute ImageService over gRPC and REST/JSON"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log line format on stderr: `text` or `json` (filter with RUST_LOG, default info).
    #[arg(long, global = true, env = "CG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Export a span per REST request and per gRPC call over OTLP/gRPC to this collector
    /// (`http://127.0.0.1:4317`); off by default.
    #[arg(long, global = true, env = "CG_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// gRPC backend and REST gateway in one process (the default).
    Serve(ServeArgs),
    /// The gRPC backend only.
    Backend(BackendOnlyArgs),
    /// The REST gateway only, in front of a backend at --backend.
    Gateway(GatewayArgs),
    /// Print the OpenAPI 3.1 document of the REST API (the one served at /openapi.json) for
    /// the given sources.
    Openapi(DescribeArgs),
    /// Print the route table the gateway would serve for the given sources, one route a line:
    /// HTTP method, path template, body, gRPC method, and whether its call is compiled in
    /// (typed) or dynamic.
    Describe(DescribeArgs),
    /// Service account keys, in the store of --data-dir (stop the server first: the embedded
    /// store allows one process) or of --database-url (with the servers running).
    Iam {
        #[command(subcommand)]
        command: IamCommand,
    },
}

#[derive(Subcommand)]
enum IamCommand {
    /// Make an RSA-2048 authorized key for a service account: its public half is stored, the
    /// whole key is written as the JSON the official SDKs and `yc` read.
    CreateKey {
        /// The service account the key signs for.
        #[arg(long)]
        service_account_id: String,
        /// Where to write the key file (mode 0600); `-` or none for stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the stored keys (id, service account, creation time).
    ListKeys {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a key: JWTs it signs are refused from then on.
    DeleteKey {
        /// The key id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the data is kept: `serve` and `backend`, and the `iam` commands.
#[derive(Args, Clone, Debug)]
struct StoreArgs {
    /// Directory of the durable store.
    #[arg(long, env = "CG_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Keep the data in this PostgreSQL database instead of the embedded store of --data-dir
    /// (`postgres://user:password@host:5432/db`, or `host=… user=… dbname=…`). Its schema is
    /// migrated at start.
    #[arg(long, env = "CG_DATABASE_URL")]
    database_url: Option<DatabaseUrl>,
    /// Most connections to the database.
    #[arg(long, env = "CG_DATABASE_POOL_SIZE", default_value_t = 16)]
    database_pool_size: u32,
    /// CA certificates (PEM) the database's certificate must chain to, its host name
    /// included. The URL's `sslmode` works as libpq's: `disable`; `prefer` (the default: TLS
    /// when the server offers it); `require`; `verify-ca` and `verify-full` (these need the
    /// CA, here or as `sslrootcert=FILE` in the URL). Without a CA, TLS encrypts but does not
    /// check who the server is, as libpq.
    #[arg(long, env = "CG_DATABASE_CA")]
    database_ca: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
struct BackendArgs {
    /// Address of the gRPC listener.
    #[arg(long, env = "CG_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    grpc_listen: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Who may call: `none` (anyone may do anything; a warning says so) or `iam` (every call
    /// needs an IAM token and the permission of its RPC).
    #[arg(long, env = "CG_AUTH", default_value = "none", value_parser = ["none", "iam"])]
    auth: String,
    /// JSON file of folder role bindings and accepted OAuth tokens:
    /// `{"folderBindings": {"<folderId>": [{"roleId": "editor", "subject": {"id": "<saId>",
    /// "type": "serviceAccount"}}]}, "oauthTokens": {"<token>": "<userAccountId>"}}`.
    #[arg(long, env = "CG_IAM_CONFIG")]
    iam_config: Option<PathBuf>,
    /// The one `aud` service account JWTs must carry (default: the real IAM token URL, or
    /// `https://iam.<endpoint>/iam/v1/tokens` as the Python SDK derives it).
    #[arg(long, env = "CG_IAM_AUDIENCE")]
    iam_audience: Option<String>,
    /// Calls per second each caller may make (`100/s`): a subject, or the client's address
    /// without a valid token; past it, RESOURCE_EXHAUSTED (429 over REST) with Retry-After.
    #[arg(long, env = "CG_RATE_LIMIT", value_parser = RateLimit::parse)]
    rate_limit: Option<RateLimit>,
    /// Calls a caller may make at once after a quiet spell (default: the rate per second).
    #[arg(long, env = "CG_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<std::num::NonZeroU32>,
    /// Milliseconds a Create stays CREATING before its Operation completes.
    #[arg(long, env = "CG_CREATE_DELAY_MS", default_value_t = 200)]
    create_delay_ms: u64,
    /// host:port handed out by endpoint discovery (default: the gRPC listener's address).
    #[arg(long, env = "CG_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// Milliseconds a new gRPC connection has to finish the TLS handshake, if any, and as long
    /// again to send the HTTP/2 preface, before it is closed.
    #[arg(long, env = "CG_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Milliseconds a gRPC call may take, its request body's arrival included; past it the
    /// call ends with DEADLINE_EXCEEDED (a client's shorter grpc-timeout wins).
    #[arg(long, env = "CG_CALL_TIMEOUT_MS", default_value_t = 30_000)]
    call_timeout_ms: u64,
    /// Milliseconds a gRPC connection may stay without a call in flight before it is closed
    /// with GOAWAY (grpc-go's MaxConnectionIdle); the client reconnects when it next calls.
    #[arg(long, env = "CG_GRPC_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    grpc_idle_timeout_ms: u64,
    /// Largest gRPC request message taken, in bytes (encoded); a larger one is OUT_OF_RANGE.
    #[arg(long, env = "CG_GRPC_MAX_RECV_BYTES", default_value_t = MessageLimits::default().max_recv_bytes)]
    grpc_max_recv_bytes: usize,
    /// Largest gRPC reply message sent, in bytes (encoded); no limit by default.
    #[arg(long, env = "CG_GRPC_MAX_SEND_BYTES", default_value_t = MessageLimits::default().max_send_bytes)]
    grpc_max_send_bytes: usize,
    /// How long done Operations are kept (then purged, with their place in their image's
    /// history): a number and a unit, s, m, h or d.
    #[arg(long, env = "CG_OPERATION_RETENTION", default_value = "30d", value_parser = parse_duration)]
    operation_retention: Duration,
    /// How long an idempotency key is remembered; a retry after it is a new request.
    #[arg(long, env = "CG_IDEMPOTENCY_KEY_RETENTION", default_value = "24h", value_parser = parse_duration)]
    idempotency_key_retention: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args, Clone, Debug)]
struct ConnArgs {
    /// Most connections open at once on each listener; one more is closed as it is accepted
    /// (default: half of the open-file limit, raised to its hard limit at start, less 128;
    /// at most 10000).
    #[arg(long, env = "CG_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Milliseconds a write may wait for a peer that does not read; past it the connection is
    /// closed and what it held freed.
    #[arg(long, env = "CG_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    write_timeout_ms: u64,
}

impl ConnArgs {
    fn options(&self, name: &'static str, handshake_timeout: Duration) -> ConnOptions {
        ConnOptions {
            name,
            handshake_timeout,
            max_connections: self
                .max_connections
                .unwrap_or_else(net::default_max_connections),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
        }
    }
}

#[derive(Args, Clone, Debug)]
struct TlsArgs {
    /// PEM certificate chain: serve TLS on every listener (needs --tls-key).
    #[arg(long, env = "CG_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CG_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn load(&self) -> Result<Option<Tls>, AnyError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Tls::load(cert, key)?)),
            _ => Ok(None),
        }
    }
}

#[derive(Args, Clone, Debug)]
struct HttpArgs {
    /// Address of the REST listener.
    #[arg(long, env = "CG_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: String,
    /// Largest request body in bytes; larger is 413.
    #[arg(long, env = "CG_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Largest backend reply message in bytes; larger is answered 500 (the gateway's limit).
    #[arg(long, alias = "max-response-bytes", env = "CG_MAX_REPLY_BYTES", default_value_t = 4 << 20)]
    max_reply_bytes: usize,
    /// Deadline of each backend call in milliseconds; past it the reply is 504.
    #[arg(long, env = "CG_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Leave fields that hold their default value out of replies.
    #[arg(long, env = "CG_OMIT_DEFAULT_FIELDS")]
    omit_default_fields: bool,
    /// Field names in replies: `json` (lowerCamelCase, the proto3 JSON mapping) or `proto`
    /// (as in the .proto, as grpc-gateway v1 and Envoy's preserve_proto_field_names write them).
    #[arg(long, env = "CG_JSON_NAMES", default_value = "json", value_parser = ["json", "proto"])]
    json_names: String,
    /// Enum values in replies as numbers instead of names.
    #[arg(long, env = "CG_ENUMS_AS_INTS")]
    enums_as_ints: bool,
    /// Indented JSON replies.
    #[arg(long, env = "CG_PRETTY")]
    pretty: bool,
    #[command(flatten)]
    sources: SourceArgs,
    /// Accept enum value names in any letter case (`running` for `RUNNING`).
    #[arg(long, env = "CG_CASE_INSENSITIVE_ENUMS")]
    case_insensitive_enums: bool,
    /// Skip query parameters that name no field of the request instead of answering 400.
    #[arg(long, env = "CG_IGNORE_UNKNOWN_QUERY_PARAMS")]
    ignore_unknown_query_params: bool,
    /// Milliseconds a client has to send a request's headers (and finish a TLS handshake).
    #[arg(long, env = "CG_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// Milliseconds a client has to send the whole request body; past it the reply is 408.
    #[arg(long, env = "CG_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    body_read_timeout_ms: u64,
    /// Milliseconds a REST connection may stay without a request in flight before it is closed
    /// (GOAWAY on HTTP/2).
    #[arg(long, env = "CG_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    idle_timeout_ms: u64,
    /// Most concurrent HTTP/2 streams per REST connection.
    #[arg(long, env = "CG_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    max_concurrent_streams: u32,
    /// An origin that browsers may call the REST port from (CORS), as scheme://host[:port];
    /// repeatable, or comma-separated in the variable. `*` allows every origin, without
    /// credentials. Off by default: no CORS headers are sent.
    #[arg(
        long = "cors-allow-origin",
        env = "CG_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    cors_allow_origins: Vec<String>,
    /// Replies of at least this many bytes are compressed (gzip, br or zstd) when the client's
    /// Accept-Encoding asks for it.
    #[arg(long, env = "CG_COMPRESS_MIN_BYTES", default_value_t = 1024)]
    compress_min_bytes: u16,
    /// Never compress replies (request bodies are still decompressed).
    #[arg(long, env = "CG_NO_COMPRESSION")]
    no_compression: bool,
    /// A request header forwarded to the backend as metadata under its own name, besides
    /// Authorization, Idempotency-Key, X-Request-Id, X-Client-Request-Id and Grpc-Metadata-*;
    /// `*` stands for any run of characters (x-tenant-*). Repeatable, or comma-separated in the
    /// variable. Hop-by-hop, Content-*, Host, TE and grpc-* headers are never forwarded.
    #[arg(long = "forward-header", env = "CG_FORWARD_HEADER", value_delimiter = ',', value_parser = parse_header_pattern)]
    forward_headers: Vec<HeaderPattern>,
    /// Compress the gateway's gRPC messages to the backend with gzip or zstd, and ask for
    /// compressed replies (the backend must accept the encoding, as ours does).
    #[arg(long, env = "CG_BACKEND_COMPRESSION", value_parser = parse_compression)]
    backend_compression: Option<CompressionEncoding>,
    /// Name the backend's TLS certificate must carry when the gateway dials it over TLS.
    #[arg(long, env = "CG_TLS_SERVER_NAME", default_value = "localhost")]
    tls_server_name: String,
}

#[derive(Args, Clone, Debug)]
struct ServeArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    ready: ReadyArgs,
}

/// `backend`'s arguments: the backend's, and where to say it is ready.
#[derive(Args, Clone, Debug)]
struct BackendOnlyArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    ready: ReadyArgs,
}

#[derive(Args, Clone, Debug)]
struct ReadyArgs {
    /// Once every listener accepts, write their addresses here as JSON (`{"grpc":
    /// "127.0.0.1:50051", "http": "127.0.0.1:8080"}`, the listeners this command has), or on
    /// stdout for `-`: scripts bind port 0 and read it.
    #[arg(long, env = "CG_READY_FILE")]
    ready_file: Option<PathBuf>,
}

impl ReadyArgs {
    /// Writes the ready file atomically (temp file + rename), so a reader never sees half of
    /// it; `-` prints the same JSON line on stdout instead.
    fn announce(&self, listeners: &[(&str, SocketAddr)]) -> Result<(), AnyError> {
        let Some(path) = &self.ready_file else {
            return Ok(());
        };
        let fields: Vec<String> = listeners
            .iter()
            .map(|(name, addr)| format!("\"{name}\": \"{addr}\""))
            .collect();
        let line = format!("{{{}}}\n", fields.join(", "));
        if path.as_os_str() == "-" {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            return out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write the ready line: {e}").into());
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, line)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write --ready-file {}: {e}", path.display()).into())
    }
}

/// Where the routes come from beside the compiled-in services.
#[derive(Args, Debug, Clone)]
struct SourceArgs {
    /// A binary FileDescriptorSet (`protoc --include_imports -o`, `buf build -o`) of more
    /// services to serve over REST by their google.api.http rules, transcoded without
    /// generated code (repeatable; the first source of a file wins, the compiled-in ones
    /// first). Read again on SIGHUP.
    #[arg(
        long = "descriptor-set",
        env = "CG_DESCRIPTOR_SET",
        value_delimiter = ','
    )]
    descriptor_sets: Vec<PathBuf>,
    /// A gRPC API configuration (YAML, `http: rules: [...]`) whose rules add to or replace the
    /// google.api.http annotations, selected by method name. Read again on SIGHUP.
    #[arg(long, env = "CG_HTTP_CONFIG")]
    http_config: Option<PathBuf>,
    /// Which methods with no HTTP rule are served as `POST /package.Service/Method` with the
    /// request as the JSON body: those of services loaded at run time (descriptor sets,
    /// reflection), all, or none.
    #[arg(long, env = "CG_AUTO_MAP", default_value = "loaded", value_parser = ["loaded", "all", "off"])]
    auto_map: String,
    /// Transcode the compiled-in services with their descriptors too, as a loaded service is
    /// (no generated code): to compare the dynamic path with the compiled one.
    #[arg(long, env = "CG_TRANSCODE_DYNAMICALLY")]
    transcode_dynamically: bool,
}

impl SourceArgs {
    fn sources(&self, reflect: bool) -> gateway::Sources {
        gateway::Sources {
            descriptor_sets: self.descriptor_sets.clone(),
            reflect,
            http_config: self.http_config.clone(),
            auto_map: match self.auto_map.as_str() {
                "all" => gateway::AutoMap::All,
                "off" => gateway::AutoMap::Off,
                _ => gateway::AutoMap::Loaded,
            },
            all_dynamic: self.transcode_dynamically,
        }
    }
}

/// What `describe` and `openapi` read.
#[derive(Args, Debug)]
struct DescribeArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Ask the backends (--backend) for their services over server reflection, as
    /// `gateway --reflect` does.
    #[arg(long)]
    reflect: bool,
    /// The backends, as `gateway --backend`: with `SERVICE=URL` specs, only the services
    /// that have a backend are routed.
    #[arg(long, default_value = "http://127.0.0.1:50051", value_delimiter = ',')]
    backend: Vec<String>,
}

#[derive(Args, Debug)]
struct GatewayArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    ready: ReadyArgs,
    /// URL of the gRPC backend; `https://` dials TLS. Repeat it (or separate URLs with commas)
    /// for several backends serving the same data: calls are spread over those that are up,
    /// and a call a backend certainly did not process moves on to the next.
    /// `SERVICE_OR_PACKAGE=URL` sends the calls of that service, or of every service of that
    /// package, to its own backend (the longest name that matches wins; a plain URL takes the
    /// rest).
    #[arg(
        long,
        env = "CG_BACKEND",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    backend: Vec<String>,
    /// Ask each backend for its services over gRPC server reflection (v1, else v1alpha) at
    /// start, and serve their google.api.http rules (and, with --auto-map, their other
    /// methods); asked again on SIGHUP, every --reflect-interval, and when a routed method
    /// answers UNIMPLEMENTED.
    #[arg(long, env = "CG_REFLECT")]
    reflect: bool,
    /// Ask the backends again this often (`30s`, `5m`); off by default.
    #[arg(long, env = "CG_REFLECT_INTERVAL", value_parser = parse_duration)]
    reflect_interval: Option<Duration>,
    /// PEM certificate to trust for an `https://` backend (default: the system's roots are not
    /// loaded, so set this for TLS backends).
    #[arg(long, env = "CG_BACKEND_CA")]
    backend_ca: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    conn: ConnArgs,
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// A database URL, kept out of the logs (it may hold a password).
#[derive(Clone)]
struct DatabaseUrl(String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(…)")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// The store of `args`: the PostgreSQL database of `--database-url`, else the embedded store
/// of `--data-dir`.
fn open_store(args: &StoreArgs) -> Result<Arc<dyn Store>, AnyError> {
    Ok(match &args.database_url {
        Some(url) => Arc::new(PostgresStore::open(
            &url.0,
            PostgresOptions {
                pool_size: args.database_pool_size,
                ca_file: args.database_ca.clone(),
                ..PostgresOptions::default()
            },
        )?),
        None => Arc::new(EmbeddedStore::open(&args.data_dir)?),
    })
}

/// Where the data is, for the start log.
fn store_label(args: &StoreArgs) -> String {
    match &args.database_url {
        Some(_) => "postgresql (--database-url)".into(),
        None => args.data_dir.display().to_string(),
    }
}

/// `90s`, `15m`, `24h`, `30d`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (s, m, h or d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries only what a script asked for (`--ready-file -`).
    compute_gateway::telemetry::init_logging(match cli.log_format.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    });
    compute_gateway::telemetry::metrics();
    let spans = match cli
        .otlp_endpoint
        .as_deref()
        .map(|e| Spans::otlp(e, "compute-gateway"))
    {
        None => None,
        Some(Ok(spans)) => Some(spans),
        Some(Err(e)) => {
            eprintln!("compute-gateway: {e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args, spans.clone()).await,
        Command::Backend(args) => run_backend(args, spans.clone()).await,
        Command::Gateway(args) => run_gateway(args, spans.clone()).await,
        Command::Openapi(args) => print_openapi(&args).await,
        Command::Describe(args) => describe(&args).await,
        Command::Iam { command } => run_iam(command).await,
    };
    if let Some(spans) = spans {
        // The spans of the last requests, before the process ends.
        let flushed = tokio::task::spawn_blocking(move || spans.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "spans not exported at shutdown");
        }
    }
    if let Err(e) = result {
        eprintln!("compute-gateway: {e}");
        std::process::exit(1);
    }
}

async fn bind(addr: &str, flag: &str) -> Result<TcpListener, AnyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}").into())
}

fn backend_config(
    args: &BackendArgs,
    addr: SocketAddr,
    spans: &Option<Spans>,
) -> Result<BackendConfig, AnyError> {
    Ok(BackendConfig {
        create_delay: Duration::from_millis(args.create_delay_ms),
        advertise_address: args
            .advertise_address
            .clone()
            .unwrap_or_else(|| addr.to_string()),
        health: Default::default(),
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        idle_timeout: Duration::from_millis(args.grpc_idle_timeout_ms),
        messages: MessageLimits {
            max_recv_bytes: args.grpc_max_recv_bytes,
            max_send_bytes: args.grpc_max_send_bytes,
        },
        spans: spans.clone(),
        auth: auth_config(args)?,
        retention: Retention {
            operations: args.operation_retention,
            idempotency_keys: args.idempotency_key_retention,
            ..Retention::default()
        },
    })
}

fn auth_config(args: &BackendArgs) -> Result<AuthConfig, AnyError> {
    let config = match &args.iam_config {
        Some(path) => IamConfig::load(path)?,
        None => IamConfig::default(),
    };
    let mode = if args.auth == "iam" {
        AuthMode::Iam
    } else {
        tracing::warn!(
            "--auth none: every caller may read, change and delete every folder's images (use --auth iam)"
        );
        AuthMode::None
    };
    Ok(AuthConfig {
        mode,
        config: Arc::new(config),
        audience: args
            .iam_audience
            .clone()
            .map_or(Audience::Yandex, Audience::Pinned),
        rate_limit: args.rate_limit.map(|limit| RateLimit {
            burst: args.rate_limit_burst.unwrap_or(limit.burst),
            ..limit
        }),
    })
}

async fn run_iam(command: IamCommand) -> Result<(), AnyError> {
    let open = |store: &StoreArgs| -> Result<Arc<dyn Store>, AnyError> {
        open_store(store).map_err(|e| match store.database_url {
            // A database is shared: the servers may keep running.
            Some(_) => e,
            None => format!(
                "{e} (is a server running on {}? stop it first: the embedded store allows one process)",
                store.data_dir.display()
            )
            .into(),
        })
    };
    match command {
        IamCommand::CreateKey {
            service_account_id,
            out,
            store,
        } => {
            let store = open(&store)?;
            let key = backend::create_key(store, &service_account_id).await?;
            let json = serde_json::to_string_pretty(&key)? + "\n";
            match out.filter(|p| p.as_os_str() != "-") {
                Some(path) => {
                    write_private(&path, json.as_bytes())
                        .map_err(|e| format!("cannot write --out {}: {e}", path.display()))?;
                    eprintln!(
                        "key {} of {service_account_id} written to {}",
                        key.id,
                        path.display()
                    );
                }
                None => print!("{json}"),
            }
        }
        IamCommand::ListKeys { store } => {
            for key in backend::list_keys(&*open(&store)?)? {
                println!("{}\t{}\t{}", key.id, key.service_account_id, key.created_at);
            }
        }
        IamCommand::DeleteKey { id, store } => {
            let store = open(&store)?;
            if !backend::delete_key(store, &id).await? {
                return Err(format!("no key {id}").into());
            }
            eprintln!("key {id} deleted");
        }
    }
    Ok(())
}

/// Writes a file only its owner may read (it holds a private key).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn parse_header_pattern(text: &str) -> Result<HeaderPattern, String> {
    HeaderPattern::parse(text)
}

fn parse_compression(text: &str) -> Result<CompressionEncoding, String> {
    match text {
        "gzip" => Ok(CompressionEncoding::Gzip),
        "zstd" => Ok(CompressionEncoding::Zstd),
        other => Err(format!("{other:?} is not gzip or zstd")),
    }
}

fn gateway_config(
    args: &HttpArgs,
    backend_tls: Option<BackendTls>,
    spans: &Option<Spans>,
) -> Result<GatewayConfig, AnyError> {
    Ok(GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        max_reply_bytes: args.max_reply_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        render: RenderOptions {
            omit_default_fields: args.omit_default_fields,
            proto_names: args.json_names == "proto",
            enums_as_ints: args.enums_as_ints,
            pretty: args.pretty,
        },
        input: InputOptions {
            case_insensitive_enums: args.case_insensitive_enums,
            ignore_unknown_query_params: args.ignore_unknown_query_params,
        },
        backend_tls,
        spans: spans.clone(),
        sources: args.sources.sources(false),
        reload_interval: None,
        reload_on_hangup: true,
        edge: EdgeOptions {
            cors: CorsOrigins::parse(&args.cors_allow_origins)?,
            compress_min_bytes: (!args.no_compression).then_some(args.compress_min_bytes),
        },
        forward_headers: args.forward_headers.clone(),
        backend_compression: args.backend_compression,
    })
}

fn listener_options(args: &HttpArgs, conn: &ConnArgs) -> ListenerOptions {
    let header_read_timeout = Duration::from_millis(args.header_read_timeout_ms);
    let connections = conn.options("http", header_read_timeout);
    ListenerOptions {
        header_read_timeout,
        max_concurrent_streams: args.max_concurrent_streams,
        max_connections: connections.max_connections,
        write_timeout: connections.write_timeout,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        ..ListenerOptions::default()
    }
}

/// The OpenAPI document of the compiled-in routes, on stdout.
/// Writes `text` to stdout; a closed pipe (`| head`) is the reader's choice, not an error.
fn print(text: &str) -> Result<(), AnyError> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The routes the given sources make, as a gateway in front of `--backend` would serve them.
async fn routes_of(args: &DescribeArgs) -> Result<Arc<gateway::Routing>, AnyError> {
    let config = GatewayConfig {
        sources: args.sources.sources(args.reflect),
        ..GatewayConfig::default()
    };
    let gw = Gateway::balancing(&args.backend, config)?;
    gw.reflect_at_start().await?;
    Ok(gw.routes())
}

async fn print_openapi(args: &DescribeArgs) -> Result<(), AnyError> {
    let routing = routes_of(args).await?;
    print(&gateway::openapi::document(routing.table()))
}

async fn describe(args: &DescribeArgs) -> Result<(), AnyError> {
    use std::fmt::Write as _;
    let routing = routes_of(args).await?;
    let routes = routing.table();
    let mut text = String::new();
    for route in routes.routes() {
        let body = match route.body() {
            gateway::BodySelector::None => "-".to_string(),
            gateway::BodySelector::Whole => "*".to_string(),
            gateway::BodySelector::Field(f) => f.name().to_string(),
        };
        let _ = writeln!(
            text,
            "{:<7} {:<60} body={:<10} {} ({})",
            route.method().as_str(),
            route.pattern(),
            body,
            route.rpc().path(),
            if route.rpc().is_typed() {
                "typed"
            } else {
                "dynamic"
            }
        );
    }
    print(&text)
}

async fn serve(args: ServeArgs, spans: Option<Spans>) -> Result<(), AnyError> {
    tracing::info!(config = ?args, "serve");
    let tls = args.backend.tls.load()?;
    let grpc = bind(&args.backend.grpc_listen, "--grpc-listen").await?;
    let http = bind(&args.http.http_listen, "--http-listen").await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let store = open_store(&args.backend.store)?;
    let config = ServeConfig {
        backend: backend_config(&args.backend, grpc_addr, &spans)?,
        gateway: gateway_config(&args.http, None, &spans)?,
        listener: listener_options(&args.http, &args.backend.conn),
        grpc_connections: args.backend.conn.options(
            "grpc",
            Duration::from_millis(args.backend.handshake_timeout_ms),
        ),
        tls,
    };
    let server = Server::new(store, config).await?;
    let shutdown = Shutdown::on_signals();
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        tls = args.backend.tls.tls_cert.is_some(),
        store = %store_label(&args.backend.store),
        "serving"
    );
    args.ready
        .announce(&[("grpc", grpc_addr), ("http", http_addr)])?;
    server.run(grpc, http, shutdown).await?;
    Ok(())
}

async fn run_backend(both: BackendOnlyArgs, spans: Option<Spans>) -> Result<(), AnyError> {
    let args = both.backend;
    tracing::info!(config = ?args, "backend");
    let tls = args.tls.load()?;
    let grpc = bind(&args.grpc_listen, "--grpc-listen").await?;
    let addr = grpc.local_addr()?;
    let store = open_store(&args.store)?;
    let backend = Backend::new(store, backend_config(&args, addr, &spans)?);
    let recovered = backend.recover().await?;
    if recovered > 0 {
        tracing::info!(recovered, "completed creates left running by the last run");
    }
    let shutdown = Shutdown::on_signals();
    let incoming = net::incoming(
        grpc,
        tls.as_ref().map(Tls::grpc_server),
        args.conn
            .options("grpc", Duration::from_millis(args.handshake_timeout_ms)),
        shutdown.clone(),
    );
    tracing::info!(grpc = %addr, tls = tls.is_some(), store = %store_label(&args.store), "serving");
    both.ready.announce(&[("grpc", addr)])?;
    backend::serve(incoming, backend, shutdown).await;
    Ok(())
}

async fn run_gateway(args: GatewayArgs, spans: Option<Spans>) -> Result<(), AnyError> {
    tracing::info!(config = ?args, "gateway");
    let tls = args.tls.load()?;
    let backend_tls = match &args.backend_ca {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read --backend-ca {}: {e}", ca.display()))?;
            Some(BackendTls {
                config: net::client_config(&pem)?,
                server_name: args.http.tls_server_name.clone(),
            })
        }
        None => None,
    };
    let http = bind(&args.http.http_listen, "--http-listen").await?;
    let http_addr = http.local_addr()?;
    let mut config = gateway_config(&args.http, backend_tls, &spans)?;
    config.sources.reflect = args.reflect;
    config.reload_interval = args.reflect_interval;
    let gw = Arc::new(Gateway::balancing(&args.backend, config)?);
    gw.reflect_at_start().await?;
    let shutdown = Shutdown::on_signals();
    let options = listener_options(&args.http, &args.conn);
    let incoming = net::incoming(
        http,
        tls.as_ref().map(Tls::rest_server),
        options.connections(),
        shutdown.clone(),
    );
    tracing::info!(http = %http_addr, backends = ?args.backend, tls = tls.is_some(), "serving");
    args.ready.announce(&[("http", http_addr)])?;
    gateway::serve(incoming, gw, options, shutdown).await;
    Ok(())
}
