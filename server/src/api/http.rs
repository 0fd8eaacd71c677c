//! HTTP requests: origin and token checks, then one typed operation per
//! endpoint, filled from the path, the query and the body. Answers are
//! [`Response`] values; the worker writes them and decides keep-alive.
//! The endpoints are specified in `docs/PROTOCOL.md`.

use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use herald_core::broker::Subscription;
use herald_core::Broker;
use serde::Serialize;

use super::auth::{header_token, presents_credentials, Authenticator, Expiry, TOKEN_COOKIE};
use super::error::ApiError;
use super::exec::{
    Caller, Consumer, Hold, Opened, PendingPublish, PublishAnswer, Publishing, Reset,
};
use super::ops::{self, EventsQuery, NoQuery, PresenceQuery, StartDefault};
use super::origins::{Origins, Verdict};
use super::rate::RateLimits;
use super::schema::Schemas;
use super::stomp::StompSession;
use super::tickets::Tickets;
use super::ws::{Protocol, WsSession};
use crate::cluster::Cluster;
use crate::fanout::encode::{sse_preamble, SseForm};
use crate::metrics::{render_metrics, ServerStats};
use crate::wire::http::{Request, Response};

/// What answering a request needs.
pub(crate) struct HttpContext<'a> {
    pub(crate) broker: &'a Broker,
    /// Cluster mode: where publishes go; `/readyz` asks it.
    pub(crate) cluster: Option<&'a Cluster>,
    /// What published payloads must satisfy.
    pub(crate) schemas: &'a Schemas,
    pub(crate) rate: &'a RateLimits,
    /// The client's address (its rate-limit key when anonymous).
    pub(crate) peer: IpAddr,
    pub(crate) auth: &'a Authenticator,
    pub(crate) tickets: &'a Tickets,
    pub(crate) origins: &'a Origins,
    pub(crate) stats: &'a ServerStats,
    /// `retry:` sent to SSE clients, in milliseconds.
    pub(crate) sse_retry_ms: u64,
    /// STOMP: the largest SEND body, the heart-beat interval offered.
    pub(crate) max_body: usize,
    pub(crate) stomp_heartbeat: Duration,
    /// STOMP destination prefixes that name topics.
    pub(crate) stomp_destinations: &'a [String],
}

/// What the worker must do with a request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this answer.
    Respond(Response),
    /// Send this head, then stream Server-Sent Events.
    Stream(Box<Stream>),
    /// Hold the request until an event arrives or the wait ends.
    Poll(Box<Poll>),
    /// Send this `101`, then speak WebSocket.
    Upgrade(Response, Box<Protocol>),
    /// Answer a publish once the cluster's stream has (with CORS headers
    /// for this origin); requests pipelined behind it wait.
    Publishing(Box<PendingPublish>, Option<String>),
}

/// A Server-Sent Events stream to start.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) head: Response,
    /// The stream's first frames (`retry:`, a reset notice, `connected`).
    pub(crate) preamble: BytesMut,
    pub(crate) sub: Subscription,
    pub(crate) form: SseForm,
    /// Tenant prefix to strip from topic names sent back.
    pub(crate) prefix_len: usize,
    /// When the token runs out and the stream ends.
    pub(crate) expiry: Option<Expiry>,
    /// Its start is ahead of this node's replica: the head waits for it.
    pub(crate) hold: Option<Hold>,
}

/// A poll to answer once it has events or its wait is over.
#[derive(Debug)]
pub(crate) struct Poll {
    pub(crate) sub: Subscription,
    pub(crate) limit: usize,
    pub(crate) wait: Duration,
    /// Positions are topic sequences (single-topic polls).
    pub(crate) topic_ids: bool,
    /// `next_after` if nothing comes.
    pub(crate) after: u64,
    pub(crate) prefix_len: usize,
    /// CORS headers for the answer.
    pub(crate) cors: Option<String>,
    /// Its start is ahead of this node's replica (see [`Hold`]).
    pub(crate) hold: Option<Hold>,
}

/// The answer to `e`.
pub(crate) fn error(e: &ApiError) -> Response {
    let (status, reason) = e.status();
    let response = Response::error(status, reason, e.code(), e.message());
    match e {
        // Whole seconds, rounded up: retrying sooner would be refused.
        ApiError::RateLimited { retry_after, .. } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.with_header("Retry-After", secs.max(1).to_string())
        }
        _ => response,
    }
}

/// The answer to a client held past its [`Hold`]: 503, retry in a second.
pub(crate) fn hold_expired(hold: &Hold) -> Response {
    error(&hold.expired()).with_header("Retry-After", "1")
}

/// The answer to a publish held for a cluster's stream (see
/// [`Action::Publishing`]), once it has come.
pub(crate) fn published(answer: Result<PublishAnswer, ApiError>, cors: Option<&str>) -> Response {
    let response = match answer {
        Ok(answer) => Response::json(&answer),
        Err(e) => error(&e),
    };
    match cors {
        Some(origin) => with_cors(response, origin),
        None => response,
    }
}

/// Handles one request.
pub(crate) fn handle(cx: &HttpContext<'_>, req: &Request) -> Action {
    // Endpoints that read no token keep the loopback-Host rule whatever
    // the request carries (a bogus token must not lift it).
    let unauthenticated = matches!(req.path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let bearer = !unauthenticated && presents_credentials(req, opens_stream(req, &segments));
    let cors = match cx
        .origins
        .check(req.header("origin"), req.header("host"), bearer)
    {
        Verdict::Pass => None,
        Verdict::Cors(origin) => Some(origin.to_owned()),
        Verdict::Refuse(why) => return Action::Respond(error(&ApiError::Forbidden(why.into()))),
    };
    if let (Some(origin), "OPTIONS") = (&cors, req.method.as_str()) {
        return Action::Respond(preflight(origin));
    }
    let action = match dispatch(cx, req, cors.as_deref()) {
        Ok(action) => action,
        Err(e) => Action::Respond(error(&e)),
    };
    match (action, cors) {
        (Action::Respond(r), Some(origin)) => Action::Respond(with_cors(r, &origin)),
        (Action::Stream(mut s), Some(origin)) => {
            s.head = with_cors(s.head, &origin);
            Action::Stream(s)
        }
        (Action::Publishing(p, _), Some(origin)) => Action::Publishing(p, Some(origin)),
        (action, _) => action,
    }
}

fn dispatch(cx: &HttpContext<'_>, req: &Request, cors: Option<&str>) -> Result<Action, ApiError> {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let tickets = opens_stream(req, &segments).then_some(cx.tickets);
    let respond = |r: Response| Ok(Action::Respond(r));
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["healthz"]) => respond(Response::new(200, "OK", "text/plain", b"ok\n".to_vec())),
        ("GET", ["readyz"]) => match cx.cluster.map_or(Ok(()), Cluster::ready) {
            Ok(()) => respond(Response::new(200, "OK", "text/plain", b"ready\n".to_vec())),
            Err(why) => Err(ApiError::Unavailable(format!("not ready: {why}"))),
        },
        ("GET", ["metrics"]) => respond(Response::new(
            200,
            "OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_metrics(
                cx.broker,
                cx.stats,
                cx.rate,
                cx.schemas,
                cx.tickets,
                cx.cluster.map(|c| &*c.state),
            )
            .into_bytes(),
        )),
        (_, ["healthz" | "readyz" | "metrics"]) => Err(ApiError::MethodNotAllowed),
        // STOMP clients send their token in CONNECT (browsers cannot set
        // headers on a WebSocket): a token on the upgrade is checked now.
        ("GET", ["v1", "stomp"]) if req.header("upgrade").is_some() => {
            let grants = match presents_credentials(req, tickets.is_some()) {
                true => Some(cx.auth.authenticate(req, tickets)?),
                false => cx.auth.authenticate(req, None).ok(),
            };
            Ok(match upgrade(req, "/v1/stomp") {
                Some(Ok(switching)) => {
                    let stomp = StompSession::new(
                        grants,
                        cx.max_body,
                        cx.stomp_heartbeat,
                        cx.stomp_destinations,
                    );
                    Action::Upgrade(switching, Box::new(Protocol::Stomp(Box::new(stomp))))
                }
                Some(Err(e)) => Action::Respond(error(&e).closing()),
                None => Action::Respond(
                    error(&ApiError::invalid("/v1/stomp is a WebSocket endpoint")).closing(),
                ),
            })
        }
        // Clearing the cookie needs no token: an expired one is what it
        // clears.
        ("DELETE", ["v1", "cookie"]) => {
            from_query::<NoQuery>(req)?;
            respond(token_cookie("", 0))
        }
        _ => {
            let grants = cx.auth.authenticate(req, tickets)?;
            let caller = Caller {
                broker: cx.broker,
                cluster: cx.cluster,
                grants: &grants,
                schemas: cx.schemas,
                rate: cx.rate,
                peer: cx.peer,
            };
            match upgrade(req, "/v1/ws") {
                None => {}
                Some(Ok(switching)) => {
                    let session = Box::new(Protocol::Json(Box::new(WsSession::new(grants))));
                    return Ok(Action::Upgrade(switching, session));
                }
                // The rest of the connection would not be HTTP: close it.
                Some(Err(e)) => return Ok(Action::Respond(error(&e).closing())),
            }
            client_request(cx, &caller, req, &segments, cors)
        }
    }
}

/// The endpoints that need a token (or anonymous access).
fn client_request(
    cx: &HttpContext<'_>,
    caller: &Caller<'_>,
    req: &Request,
    segments: &[&str],
    cors: Option<&str>,
) -> Result<Action, ApiError> {
    match (req.method.as_str(), segments) {
        ("POST", ["v1", "topics", topic, "events"]) => {
            from_query::<NoQuery>(req)?;
            let topic = ops::raw_string(topic);
            let request = ops::publish_body(&req.body, &topic)?;
            let key = req
                .header("idempotency-key")
                .map(|k| ops::IdempotencyKey::parse("Idempotency-Key", k))
                .transpose()?;
            match caller.start_publish(&request, key.as_ref())? {
                Publishing::Done(answer) => json(&answer),
                Publishing::Pending(p) => Ok(Action::Publishing(Box::new(p), None)),
            }
        }
        ("GET", ["v1", "topics", topic, "events"]) => events(cx, caller, req, Some(topic), cors),
        ("GET", ["v1", "events"]) => events(cx, caller, req, None, cors),
        ("POST", ["v1", "consumers", name, "ack"]) => {
            from_query::<NoQuery>(req)?;
            let name = ops::raw_string(name);
            let acked = caller.ack(ops::from_body(&req.body, &[("consumer", &name)])?)?;
            json(&Consumer {
                consumer: acked.consumer,
                checkpoint: acked.checkpoint,
            })
        }
        ("GET", ["v1", "consumers"]) => {
            from_query::<NoQuery>(req)?;
            json(&caller.consumers()?)
        }
        ("DELETE", ["v1", "consumers", name]) => {
            from_query::<NoQuery>(req)?;
            json(&caller.remove_consumer(name)?)
        }
        ("POST", ["v1", "tickets"]) => {
            from_query::<NoQuery>(req)?;
            ops::no_body(&req.body)?;
            // A ticket opens a connection: it is charged as one, so the
            // connection rate limit also bounds how fast tickets are issued.
            cx.rate.connect(caller.peer)?;
            let issued = cx.tickets.issue(caller.grants, std::time::Instant::now())?;
            let mut created = Response::json(&issued);
            (created.status, created.reason) = (201, "Created");
            Ok(Action::Respond(created))
        }
        ("POST", ["v1", "cookie"]) => {
            from_query::<NoQuery>(req)?;
            ops::no_body(&req.body)?;
            let token = header_token(req).ok_or_else(|| {
                ApiError::Unauthenticated(
                    "POST /v1/cookie takes the token in the Authorization header".into(),
                )
            })?;
            // A verified JWT is base64url and dots: nothing that could end
            // the header or the cookie.
            if !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(ApiError::invalid("the token is not a compact JWT"));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let exp = caller.grants.exp().unwrap_or(now);
            Ok(Action::Respond(token_cookie(
                token,
                exp.saturating_sub(now),
            )))
        }
        ("GET", ["v1", "topics", topic, "presence"]) => {
            from_query::<NoQuery>(req)?;
            json(&caller.presence(PresenceQuery {
                topic: (*topic).to_owned(),
            })?)
        }
        ("POST", ["v1", "presence", "heartbeat"]) => {
            from_query::<NoQuery>(req)?;
            json(&caller.heartbeat(ops::from_body(&req.body, &[])?)?.1)
        }
        ("POST", ["v1", "presence", "leave"]) => {
            from_query::<NoQuery>(req)?;
            json(&caller.leave(ops::from_body(&req.body, &[])?)?.1)
        }
        (_, ["v1", "topics", _, "events" | "presence"])
        | (_, ["v1", "events"])
        | (_, ["v1", "consumers", _, "ack"])
        | (_, ["v1", "consumers"] | ["v1", "consumers", _])
        | (_, ["v1", "presence", "heartbeat" | "leave"])
        | (_, ["v1", "tickets" | "cookie"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound("no such endpoint".into())),
    }
}

/// `204` setting the token cookie (`max_age` 0: clearing it). `Path=/v1`:
/// sent with API requests only; `SameSite=Strict`: never with requests
/// other sites start.
fn token_cookie(token: &str, max_age: u64) -> Response {
    let mut r = Response::head(204, "No Content").with_header(
        "Set-Cookie",
        format!(
            "{TOKEN_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/v1; Max-Age={max_age}"
        ),
    );
    r.body = Some(Vec::new());
    r
}

/// A typed result, answered as JSON.
fn json(result: &impl Serialize) -> Result<Action, ApiError> {
    Ok(Action::Respond(Response::json(result)))
}

fn from_query<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    ops::from_query(&req.query)
}

/// `GET` events: a Server-Sent Events stream if the client accepts
/// `text/event-stream`, otherwise a poll.
fn events(
    cx: &HttpContext<'_>,
    caller: &Caller<'_>,
    req: &Request,
    path_topic: Option<&str>,
    cors: Option<&str>,
) -> Result<Action, ApiError> {
    let sse = wants_sse(req);
    let query: EventsQuery = match sse {
        true => ops::from_stream_query(&req.query)?,
        false => from_query(req)?,
    };
    let last_event_id = last_event_id(req, sse)?;
    let selection = query.selection(path_topic, last_event_id)?;
    let prefix_len = caller.grants.prefix_len();
    if sse {
        let opened = caller.open(selection, StartDefault::Now)?;
        let form = SseForm::new(opened.single, query.named.unwrap_or(true));
        let preamble = sse_preamble(
            form,
            cx.sse_retry_ms,
            opened.sub.beyond_end(),
            opened.position(),
        );
        let head = Response::head(200, "OK")
            .with_header("Content-Type", "text/event-stream")
            .with_header("Cache-Control", "no-cache")
            .with_header("Connection", "keep-alive")
            .with_header("X-Accel-Buffering", "no");
        return Ok(Action::Stream(Box::new(Stream {
            head,
            preamble,
            sub: opened.sub,
            form,
            prefix_len,
            expiry: Expiry::of(caller.grants, false),
            hold: opened.hold,
        })));
    }
    let (limit, wait_ms) = query.poll_bounds();
    let Opened {
        sub,
        single,
        after,
        hold,
        ..
    } = caller.open(selection, StartDefault::Beginning)?;
    if let Some(head) = sub.beyond_end() {
        // Answered at once: the client must re-sync before anything else.
        #[derive(Serialize)]
        struct ResetAnswer {
            events: [(); 0],
            next_after: u64,
            reset: Reset,
        }
        return json(&ResetAnswer {
            events: [],
            next_after: head,
            reset: Reset { head },
        });
    }
    Ok(Action::Poll(Box::new(Poll {
        sub,
        limit,
        wait: Duration::from_millis(wait_ms),
        topic_ids: single,
        after,
        prefix_len,
        cors: cors.map(str::to_owned),
        hold,
    })))
}

/// Whether the client asks for an event stream rather than a poll.
fn wants_sse(req: &Request) -> bool {
    req.header("accept")
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Whether `req` opens a stream (an SSE stream, a `/v1/ws` or `/v1/stomp`
/// upgrade): the requests a ticket may authenticate.
fn opens_stream(req: &Request, segments: &[&str]) -> bool {
    let websocket = req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    req.method == "GET"
        && match segments {
            ["v1", "ws" | "stomp"] => websocket,
            ["v1", "events"] | ["v1", "topics", _, "events"] => !websocket && wants_sse(req),
            _ => false,
        }
}

/// An SSE client's resume position: its `Last-Event-ID` header, a
/// sequence number (ignored unless the request is for an event stream).
pub(crate) fn last_event_id(req: &Request, sse: bool) -> Result<Option<u64>, ApiError> {
    match req.header("last-event-id") {
        Some(id) if sse => id
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid("Last-Event-ID must be a sequence number")),
        _ => Ok(None),
    }
}

/// STOMP's WebSocket subprotocols, best first.
const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// The `101 Switching Protocols` answer to a valid upgrade request to
/// `path` (`/v1/ws` or `/v1/stomp`), or `None` if `req` is not a WebSocket
/// upgrade.
fn upgrade(req: &Request, path: &str) -> Option<Result<Response, ApiError>> {
    let upgrade = req.header("upgrade")?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let refuse = |why: &str| Err(ApiError::invalid(why));
    Some((|| {
        if req.path != path {
            return refuse("WebSocket connections are served at /v1/ws (and STOMP at /v1/stomp)");
        }
        if req.method != "GET" {
            return refuse("WebSocket upgrades must use GET");
        }
        if req.header("sec-websocket-version") != Some("13") {
            return refuse("unsupported Sec-WebSocket-Version (need 13)");
        }
        let Some(key) = req.header("sec-websocket-key") else {
            return refuse("missing Sec-WebSocket-Key");
        };
        ops::from_stream_query::<NoQuery>(&req.query)?;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let switching = Response::head(101, "Switching Protocols")
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header("Sec-WebSocket-Accept", accept);
        // STOMP: the best version the client offers, if it offers any.
        let offered = req.header("sec-websocket-protocol").unwrap_or("");
        let chosen = STOMP_SUBPROTOCOLS
            .into_iter()
            .find(|p| offered.split(',').any(|o| o.trim().eq_ignore_ascii_case(p)));
        Ok(match chosen {
            Some(p) if path == "/v1/stomp" => switching.with_header("Sec-WebSocket-Protocol", p),
            _ => switching,
        })
    })())
}

/// CORS headers for an allowed cross-origin page.
pub(crate) fn with_cors(response: Response, origin: &str) -> Response {
    response
        .with_header("Access-Control-Allow-Origin", origin)
        .with_header("Vary", "Origin")
        .with_header("Access-Control-Expose-Headers", "Content-Type")
}

/// The answer to a CORS preflight (`OPTIONS`) from an allowed origin.
fn preflight(origin: &str) -> Response {
    let mut r = Response::head(204, "No Content")
        .with_header("Access-Control-Allow-Origin", origin)
        .with_header("Vary", "Origin")
        .with_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        .with_header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, Last-Event-ID",
        )
        .with_header("Access-Control-Max-Age", "600");
    r.body = Some(Vec::new());
    r
}
