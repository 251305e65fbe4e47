//! Signature checks of tokens not seen before, done back to back.
//!
//! Checking a signature is the one expensive step of verifying a new token: tens of
//! microseconds of big-number arithmetic over the key and its tables. Interleaved with proxy
//! work (parse a request, check a signature, forward, parse the next …) each evicts the
//! other's code and data from the core's caches, and both run slower. So a task whose token
//! needs a signature check queues it on its worker thread's open batch and waits; the batch's
//! own task lets the worker run its other ready tasks first (which queue theirs), then checks
//! the whole batch in one go and wakes each waiting task with its own result.
//!
//! With every RS256 token new, this took the gateway's CPU time a request from 95 to 82 µs
//! (`benches/load/ab.py`, build against build; `benches/load/FINDINGS.md`), with cached
//! tokens unchanged. The price is that the first checks of a batch wait for the later ones
//! before their requests go on, which `MOST_IN_A_ROW` bounds.

use std::cell::{Cell, RefCell};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jsonwebtoken::Algorithm;
use tokio::sync::oneshot;

use super::keys::KeySet;
use super::verify::verify_signature;

/// One signature to check, and where its answer goes.
struct Check {
    keys: Arc<KeySet>,
    kid: Option<Arc<str>>,
    alg: Algorithm,
    /// `header.payload.signature`; the first `message` bytes are what the signature covers.
    token: Box<[u8]>,
    message: usize,
    answer: oneshot::Sender<Option<u64>>,
}

impl Check {
    fn run(self) {
        // Its request is gone (the client left): no one is waiting for the answer.
        if self.answer.is_closed() {
            return;
        }
        let fingerprint = check_now(
            &self.keys,
            self.kid.as_deref(),
            self.alg,
            &self.token,
            self.message,
        );
        let _ = self.answer.send(fingerprint);
    }
}

/// The check itself, here and now.
fn check_now(
    keys: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
    token: &[u8],
    message: usize,
) -> Option<u64> {
    verify_signature(keys, kid, alg, &token[..message], &token[message + 1..])
}

/// Checks queued on one worker thread since its batch task was spawned.
struct Batch {
    state: Mutex<State>,
}

enum State {
    Open(Vec<Check>),
    /// The batch's task has taken its checks, this many: the next check opens a new batch.
    Taken(usize),
}

/// Checks a batch runs before it lets the tasks it has answered go on: at most about 1.2 ms
/// of ES256 checks (0.35 ms of RS256) between a request's check and its forwarding.
const MOST_IN_A_ROW: usize = 16;

/// A thread whose batches find no company checks in place, opening a batch again only for
/// one check in this many to see whether others have come.
const PROBE_EVERY: u32 = 8;

thread_local! {
    /// This thread's latest batch, open or taken.
    static LATEST: RefCell<Option<Arc<Batch>>> = const { RefCell::new(None) };
    /// Checks since this thread last opened a batch, while its batches go alone.
    static ALONE: Cell<u32> = const { Cell::new(0) };
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>) {
        // Behind the worker's other ready tasks and what the I/O driver has for it next: their
        // checks join this batch meanwhile.
        tokio::task::yield_now().await;
        let checks = {
            let mut state = self.lock();
            let State::Open(checks) = mem::replace(&mut *state, State::Taken(0)) else {
                return;
            };
            *state = State::Taken(checks.len());
            checks
        };
        for (done, check) in checks.into_iter().enumerate() {
            // A long batch lets the tasks it has answered go on now and then, so that the
            // first in it do not wait for the last.
            if done > 0 && done.is_multiple_of(MOST_IN_A_ROW) {
                tokio::task::yield_now().await;
            }
            check.run();
        }
    }
}

/// Queues the check `make` gives on this thread's open batch, or opens a batch when that is
/// worth it; `None` when the check is better done in place: a batch would hold only it, or
/// there is no runtime to run one.
fn place(
    make: impl FnOnce() -> (Check, oneshot::Receiver<Option<u64>>),
) -> Option<oneshot::Receiver<Option<u64>>> {
    LATEST.with_borrow_mut(|latest| {
        if let Some(batch) = latest {
            let alive = Arc::strong_count(batch) > 1;
            match &mut *batch.lock() {
                // Its task went unrun with the runtime it was spawned on: a new batch takes over.
                State::Open(_) if !alive => {}
                State::Open(checks) => {
                    let (check, answered) = make();
                    checks.push(check);
                    return Some(answered);
                }
                State::Taken(1) => {
                    let alone = ALONE.get() + 1;
                    ALONE.set(alone);
                    if !alone.is_multiple_of(PROBE_EVERY) {
                        return None;
                    }
                }
                State::Taken(_) => ALONE.set(0),
            }
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (check, answered) = make();
        let batch = Arc::new(Batch {
            state: Mutex::new(State::Open(vec![check])),
        });
        *latest = Some(batch.clone());
        runtime.spawn(batch.run());
        Some(answered)
    })
}

/// Checks the signature of `token`, whose first `message` bytes are `header.payload`, with the
/// candidate keys for `kid` and `alg`; the fingerprint of the key that verified it.
pub async fn check(
    keys: &Arc<KeySet>,
    kid: Option<&Arc<str>>,
    alg: Algorithm,
    token: &[u8],
    message: usize,
) -> Option<u64> {
    let in_place = || check_now(keys, kid.map(|k| &**k), alg, token, message);
    let make = || {
        let (answer, answered) = oneshot::channel();
        let check = Check {
            keys: keys.clone(),
            kid: kid.cloned(),
            alg,
            token: Box::from(token),
            message,
            answer,
        };
        (check, answered)
    };
    match place(make) {
        None => in_place(),
        Some(answered) => match answered.await {
            Ok(fingerprint) => fingerprint,
            // The batch's task was dropped before it ran (the runtime is shutting down).
            Err(_) => in_place(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use crate::auth::keys::KeySet;

    /// An ES256 key set of one key, a signer for it, and its `kid`.
    fn key() -> (Arc<KeySet>, EcdsaKeyPair, Arc<str>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let keys = KeySet::parse(jwk.to_string().as_bytes()).unwrap();
        (Arc::new(keys), pair, Arc::from("k1"))
    }

    /// A token-shaped string signed by `pair`, with its garbled twin when `good` is false.
    fn token(pair: &EcdsaKeyPair, n: usize, good: bool) -> (Vec<u8>, usize) {
        let message = format!(
            "eyJhbGciOiJFUzI1NiJ9.{}",
            URL_SAFE_NO_PAD.encode(n.to_string())
        );
        let rng = SystemRandom::new();
        let mut signature = pair
            .sign(&rng, message.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        if !good {
            let at = n % signature.len();
            signature[at] ^= 1;
        }
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature));
        (token.into_bytes(), message.len())
    }

    /// Many checks in flight at once, good and bad mixed, on a runtime of several workers:
    /// each gets its own answer, never a neighbour's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_check_of_a_batch_gets_its_own_answer() {
        let (keys, pair, kid) = key();
        let fingerprint = keys.keys[0].fingerprint;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..200 {
            let (keys, kid) = (keys.clone(), kid.clone());
            let (token, message) = token(&pair, n, n % 3 != 0);
            tasks.spawn(async move {
                let got = check(&keys, Some(&kid), Algorithm::ES256, &token, message).await;
                (n, got)
            });
        }
        let mut seen = 0;
        while let Some(result) = tasks.join_next().await {
            let (n, got) = result.unwrap();
            let expected = (n % 3 != 0).then_some(fingerprint);
            assert_eq!(got, expected, "check {n}");
            seen += 1;
        }
        assert_eq!(seen, 200);
    }

    /// A waiter that gives up (its client left) takes nothing down with it: the checks queued
    /// beside it are answered, and later ones open a new batch.
    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_others_answered() {
        let (keys, pair, kid) = key();
        let fingerprint = keys.keys[0].fingerprint;
        let (abandoned, message) = token(&pair, 1, true);
        let waiter = {
            let (keys, kid) = (keys.clone(), kid.clone());
            tokio::spawn(async move {
                check(&keys, Some(&kid), Algorithm::ES256, &abandoned, message).await
            })
        };
        // The waiter queues its check and waits; then its request goes away.
        tokio::task::yield_now().await;
        waiter.abort();
        let (kept, message) = token(&pair, 2, true);
        let got = check(&keys, Some(&kid), Algorithm::ES256, &kept, message).await;
        assert_eq!(got, Some(fingerprint));
        assert!(waiter.await.unwrap_err().is_cancelled());
        // A later check, with the batch above long finished.
        let (later, message) = token(&pair, 3, false);
        let got = check(&keys, Some(&kid), Algorithm::ES256, &later, message).await;
        assert_eq!(got, None);
    }

    /// On a thread whose batches find no company, seven checks in eight run in place (ready at
    /// their first poll) and the eighth opens a batch to see whether others have come.
    #[tokio::test]
    async fn checks_that_come_one_at_a_time_mostly_run_in_place() {
        let (keys, pair, kid) = key();
        let fingerprint = Some(keys.keys[0].fingerprint);
        let tokens: Vec<(Vec<u8>, usize)> = (10..27).map(|n| token(&pair, n, true)).collect();
        // The first opens a batch, which holds only it.
        let (first, message) = &tokens[0];
        let got = check(&keys, Some(&kid), Algorithm::ES256, first, *message).await;
        assert_eq!(got, fingerprint);
        let mut in_place = Vec::new();
        for (token, message) in &tokens[1..] {
            let mut checking = pin!(check(&keys, Some(&kid), Algorithm::ES256, token, *message));
            let first_poll =
                std::future::poll_fn(|cx| Poll::Ready(checking.as_mut().poll(cx))).await;
            in_place.push(first_poll.is_ready());
            let got = match first_poll {
                Poll::Ready(got) => got,
                Poll::Pending => checking.await,
            };
            assert_eq!(got, fingerprint);
        }
        let one_in_eight = [true, true, true, true, true, true, true, false];
        assert_eq!(in_place, one_in_eight.repeat(2));
    }

    /// A batch whose task never ran (its runtime shut down first) does not swallow the checks of
    /// the next runtime on the same thread.
    #[test]
    fn a_batch_left_behind_by_a_finished_runtime_is_not_joined() {
        let (keys, pair, kid) = key();
        let (first, message) = token(&pair, 5, true);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        runtime().block_on(async {
            // Queued (a batch opened, its task spawned), then left without being awaited.
            let mut checking = pin!(check(&keys, Some(&kid), Algorithm::ES256, &first, message));
            let polled = std::future::poll_fn(|cx| Poll::Ready(checking.as_mut().poll(cx))).await;
            assert_eq!(polled, Poll::Pending);
        });
        let (second, message) = token(&pair, 6, true);
        let got = runtime().block_on(async {
            let checking = check(&keys, Some(&kid), Algorithm::ES256, &second, message);
            tokio::time::timeout(std::time::Duration::from_secs(10), checking).await
        });
        assert_eq!(got, Ok(Some(keys.keys[0].fingerprint)));
    }

    /// Outside any runtime the check runs in place.
    #[test]
    fn without_a_runtime_the_check_runs_in_place() {
        let (keys, pair, kid) = key();
        let (good, message) = token(&pair, 4, true);
        let checking = pin!(check(&keys, Some(&kid), Algorithm::ES256, &good, message));
        let got = checking.poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(got, Poll::Ready(Some(keys.keys[0].fingerprint)));
    }
}
