//! Console sign-in: server-side sessions, their cookie, CSRF tokens and the limit on
//! sign-in attempts.
//!
//! - Signing in with the admin token creates a session: a random 256-bit id sent once, in
//!   the cookie; the server keeps only its SHA-256, with an absolute expiry
//!   ([`SESSION_TTL`]) and a CSRF token of its own. Signing out forgets it at once.
//! - The cookie is `HttpOnly; SameSite=Strict; Path=<console>`, plus `Secure` when the
//!   server's public URL is https.
//! - Every form carries the CSRF token; a POST without the right one is refused (403)
//!   before anything runs. The sign-in form, which has no session yet, uses a
//!   double-submit token: a random value in a cookie of its own and in the form.
//! - Sign-in attempts are limited per client address (an IPv6 client per /64): a burst of
//!   [`SIGN_IN_BURST`], then one per [`SIGN_IN_PERIOD`], whatever the outcome, so a
//!   guessed token costs time.
//!
//! Sessions live in this process's memory (bounded to [`MAX_SESSIONS`]): a restart signs
//! every operator out, and each instance of a multi-instance deployment has its own.

use crate::ratelimit::ip_bucket;
use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "agentpmt_console";
/// Name of the sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "agentpmt_console_signin";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; past it the oldest is forgotten.
pub const MAX_SESSIONS: usize = 1000;
/// Sign-in attempts one address may make at once, then one per [`SIGN_IN_PERIOD`].
pub const SIGN_IN_BURST: u32 = 5;
/// The refill period of the sign-in limit.
pub const SIGN_IN_PERIOD: Duration = Duration::from_secs(12);

/// What the server knows of a signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every form of this session carries.
    pub csrf: String,
    created: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The console's sessions and sign-in limiter.
pub struct ConsoleSessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessions").finish_non_exhaustive()
    }
}

impl Default for ConsoleSessions {
    fn default() -> Self {
        let quota = Quota::with_period(SIGN_IN_PERIOD)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(SIGN_IN_BURST).expect("a non-zero burst"));
        ConsoleSessions {
            sessions: Mutex::new(HashMap::new()),
            sign_in: RateLimiter::keyed(quota),
        }
    }
}

/// A random 256-bit value, hex.
pub fn random_token() -> String {
    crate::accounts::random_hex(32)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl ConsoleSessions {
    /// Takes one sign-in attempt of `ip`; `Err(seconds to wait)` when it has none left.
    pub fn take_sign_in(&self, ip: IpAddr) -> Result<(), u64> {
        if self.sign_in.len() > crate::ratelimit::MAX_TRACKED_KEYS {
            self.sign_in.retain_recent();
        }
        self.sign_in.check_key(&ip_bucket(ip)).map_err(|not_until| {
            use governor::clock::{Clock, DefaultClock};
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }

    /// Starts a session; returns its id (for the cookie, never kept) and the session.
    pub fn create(&self) -> (String, Session) {
        let id = random_token();
        let session = Session {
            csrf: random_token(),
            created: Instant::now(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(digest(&id), session.clone());
        (id, session)
    }

    /// The live session whose id is `id`.
    pub fn find(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&key) {
            Some(s) if s.created.elapsed() < SESSION_TTL => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session whose id is `id` (if any).
    pub fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest(id));
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=<path>`, `Secure` when `secure`,
/// and `Max-Age` (0 clears the cookie).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_is_gone_after_removal() {
        let store = ConsoleSessions::default();
        let (id, session) = store.create();
        assert_eq!(store.find(&id).unwrap().csrf, session.csrf);
        assert!(store.find(&random_token()).is_none());
        // The map holds the digest, not the id.
        assert!(!store.sessions.lock().unwrap().contains_key(id.as_bytes()));
        store.remove(&id);
        assert!(store.find(&id).is_none());
    }

    #[test]
    fn the_store_is_bounded() {
        let store = ConsoleSessions::default();
        let (first, _) = store.create();
        for _ in 0..MAX_SESSIONS {
            store.create();
        }
        assert_eq!(store.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(
            store.find(&first).is_none(),
            "the oldest session was dropped"
        );
    }

    #[test]
    fn sign_in_attempts_run_out_per_address() {
        let store = ConsoleSessions::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..SIGN_IN_BURST {
            store.take_sign_in(ip).unwrap();
        }
        assert!(store.take_sign_in(ip).unwrap_err() >= 1);
        store.take_sign_in("192.0.2.8".parse().unwrap()).unwrap();
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "x_agentpmt_console=1; agentpmt_console=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, SIGN_IN_COOKIE), None);
    }
}
