//! The audit trail: events are queued by requests and written in batches by one background
//! task, so a request never waits for an extra durable commit; `flush` drains the queue
//! (used at shutdown).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::domain::audit::AuditEvent;
use crate::domain::email::mask;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::Store;

/// Who made a request: for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_ip: String,
    pub request_id: String,
}

enum Msg {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// The queue into the audit writer. Cloning shares it.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
}

const BATCH: usize = 512;
/// How long the first event of a batch waits for others.
const GATHER: Duration = Duration::from_millis(20);

impl Audit {
    /// Start the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Audit {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(writer(store, rx));
        Audit { tx }
    }

    /// Queue one event; the recipient is masked here, before it goes anywhere.
    pub fn record(
        &self,
        tenant: &TenantId,
        at: Millis,
        event: &str,
        recipient: &str,
        outcome: &str,
        ctx: &RequestContext,
    ) {
        let e = AuditEvent {
            id: 0,
            tenant_id: tenant.as_str().to_string(),
            at,
            event: event.to_string(),
            recipient: if recipient.is_empty() {
                String::new()
            } else {
                mask(recipient)
            },
            outcome: outcome.to_string(),
            client_ip: ctx.client_ip.clone(),
            request_id: ctx.request_id.clone(),
        };
        if let Err(mpsc::error::TrySendError::Full(Msg::Event(e))) = self.tx.try_send(Msg::Event(e))
        {
            // The writer is behind: wait for room rather than lose the event.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Msg::Event(e)).await;
            });
        }
    }

    /// Write everything queued so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let a batch gather for a moment, then take what is queued: one wake-up of this
        // task per batch, not one per event (each was a thread switch on a busy server).
        if !matches!(first, Msg::Flush(_)) {
            tokio::time::sleep(GATHER).await;
        }
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Event(e) => {
                    batch.push(e);
                    if batch.len() >= BATCH {
                        write(&store, &mut batch).await;
                    }
                }
                // Everything queued before a flush is in `batch`: write it and answer.
                Msg::Flush(w) => {
                    waiters.push(w);
                    break;
                }
            }
        }
        write(&store, &mut batch).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Append what is in `batch` (one transaction) and empty it.
async fn write(store: &Arc<dyn Store>, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    let events = std::mem::take(batch);
    let st = Arc::clone(store);
    match tokio::task::spawn_blocking(move || st.append_audit(&events)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "audit write failed"),
        Err(e) => tracing::error!(error = %e, "audit writer task failed"),
    }
}

impl super::Services {
    /// A page of the tenant's own events, newest first (events still buffered are written
    /// first, so a caller sees its own latest requests). `limit`: 1–200.
    pub async fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, super::ServiceError> {
        if !(1..=200).contains(&limit) {
            return Err(super::ServiceError::field(
                "limit",
                "must be between 1 and 200",
            ));
        }
        self.audit.flush().await;
        let tid = tenant.clone();
        self.db(move |s| s.audit_page(&tid, before, limit)).await
    }

    /// Ready means writes succeed (a read can answer while the database is locked or full),
    /// within 3 seconds.
    pub async fn ready(&self) -> Result<(), super::ServiceError> {
        let probe = self.db(|s| {
            s.ping()?;
            s.write_probe()
        });
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(r) => r,
            Err(_) => Err(super::ServiceError::Unavailable(
                "no write completed within 3 s".into(),
            )),
        }
    }
}
