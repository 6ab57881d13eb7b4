//! Live policy reload, the one policy poller: the policy file (a ConfigMap mount) is re-read every
//! few seconds and compared byte for byte, and a change parsed as [`crate::policy_source`] parses
//! it. Polling, not inotify: the kubelet updates ConfigMap mounts by swapping a `..data`
//! symlink, which watches on the file path never see; reading the path follows the new link.
//!
//! A valid new policy replaces the old one atomically between requests ([`App::replace_policy`]); an
//! invalid one is logged, counted and shown in `/readyz`, and the last good policy stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::webhook::server::App;

/// What one look at the file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Replaced,
    /// The file changed but is not a valid policy (or cannot be read); the message says why.
    Refused(String),
}

/// Watches one policy file on behalf of an [`App`].
pub struct PolicyReloader {
    path: PathBuf,
    last: Option<Vec<u8>>,
    app: Arc<App>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl PolicyReloader {
    /// `loaded` is the content the app's current policy was parsed from.
    pub fn new(path: PathBuf, loaded: Vec<u8>, app: Arc<App>) -> PolicyReloader {
        PolicyReloader {
            path,
            last: Some(loaded),
            app,
        }
    }

    /// Reads the file once and acts on what changed.
    pub fn check(&mut self) -> Outcome {
        let shown = self.path.display().to_string();
        let bytes = match crate::input::read_bytes(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("{shown}: {e}");
                if self.last.is_some() {
                    tracing::error!(error = %msg, "policy file unreadable; the last good policy stays in force");
                    self.app.policy_refused(msg.clone());
                    self.last = None;
                }
                return Outcome::Refused(msg);
            }
        };
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return Outcome::Unchanged;
        }
        self.last = Some(bytes.clone());
        match crate::policy_source::parse_bytes(&bytes, &self.path) {
            Ok(policy) => {
                let rules = policy.rules.len();
                self.app.replace_policy(policy);
                self.app.metrics.policy_last_reload_success.set(now_secs());
                tracing::info!(policy = %shown, rules, "policy reloaded");
                Outcome::Replaced
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "new policy refused; the last good policy stays in force");
                self.app.policy_refused(msg.clone());
                Outcome::Refused(msg)
            }
        }
    }

    /// Checks every `every` until the process ends.
    pub fn spawn(mut self, every: Duration) -> tokio::task::JoinHandle<()> {
        spawn_every(every, move || {
            self.check();
        })
    }
}

/// Runs `tick` every `every` (first after one period) until the process ends; late ticks are delayed,
/// not bunched. The polling loop behind policy and certificate reload.
pub fn spawn_every(
    every: Duration,
    mut tick: impl FnMut() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            tick();
        }
    })
}
