//! One kept session's task: reset, then wait for a taker or a reason to close.

use super::reset::{self, ResetError};
use super::{set_parameter, Inner, ReuseKey, ReuseSettings, SessionToKeep};
use crate::backend::{still_open, UpstreamStream};
use crate::net::messages::Terminate;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

/// Time allowed to log out of a session being closed.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);

/// A session handed to a keeper, and how the pool reaches it.
pub(super) struct Kept {
    pub inner: Arc<Inner>,
    pub settings: Arc<ReuseSettings>,
    pub key: ReuseKey,
    pub id: u64,
    pub session: SessionToKeep,
    /// Run the reset first (a session a client used); a fresh login needs none.
    pub reset: bool,
    pub requests: mpsc::Receiver<oneshot::Sender<SessionToKeep>>,
    pub reset_done: Arc<AtomicBool>,
}

/// What ends a kept session's wait.
enum Event {
    Taken(oneshot::Sender<SessionToKeep>),
    /// The pool is gone or stopped.
    Stopped,
    Timeout,
    /// The server closed the connection or sent something unasked.
    UpstreamClosed,
}

pub(super) async fn keep(kept: Kept) {
    let Kept {
        inner,
        settings,
        key,
        id,
        mut session,
        reset,
        mut requests,
        reset_done,
    } = kept;
    let statements = std::mem::take(&mut session.statements);
    let reset = match reset {
        false => Ok(Vec::new()),
        true => tokio::time::timeout(
            settings.reset_timeout,
            reset::run(&mut session.upstream, &statements, &settings.reset),
        )
        .await
        .unwrap_or_else(|_| Err(ResetError::Protocol("the reset timed out".into()))),
    };
    match reset {
        Ok(reported) => {
            for (name, value) in reported {
                set_parameter(&mut session.parameters, name, value);
            }
        }
        Err(e) => {
            debug!(db_user = %key.db_user, error = %e, "kept session closed: its reset failed");
            inner.remove(&key, id);
            inner.count(|c| c.closed(e.reason()));
            say_goodbye(session.upstream).await;
            return;
        }
    }
    reset_done.store(true, Ordering::SeqCst);
    let idle_until = Instant::now() + settings.idle_timeout;
    let too_old_at = Instant::from_std(session.logged_in_at + settings.max_age);
    let mut stopped = inner.stopped.subscribe();
    let event = tokio::select! {
        request = requests.recv() => request.map_or(Event::Stopped, Event::Taken),
        _ = stopped.wait_for(|stop| *stop) => Event::Stopped,
        _ = tokio::time::sleep_until(idle_until.min(too_old_at)) => Event::Timeout,
        _ = std::future::poll_fn(|cx| {
            if still_open(&mut session.upstream, cx) {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        }) => Event::UpstreamClosed,
    };
    let why = match event {
        Event::Taken(reply) => match reply.send(session) {
            Ok(()) => return,
            // The client that asked went away meanwhile.
            Err(session) => return close(&inner, "abandoned", session.upstream).await,
        },
        Event::Stopped => "stopped",
        Event::Timeout if Instant::now() >= too_old_at => "max_age",
        Event::Timeout => "idle_timeout",
        Event::UpstreamClosed => "upstream_closed",
    };
    inner.remove(&key, id);
    close(&inner, why, session.upstream).await;
}

async fn close(inner: &Inner, why: &'static str, upstream: UpstreamStream) {
    inner.count(|c| c.closed(why));
    say_goodbye(upstream).await;
}

/// Terminate and TLS close_notify: the server ends the session as a clean logout.
pub(super) async fn say_goodbye(mut upstream: UpstreamStream) {
    let _ = tokio::time::timeout(GOODBYE_GRACE, async {
        upstream.write_all(&Terminate::WIRE).await?;
        upstream.shutdown().await
    })
    .await;
}

/// [`say_goodbye`] in the background.
pub(super) fn say_goodbye_later(upstream: UpstreamStream) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(say_goodbye(upstream));
    }
}
