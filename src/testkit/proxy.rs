#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! A TCP proxy on loopback that can cut: every open connection closed and new ones closed as
//! they arrive, until it is restored (a database that goes away and comes back); or stall:
//! every connection kept open and nothing forwarded either way, as a database that hangs
//! (its host still acknowledges every byte), until it is restored as a restart (the held
//! connections are closed then).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Forward a free port of 127.0.0.1 to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        Proxy::start_on(0, upstream).await
    }

    /// Forward 127.0.0.1:`port` to `upstream` (a database that comes up where its clients
    /// were told to look).
    pub async fn start_on(port: u16, upstream: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = tokio::sync::watch::Sender::new(0u64);
        let stalled = tokio::sync::watch::Sender::new(false);
        let (c, g, st) = (cut.clone(), generation.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(down); // "gone": every connection is refused
                    continue;
                }
                let mut gen = g.subscribe();
                let mut stall = st.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = gen.changed() => {}
                        // "hung": held open, nothing forwarded, until the next cut or restore
                        _ = async { stall.wait_for(|s| *s).await.is_ok() } => {
                            let _ = gen.changed().await;
                        }
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            generation,
            stalled,
        }
    }

    /// Close every connection now and refuse new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forward nothing more on any connection, old or new, and close none, until
    /// [`Proxy::restore`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forward again; connections held by a stall are closed (the database restarted).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        if self.stalled.send_replace(false) {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}
