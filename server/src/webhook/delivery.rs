//! A webhook's thread: read its consumer, POST, retry, acknowledge or
//! dead-letter, in order.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use herald_core::broker::{BrokerError, Delivery, PublishOptions, TopicPublisher};
use herald_core::{Broker, Subscription};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use super::{Hook, MAX_RETRY_AFTER};
use crate::fanout::encode::delivery_object;
use crate::pause;

/// How long a wait for the next event lasts before `stop` is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Bytes of an answer's body read (and dropped) so the connection can be
/// reused; a longer body closes it.
const MAX_ANSWER: u64 = 64 * 1024;

/// Runs until `stop` is set. A broker error (the log failing, say) is
/// logged and the webhook starts over from its checkpoint a second later:
/// nothing it had not acknowledged is lost.
pub(super) fn run(hook: &Hook, broker: &Broker, stop: &AtomicBool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(hook.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    while !stop.load(Ordering::Acquire) {
        let result = broker.system_publisher(&hook.deadletter).and_then(|dead| {
            let mut sub =
                broker.subscribe_consumer(&hook.consumer, hook.filter.clone(), hook.start_at())?;
            deliver(hook, broker, &agent, &mut sub, &dead, stop)
        });
        if let Err(e) = result {
            tracing::error!(webhook = %hook.name, "webhook stopped by a broker error, starting over from its checkpoint: {e}");
            pause(stop, Duration::from_secs(1));
        }
    }
}

/// What became of one request's events.
enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Given up: the events go to the dead-letter topic.
    Failed { attempts: u32, error: String },
    /// The server is stopping; the events stay unacknowledged.
    Stopped,
}

fn deliver(
    hook: &Hook,
    broker: &Broker,
    agent: &ureq::Agent,
    sub: &mut Subscription,
    dead: &TopicPublisher,
    stop: &AtomicBool,
) -> Result<(), BrokerError> {
    let mut batch: Vec<Delivery> = Vec::with_capacity(hook.batch);
    let mut checkpoint = broker.consumer_checkpoint(&hook.consumer)?;
    while !stop.load(Ordering::Acquire) {
        let Some(first) = sub.next_timeout(POLL)? else {
            // Idle, nothing in flight: everything examined was delivered or
            // not the webhook's, so the checkpoint passes it. (It would
            // otherwise stay at the last event that matched and keep every
            // later one of every topic from retention.)
            let examined = sub.next_seq() - 1;
            if examined > checkpoint {
                match broker.ack_consumer(&hook.consumer, examined) {
                    Ok(()) | Err(BrokerError::Ack(_)) => checkpoint = examined,
                    Err(e) => return Err(e),
                }
            }
            continue;
        };
        batch.push(first);
        while batch.len() < hook.batch {
            match sub.try_next()? {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        let body = body(hook, &batch);
        let events = batch.iter().filter_map(|d| match d {
            Delivery::Event(e) => Some(e.seq),
            Delivery::Gap(_) => None,
        });
        let (count, last) = events.fold((0, None), |(n, _), seq| (n + 1, Some(seq)));
        match send(hook, agent, &body, stop) {
            Outcome::Delivered => {
                hook.stats.delivered.fetch_add(count, Ordering::Relaxed);
            }
            Outcome::Stopped => return Ok(()),
            Outcome::Failed { attempts, error } => {
                tracing::warn!(webhook = %hook.name, attempts, "webhook gave up a request ({error}); its events go to {}", hook.deadletter);
                dead_letter(hook, dead, &batch, attempts, &error)?;
            }
        }
        // Acknowledged only now: a crash before this line sends them again.
        if let Some(last) = last {
            sub.ack_up_to(last)?;
            checkpoint = checkpoint.max(last);
            hook.stats.last_seq.store(last, Ordering::Relaxed);
        }
        batch.clear();
    }
    Ok(())
}

/// The request body: the delivery's JSON object alone (batches of one), or
/// `{"events":[…]}`.
fn body(hook: &Hook, batch: &[Delivery]) -> BytesMut {
    let mut out = BytesMut::new();
    if hook.batch == 1 {
        delivery_object(&mut out, &batch[0].as_delivery_ref(), hook.prefix_len);
    } else {
        out.extend_from_slice(br#"{"events":["#);
        for (i, d) in batch.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            delivery_object(&mut out, &d.as_delivery_ref(), hook.prefix_len);
        }
        out.extend_from_slice(b"]}");
    }
    out
}

/// POSTs `body` until a 2xx, a final failure, or `stop`.
fn send(hook: &Hook, agent: &ureq::Agent, body: &[u8], stop: &AtomicBool) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (error, retry, retry_after) = match post(hook, agent, body, attempt) {
            Ok(answer) if (200..300).contains(&answer.status) => {
                hook.stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            Ok(answer) => (
                format!("HTTP {}", answer.status),
                matches!(answer.status, 408 | 429 | 500..=599),
                answer.retry_after,
            ),
            Err(e) => (e.to_string(), true, None),
        };
        hook.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
        if !retry || attempt >= hook.max_attempts {
            return Outcome::Failed {
                attempts: attempt,
                error,
            };
        }
        tracing::debug!(webhook = %hook.name, attempt, "webhook request failed ({error}), retrying");
        let wait = retry_after.unwrap_or_else(|| backoff(hook, attempt));
        if !pause(stop, wait.min(MAX_RETRY_AFTER)) {
            return Outcome::Stopped;
        }
    }
}

/// The wait after failed attempt `attempt` (1, 2, …): doubling from the
/// initial backoff up to the maximum, a random point in its upper half
/// (jitter spreads the retries of many webhooks; never zero).
fn backoff(hook: &Hook, attempt: u32) -> Duration {
    let doubled = hook
        .backoff_initial
        .saturating_mul(1u32 << (attempt - 1).min(20));
    let cap = doubled.min(hook.backoff_max);
    cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
}

/// A receiver's answer.
struct Answer {
    status: u16,
    /// `Retry-After` in seconds (an HTTP date is not read: backoff applies).
    retry_after: Option<Duration>,
}

fn post(
    hook: &Hook,
    agent: &ureq::Agent,
    body: &[u8],
    attempt: u32,
) -> Result<Answer, ureq::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut answer = agent
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-herald-webhook", &hook.name)
        .header("x-herald-attempt", attempt.to_string())
        .header("x-herald-signature", signature(&hook.secret, now, body))
        .send(body)?;
    let retry_after = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Drained so the connection is reused; what it says is not used.
    let _ = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec();
    Ok(Answer {
        status: answer.status().as_u16(),
        retry_after,
    })
}

/// `X-Herald-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`. Signing the time lets a receiver refuse replays.
pub(crate) fn signature(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut out = format!("t={unix_secs},v1=");
    for b in mac.finalize().into_bytes() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A dead letter's data.
#[derive(Serialize)]
struct DeadLetter<'a, E> {
    webhook: &'a str,
    attempts: u32,
    error: &'a str,
    event: E,
}

/// `{"webhook","attempts","error","event"}` as JSON.
fn letter(hook: &Hook, attempts: u32, error: &str, event: impl Serialize) -> Vec<u8> {
    let webhook = &hook.name;
    let letter = DeadLetter {
        webhook,
        attempts,
        error,
        event,
    };
    // Strings, numbers and JSON values always serialize.
    serde_json::to_vec(&letter).unwrap_or_default()
}

/// Publishes each event of a failed request to the dead-letter topic, as
/// `{"webhook","attempts","error","event"}` with the event's type and
/// correlation id. An event too large to carry whole there goes without
/// its `data` (`"data_omitted": true`; the log still holds it). Gap
/// notices are not events: they are left out.
fn dead_letter(
    hook: &Hook,
    dead: &TopicPublisher,
    batch: &[Delivery],
    attempts: u32,
    error: &str,
) -> Result<(), BrokerError> {
    for d in batch {
        let Delivery::Event(e) = d else { continue };
        let correlation = e.correlation.as_deref();
        let options = PublishOptions {
            correlation,
            ..PublishOptions::default()
        };
        let mut object = BytesMut::new();
        delivery_object(&mut object, &d.as_delivery_ref(), hook.prefix_len);
        // The encoder's event object is JSON: it goes in as it is.
        let whole = serde_json::from_slice::<&RawValue>(&object).ok();
        match whole
            .map(|raw| dead.publish(&e.event_type, &letter(hook, attempts, error, raw), options))
        {
            Some(Ok(_)) => {}
            // Too large whole (or, never, not JSON): without its data.
            Some(Err(BrokerError::PayloadTooLarge { .. })) | None => {
                let short = serde_json::json!({
                    "seq": e.seq,
                    "topic": crate::fanout::encode::external_topic(&e.topic, hook.prefix_len),
                    "topic_seq": e.topic_seq,
                    "type": e.event_type,
                    "data_omitted": true,
                });
                dead.publish(
                    &e.event_type,
                    &letter(hook, attempts, error, short),
                    options,
                )?;
            }
            Some(Err(e)) => return Err(e),
        }
        hook.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_dot_body() {
        // Expected digest from Python's hmac module:
        // hmac.new(b"Jefe", b'1700000000.{"seq":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, br#"{"seq":1}"#),
            "t=1700000000,v1=82196225751a11cfcdf0e3d38986295effcbdc9696777255df8e56582a4b12ad"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "0123456789abcdef").unwrap();
        let hook = Hook::new(&crate::webhook::WebhookConfig {
            name: "h".into(),
            url: "http://127.0.0.1:1/".into(),
            topics: vec![">".into()],
            types: vec![],
            tenant: None,
            secret_file: secret,
            batch: 1,
            timeout_ms: 1000,
            max_attempts: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            start: crate::webhook::WebhookStart::Now,
        })
        .unwrap();
        for _ in 0..100 {
            let first = backoff(&hook, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&hook, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(&hook, 40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }
}
