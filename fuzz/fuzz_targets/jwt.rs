//! The server's token check, with an HS256 key, on three kinds of input:
//! arbitrary token text; tokens signed with the key whose header and claims
//! are JSON objects built from fuzzed fields (or fuzzed text); and claims
//! minted by the server's own `mint_hs256`.
//!
//! A token the verifier accepts must carry a correct HS256 signature over
//! its first two parts, an `HS256` header, claims that decode (by plain
//! serde_json) to exactly the claims returned, an unexpired `exp`, a valid
//! tenant and valid grant patterns; and it must round-trip: re-minted, the
//! claims are accepted again unchanged. Minted claims that obey every rule
//! must be accepted.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use herald_core::broker::TopicPattern;
use herald_server::fuzzing::TokenVerifier;
use herald_server::{mint_hs256, Claims};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SECRET: &[u8] = b"fuzzing-secret-of-a-reasonable-length";
const LEEWAY: u64 = 5;

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(String),
    SignedText {
        header: String,
        claims: String,
    },
    SignedJson {
        header: Vec<Field>,
        claims: Vec<Field>,
    },
    Minted(Minted),
}

#[derive(Debug, Arbitrary)]
struct Field {
    key: Key,
    value: Json,
}

#[derive(Debug, Arbitrary)]
enum Key {
    Alg,
    Typ,
    Kid,
    Sub,
    Exp,
    Nbf,
    Aud,
    Tenant,
    Publish,
    Subscribe,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Alg(AlgName),
    Str(String),
    /// Seconds from now.
    Relative(i32),
    U64(u64),
    I64(i64),
    F64(f64),
    Names(Vec<String>),
    Patterns(Vec<Pattern>),
}

#[derive(Debug, Arbitrary)]
enum AlgName {
    Hs256,
    Hs384,
    Rs256,
    None,
    Lower,
}

/// Dot-joined tokens drawn from plausible pattern parts.
#[derive(Debug, Arbitrary)]
struct Pattern(Vec<Part>);

#[derive(Debug, Arbitrary)]
enum Part {
    Star,
    Tail,
    Word(u8),
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct Minted {
    sub: String,
    exp: Json,
    tenant: String,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pattern {
    fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                Part::Star => "*".to_owned(),
                Part::Tail => ">".to_owned(),
                Part::Word(w) => {
                    ["orders", "room", "x", "a-b", "$presence", "_"][*w as usize % 6].to_owned()
                }
                Part::Text(t) => t.clone(),
            })
            .collect();
        parts.join(".")
    }
}

impl Json {
    fn value(&self, now: u64) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::from(*b),
            Json::Alg(a) => Value::from(match a {
                AlgName::Hs256 => "HS256",
                AlgName::Hs384 => "HS384",
                AlgName::Rs256 => "RS256",
                AlgName::None => "none",
                AlgName::Lower => "hs256",
            }),
            Json::Str(s) => Value::from(s.as_str()),
            Json::Relative(d) => Value::from(now.saturating_add_signed(i64::from(*d))),
            Json::U64(n) => Value::from(*n),
            Json::I64(n) => Value::from(*n),
            Json::F64(f) => Value::from(*f),
            Json::Names(list) => Value::from(list.clone()),
            Json::Patterns(list) => Value::from(list.iter().map(Pattern::text).collect::<Vec<_>>()),
        }
    }
}

fn object(fields: &[Field], now: u64) -> String {
    let mut m = Map::new();
    for f in fields {
        let key = match &f.key {
            Key::Alg => "alg",
            Key::Typ => "typ",
            Key::Kid => "kid",
            Key::Sub => "sub",
            Key::Exp => "exp",
            Key::Nbf => "nbf",
            Key::Aud => "aud",
            Key::Tenant => "tenant",
            Key::Publish => "publish",
            Key::Subscribe => "subscribe",
            Key::Other(k) => k,
        };
        m.insert(key.to_owned(), f.value.value(now));
    }
    Value::Object(m).to_string()
}

fn sign(signing_input: &str) -> String {
    jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("HS256 signing")
}

fn signed(header: &str, claims: &str) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let signature = sign(&input);
    format!("{input}.{signature}")
}

fn tenant_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn grants_ok(c: &Claims) -> bool {
    tenant_ok(&c.tenant)
        && c.publish
            .iter()
            .chain(&c.subscribe)
            .all(|p| TopicPattern::parse(&format!("{}.{p}", c.tenant)).is_ok())
}

/// The properties of an accepted token.
fn check_accepted(v: &TokenVerifier, token: &str, claims: &Claims, before: u64) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token:?}");
    let input = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(parts[2], sign(&input), "accepted without a valid signature");
    let header: Value =
        serde_json::from_slice(&B64.decode(parts[0]).expect("header base64")).expect("header JSON");
    assert_eq!(header["alg"], "HS256");
    let decoded: Claims = serde_json::from_slice(&B64.decode(parts[1]).expect("claims base64"))
        .expect("accepted claims decode");
    assert_eq!(&decoded, claims, "claims round-trip");
    assert!(
        claims.exp.saturating_add(LEEWAY) >= before,
        "expired token accepted"
    );
    assert!(
        grants_ok(claims),
        "bad tenant or grants accepted: {claims:?}"
    );
    let again = mint_hs256(claims, SECRET).expect("minting");
    assert_eq!(v.verify(&again).as_ref(), Ok(claims), "re-minted");
}

fuzz_target!(|input: Input| {
    static VERIFIER: std::sync::OnceLock<TokenVerifier> = std::sync::OnceLock::new();
    let v = VERIFIER.get_or_init(|| TokenVerifier::hs256(SECRET));
    let before = now();
    let token = match &input {
        Input::Raw(t) => t.clone(),
        Input::SignedText { header, claims } => signed(header, claims),
        Input::SignedJson { header, claims } => {
            signed(&object(header, before), &object(claims, before))
        }
        Input::Minted(m) => {
            let exp = match m.exp.value(before) {
                Value::Number(n) => n.as_u64(),
                _ => None,
            };
            let Some(exp) = exp else { return };
            let claims = Claims {
                sub: m.sub.clone(),
                exp,
                tenant: m.tenant.clone(),
                publish: m.publish.iter().map(Pattern::text).collect(),
                subscribe: m.subscribe.iter().map(Pattern::text).collect(),
            };
            let token = mint_hs256(&claims, SECRET).expect("minting");
            let got = v.verify(&token);
            // Clear of the expiry boundary, the outcome is known.
            if exp > before + 2 && grants_ok(&claims) {
                assert_eq!(got.as_ref(), Ok(&claims), "valid minted claims");
            }
            if exp.saturating_add(LEEWAY + 2) < before || !grants_ok(&claims) {
                assert!(got.is_err(), "accepted {claims:?}");
            }
            token
        }
    };
    if let Ok(claims) = v.verify(&token) {
        check_accepted(v, &token, &claims, before);
    }
});
