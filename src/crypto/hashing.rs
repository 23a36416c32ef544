//! Codes hashed with the pepper: argon2id on a bounded pool of dedicated threads that reuse
//! their memory blocks (a full queue is reported as overload instead of waiting), or a keyed
//! HMAC-SHA256 computed in place (API.md §19.1). The stored form names its algorithm, so
//! codes made under either verify after `hashing.algorithm` changes.
//!
//! The pool is shared fairly between tenants: its threads take jobs tenant by tenant in
//! turn, and a tenant may fill the places `hashing.max_queue` sets (threads + queue) while
//! a quarter more are kept for the others, so one tenant's flood of mints or guesses neither
//! makes another's wait behind its whole queue nor leaves it no place (found by the
//! noisy-neighbour audit: multi-second mints and 503 `overloaded` for a tenant sending one
//! code while another flooded). A lone tenant keeps every place it had.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use argon2::password_hash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use rand::{rngs::OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::{HashAlgorithm, HashingSettings};

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;
const LEGACY_PREFIX: &str = "otpmint-sha256$";
/// The stored form of a keyed HMAC: `$hmac-sha256$v=1$<salt>$<mac>` (unpadded base64).
const HMAC_PREFIX: &str = "$hmac-sha256$v=1$";
/// HKDF's info for the HMAC key: its own label, so the key is used for nothing else.
const HMAC_KEY_LABEL: &[u8] = b"otpmint code hmac-sha256 v1";

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the hashing queue is full")]
    Overloaded,
    #[error("hashing failed: {0}")]
    Internal(String),
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing pool. Cloning shares it.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

/// The jobs waiting for a hashing thread, by tenant, and the tenants' turns.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: HashMap<Arc<str>, VecDeque<Job>>,
    /// Tenants with jobs waiting, in the order their next job is taken.
    turns: VecDeque<Arc<str>>,
    /// The pool is gone: its threads end.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Queues and turns, consistent after every statement.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, tenant: Arc<str>, job: Job) {
        let mut s = self.lock();
        if s.jobs.get(&tenant).is_none_or(VecDeque::is_empty) {
            s.turns.push_back(Arc::clone(&tenant));
        }
        s.jobs.entry(tenant).or_default().push_back(job);
        drop(s);
        self.ready.notify_one();
    }

    /// The next job, of the tenant whose turn it is; `None` once the pool is gone.
    fn next(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(tenant) = s.turns.pop_front() {
                let (job, more) = match s.jobs.get_mut(&tenant) {
                    Some(q) => (q.pop_front(), !q.is_empty()),
                    None => (None, false),
                };
                if more {
                    s.turns.push_back(tenant);
                } else {
                    s.jobs.remove(&tenant);
                }
                if let Some(job) = job {
                    return Some(job);
                }
                continue;
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

struct Inner {
    queue: Arc<Queue>,
    params: Params,
    pepper: Arc<[u8]>,
    algorithm: HashAlgorithm,
    /// HKDF-SHA256 of the pepper under [`HMAC_KEY_LABEL`].
    hmac_key: [u8; 32],
    waiting: AtomicUsize,
    /// Jobs admitted and not finished; never above `capacity`.
    inflight: AtomicUsize,
    capacity: usize,
    /// Jobs admitted and not finished, by tenant; none above `per_tenant`.
    held: Mutex<HashMap<Arc<str>, usize>>,
    /// The places one tenant may fill: threads + queue; `capacity` has a quarter more, for
    /// the others.
    per_tenant: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Admission to the hashing pool, taken before any state changes (e.g. before an attempt is
/// reserved), so that overload is refused up front. Released when its job finishes.
pub struct HashSlot {
    inner: Arc<Inner>,
    tenant: Arc<str>,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
        self.inner.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hasher {
    pub fn new(
        settings: &HashingSettings,
        threads: usize,
        pepper: &[u8],
    ) -> Result<Hasher, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|e| HashError::Internal(e.to_string()))?;
        let threads = threads.max(1);
        let queue = if settings.max_queue == 0 {
            threads * 64
        } else {
            settings.max_queue
        };
        let per_tenant = threads + queue;
        let capacity = per_tenant + (per_tenant / 4).max(1);
        let hmac_key = hmac_key_of(pepper)?;
        // Admission (slots) bounds the work; the queue holds everything admitted.
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let worker_queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("otpmint-hash-{i}"))
                .spawn(move || worker(&worker_queue));
            if let Err(e) = spawned {
                // The threads started end: no pool will ever hand them a job.
                queue.close();
                return Err(HashError::Internal(e.to_string()));
            }
        }
        Ok(Hasher {
            inner: Arc::new(Inner {
                queue,
                params,
                pepper: Arc::from(pepper),
                algorithm: settings.algorithm,
                hmac_key,
                waiting: AtomicUsize::new(0),
                inflight: AtomicUsize::new(0),
                capacity,
                held: Mutex::new(HashMap::new()),
                per_tenant,
            }),
        })
    }

    /// Jobs queued and not yet started.
    pub fn queue_depth(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Admission to the pool for work of no tenant's (an import, a test), as
    /// [`Hasher::slot_for`].
    pub fn slot(&self) -> Result<HashSlot, HashError> {
        self.slot_for("")
    }

    /// Admission to the pool for `tenant`'s work, or `Overloaded` when running + queued jobs
    /// are at capacity, or the tenant's own at its share of it.
    pub fn slot_for(&self, tenant: &str) -> Result<HashSlot, HashError> {
        let inner = &self.inner;
        let mut held = inner.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(tenant).copied().unwrap_or(0);
        if mine >= inner.per_tenant || inner.inflight.load(Ordering::Acquire) >= inner.capacity {
            return Err(HashError::Overloaded);
        }
        inner.inflight.fetch_add(1, Ordering::AcqRel);
        let tenant: Arc<str> = Arc::from(tenant);
        *held.entry(Arc::clone(&tenant)).or_default() += 1;
        Ok(HashSlot {
            inner: Arc::clone(inner),
            tenant,
        })
    }

    /// Hash a code with a fresh salt; returns the PHC string.
    pub async fn hash(&self, code: &str) -> Result<String, HashError> {
        self.hash_in(self.slot()?, code).await
    }

    /// [`Hasher::hash`] in a place already taken (a tenant's: [`Hasher::slot_for`]).
    pub async fn hash_in(&self, slot: HashSlot, code: &str) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        if self.inner.algorithm == HashAlgorithm::HmacSha256 {
            return self.keyed(&salt, code);
        }
        self.argon2(slot, self.inner.params.clone(), salt.to_vec(), code)
            .await
    }

    /// Hash a code with the salt and parameters of a stored PHC string: the codes of one
    /// key share them, so a guess is hashed once however many codes the key has (API.md
    /// §13.3).
    pub async fn hash_like(&self, code: &str, phc: &str) -> Result<String, HashError> {
        self.hash_like_in(self.slot()?, code, phc).await
    }

    /// [`Hasher::hash_like`] in a place already taken (a tenant's: [`Hasher::slot_for`]).
    pub async fn hash_like_in(
        &self,
        slot: HashSlot,
        code: &str,
        phc: &str,
    ) -> Result<String, HashError> {
        if let Some((salt, _)) = parse_hmac(phc)? {
            return self.keyed(&salt, code);
        }
        let (params, salt, _) = parse_phc(phc)?;
        self.argon2(slot, params, salt, code).await
    }

    /// The keyed HMAC of a code with `salt`, as stored.
    fn keyed(&self, salt: &[u8], code: &str) -> Result<String, HashError> {
        Ok(hmac_string(salt, &hmac(&self.inner.hmac_key, salt, code)?))
    }

    /// Argon2id of a code with the pepper, `params` and `salt`, on the hashing pool; the PHC
    /// string.
    async fn argon2(
        &self,
        slot: HashSlot,
        params: Params,
        salt: Vec<u8>,
        code: &str,
    ) -> Result<String, HashError> {
        let pepper = Arc::clone(&self.inner.pepper);
        let code = SecretString::from(code.to_string());
        self.run(slot, move |mem| {
            let out = compute(&pepper, &params, code.expose_secret(), &salt, mem)?;
            phc_string(&params, &salt, &out)
        })
        .await
    }

    /// Wrap an imported OtpMint hash (`sha256(salt + code)` as hex): the configured algorithm
    /// with the pepper over that hex, so a leaked database still needs the pepper. Verified by [`Hasher::verify_stored`].
    pub async fn wrap_legacy_sha256(&self, salt: &str, hex: &str) -> Result<String, HashError> {
        let phc = self.hash(hex).await?;
        Ok(format!("{LEGACY_PREFIX}{}{phc}", B64.encode(salt)))
    }

    /// Verify a code against whatever is stored: a native PHC string or a wrapped legacy hash.
    pub async fn verify_stored(
        &self,
        slot: HashSlot,
        code: &str,
        stored: &str,
    ) -> Result<bool, HashError> {
        self.verify_any(slot, code, &[stored.to_string()]).await
    }

    /// Whether a code matches any of a key's stored hashes, in one job of the pool (in place
    /// when all of them are HMACs). Every hash is compared, whichever matches; hashes that
    /// share their input, parameters and salt (a key's resent codes) cost one computation
    /// together.
    pub async fn verify_any(
        &self,
        slot: HashSlot,
        code: &str,
        stored: &[String],
    ) -> Result<bool, HashError> {
        let mut checks = Vec::with_capacity(stored.len());
        for s in stored {
            checks.push(check_of(code, s)?);
        }
        let pepper = Arc::clone(&self.inner.pepper);
        let key = self.inner.hmac_key;
        if checks.iter().all(|c| c.params.is_none()) {
            drop(slot);
            let mut none = Vec::new();
            return compare(&pepper, &key, &checks, &mut none);
        }
        self.run(slot, move |mem| compare(&pepper, &key, &checks, mem))
            .await
    }

    async fn run<T: Send + 'static>(
        &self,
        slot: HashSlot,
        f: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let slot_tenant = Arc::clone(&slot.tenant);
        let span = tracing::Span::current();
        let job: Job = Box::new(move |mem| {
            let _span = span.entered();
            let _slot = slot;
            inner.waiting.fetch_sub(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let out = f(mem);
            if let Some(m) = crate::metrics::get() {
                m.hashing_seconds.observe(started.elapsed().as_secs_f64());
            }
            let _ = done_tx.send(out);
        });
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let tenant = Arc::clone(&slot_tenant);
        self.inner.queue.push(tenant, job);
        done_rx
            .await
            .map_err(|_| HashError::Internal("hash worker dropped the job".into()))?
    }
}

/// Whether the code matches any of the checks; every one is compared in constant time.
fn compare(
    pepper: &[u8],
    hmac_key: &[u8; 32],
    checks: &[Check],
    mem: &mut Vec<Block>,
) -> Result<bool, HashError> {
    let mut done: Vec<(&Check, [u8; OUTPUT_LEN])> = Vec::with_capacity(checks.len());
    let mut matched = subtle::Choice::from(0);
    for c in checks {
        let known = done.iter().find(|(d, _)| d.same_input(c)).map(|(_, o)| *o);
        let out = match (known, &c.params) {
            (Some(o), _) => o,
            (None, Some(params)) => compute(pepper, params, c.input.expose_secret(), &c.salt, mem)?,
            (None, None) => hmac(hmac_key, &c.salt, c.input.expose_secret())?,
        };
        matched |= out.as_slice().ct_eq(c.expected.as_slice());
        done.push((c, out));
    }
    Ok(bool::from(matched))
}

/// One stored hash to compare a code with: what is computed over (the code, or for a
/// wrapped legacy hash the hex of its SHA-256), with which algorithm (argon2id's parameters,
/// or `None` for HMAC-SHA256) and salt.
struct Check {
    input: SecretString,
    params: Option<Params>,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl Check {
    fn same_input(&self, o: &Check) -> bool {
        let same_params = match (&self.params, &o.params) {
            (Some(a), Some(b)) => {
                a.m_cost() == b.m_cost() && a.t_cost() == b.t_cost() && a.p_cost() == b.p_cost()
            }
            (None, None) => true,
            _ => false,
        };
        self.salt == o.salt && same_params && self.input.expose_secret() == o.input.expose_secret()
    }
}

fn check_of(code: &str, stored: &str) -> Result<Check, HashError> {
    let (input, phc) = match stored.strip_prefix(LEGACY_PREFIX) {
        None => (code.to_string(), stored.to_string()),
        Some(rest) => {
            let (salt, phc) = rest
                .split_once('$')
                .ok_or_else(|| HashError::Internal("stored hash is malformed".into()))?;
            let salt = B64
                .decode(salt)
                .map_err(|_| HashError::Internal("stored hash is malformed".into()))?;
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(&salt);
            h.update(code.as_bytes());
            (hex::encode(h.finalize()), format!("${phc}"))
        }
    };
    if let Some((salt, expected)) = parse_hmac(&phc)? {
        return Ok(Check {
            input: SecretString::from(input),
            params: None,
            salt,
            expected,
        });
    }
    let (params, salt, expected) = parse_phc(&phc)?;
    Ok(Check {
        input: SecretString::from(input),
        params: Some(params),
        salt,
        expected,
    })
}

/// The HMAC key: HKDF-SHA256 of the pepper with its own label.
fn hmac_key_of(pepper: &[u8]) -> Result<[u8; 32], HashError> {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, pepper)
        .expand(HMAC_KEY_LABEL, &mut key)
        .map_err(|e| HashError::Internal(e.to_string()))?;
    Ok(key)
}

/// HMAC-SHA256 over the salt and the code.
fn hmac(key: &[u8; 32], salt: &[u8], code: &str) -> Result<[u8; OUTPUT_LEN], HashError> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .map_err(|e| HashError::Internal(e.to_string()))?;
    mac.update(salt);
    mac.update(code.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

fn hmac_string(salt: &[u8], mac: &[u8]) -> String {
    format!("{HMAC_PREFIX}{}${}", B64.encode(salt), B64.encode(mac))
}

/// A stored HMAC's salt and MAC.
type SaltAndMac = (Vec<u8>, Vec<u8>);

/// Salt and MAC of a stored HMAC form; `None` when the string is of another algorithm.
fn parse_hmac(stored: &str) -> Result<Option<SaltAndMac>, HashError> {
    let Some(rest) = stored.strip_prefix(HMAC_PREFIX) else {
        return Ok(None);
    };
    let bad = || HashError::Internal("stored hash is malformed".into());
    let (salt, mac) = rest.split_once('$').ok_or_else(bad)?;
    let salt = B64.decode(salt).map_err(|_| bad())?;
    let mac = B64.decode(mac).map_err(|_| bad())?;
    if salt.len() != SALT_LEN || mac.len() != OUTPUT_LEN {
        return Err(bad());
    }
    Ok(Some((salt, mac)))
}

fn worker(queue: &Queue) {
    let mut memory: Vec<Block> = Vec::new();
    while let Some(job) = queue.next() {
        job(&mut memory);
    }
}

fn compute(
    pepper: &[u8],
    params: &Params,
    code: &str,
    salt: &[u8],
    memory: &mut Vec<Block>,
) -> Result<[u8; OUTPUT_LEN], HashError> {
    let argon =
        Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params.clone())
            .map_err(|e| HashError::Internal(e.to_string()))?;
    let blocks = params.block_count();
    if memory.len() != blocks {
        memory.clear();
        memory.resize(blocks, Block::default());
    }
    let mut out = [0u8; OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(code.as_bytes(), salt, &mut out, memory.as_mut_slice())
        .map_err(|e| HashError::Internal(e.to_string()))?;
    Ok(out)
}

/// The PHC string of a hash (password-hash's encoding: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
fn phc_string(params: &Params, salt: &[u8], out: &[u8]) -> Result<String, HashError> {
    let err = |e: password_hash::Error| HashError::Internal(e.to_string());
    let salt = password_hash::SaltString::encode_b64(salt).map_err(err)?;
    let hash = password_hash::PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: password_hash::ParamsString::try_from(params).map_err(err)?,
        salt: Some(salt.as_salt()),
        hash: Some(password_hash::Output::new(out).map_err(err)?),
    };
    Ok(hash.to_string())
}

/// Parameters, salt and hash of a stored PHC string (argon2id, version 19 only).
fn parse_phc(phc: &str) -> Result<(Params, Vec<u8>, Vec<u8>), HashError> {
    let bad = |_| HashError::Internal("stored hash is malformed".into());
    let h = password_hash::PasswordHash::new(phc).map_err(bad)?;
    if h.algorithm != argon2::ARGON2ID_IDENT || h.version != Some(Version::V0x13.into()) {
        return Err(bad(password_hash::Error::Algorithm));
    }
    let params = Params::try_from(&h).map_err(bad)?;
    let mut buf = [0u8; password_hash::Salt::MAX_LENGTH];
    let salt = h
        .salt
        .ok_or(password_hash::Error::SaltInvalid(
            password_hash::errors::InvalidValue::Malformed,
        ))
        .and_then(|s| s.decode_b64(&mut buf).map(<[u8]>::to_vec))
        .map_err(bad)?;
    let hash = h
        .hash
        .ok_or(password_hash::Error::OutputSize {
            provided: std::cmp::Ordering::Less,
            expected: OUTPUT_LEN,
        })
        .map_err(bad)?
        .as_bytes()
        .to_vec();
    Ok((params, salt, hash))
}

#[cfg(test)]
#[path = "hashing_tests.rs"]
mod tests;
