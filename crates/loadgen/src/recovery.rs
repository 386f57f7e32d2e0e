//! The yardstick: how many signatures one core recovers per second in this process, on
//! this machine, in this run. Every signed request costs the server one recovery, so
//! (end-to-end requests/s) ÷ (single-core recoveries/s) says how close the server gets to
//! the cryptographic floor.

use agentpmt_protocol::{build_message, PrivateKey, Scope, Signature};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Distinct (message, signature) pairs cycled through.
const PAIRS: usize = 2_000;

/// Balance-request messages, as the server rebuilds them, with their signatures.
pub fn sample_pairs(count: usize) -> Vec<(String, Signature)> {
    let keys: Vec<PrivateKey> = (0..16).map(|_| PrivateKey::random()).collect();
    (0..count)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let nonce = format!("{:064x}", i * 7919 + 1);
            let message = build_message(
                &key.address(),
                &nonce,
                &format!("lg-{i}"),
                &Scope::action("balance", "-"),
                None,
            );
            let signature = key.sign_message(&message);
            (message, signature)
        })
        .collect()
}

/// Recoveries per second of `Signature::recover_message` (EIP-191 hash, public-key
/// recovery, address derivation: what the server does per request) on the calling thread,
/// measured for at least `duration`. Signing the samples is not timed.
pub fn recoveries_per_sec(duration: Duration) -> f64 {
    let pairs = sample_pairs(PAIRS);
    let mut done = 0u64;
    let start = Instant::now();
    loop {
        for (message, signature) in &pairs {
            let _ = black_box(black_box(signature).recover_message(black_box(message)));
            done += 1;
            if done.is_multiple_of(128) && start.elapsed() >= duration {
                return done as f64 / start.elapsed().as_secs_f64();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_recover_and_the_rate_is_positive() {
        for (message, signature) in sample_pairs(4) {
            assert!(signature.recover_message(&message).is_ok());
        }
        assert!(recoveries_per_sec(Duration::from_millis(20)) > 0.0);
    }
}
