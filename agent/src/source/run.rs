//! Starting the agent's sources from its configuration: every log path
//! once (shared by the jails that read it), every journal jail on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::discover::is_glob;
use super::follow::{spawn_files, FileGroup, SourceHandle};
use super::journal::{self, JournalSpec};
use super::{check_readable, Backend, Batch, PositionStore, SourceError, Start};
use crate::config::AgentConfig;
use crate::metrics::SourceMetrics;

/// The `journalctl` run for journal jails.
const JOURNALCTL: &str = "journalctl";

enum Kind {
    Files {
        path: PathBuf,
        backend: Backend,
        start: Start,
    },
    Journal(JournalSpec),
}

/// The sources of a configuration, checked, not yet started.
pub struct SourcePlan {
    sources: Vec<Kind>,
    /// Source index → the jails that read it.
    pub routes: Vec<Vec<usize>>,
}

/// A jail's log source is unusable at start.
#[derive(Debug, thiserror::Error)]
#[error("jail {jail}: {source}")]
pub struct PlanError {
    pub jail: String,
    #[source]
    pub source: SourceError,
}

impl SourcePlan {
    /// Checks every explicit log path (globs may match nothing yet) and
    /// every journal.
    pub fn new(config: &AgentConfig) -> Result<Self, PlanError> {
        let mut sources = Vec::new();
        let mut routes: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        for (j, jail) in config.jails.iter().enumerate() {
            let name = &jail.settings.name;
            let fail = |source| PlanError {
                jail: name.clone(),
                source,
            };
            let s = &jail.source;
            if s.backend == Backend::Systemd {
                let spec = JournalSpec {
                    key: format!("journal:{name}"),
                    source: sources.len(),
                    matches: s.journalmatch.clone(),
                    paths: jail.logpaths.clone(),
                    start: s.start,
                    journalctl: PathBuf::from(JOURNALCTL),
                };
                journal::check(&spec).map_err(fail)?;
                sources.push(Kind::Journal(spec));
                routes.push(vec![j]);
                continue;
            }
            for path in &jail.logpaths {
                let source = match index.get(path) {
                    Some(&i) => i,
                    None => {
                        if !is_glob(path) {
                            check_readable(path).map_err(fail)?;
                        }
                        let i = sources.len();
                        sources.push(Kind::Files {
                            path: path.clone(),
                            backend: s.backend,
                            start: s.start,
                        });
                        routes.push(Vec::new());
                        index.insert(path.clone(), i);
                        i
                    }
                };
                if let Some(r) = routes.get_mut(source) {
                    r.push(j);
                }
            }
        }
        Ok(SourcePlan { sources, routes })
    }

    /// How many sources there are.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Starts every source, each resuming from its saved position.
    pub fn spawn(
        self,
        store: &PositionStore,
        tx: &mpsc::Sender<Batch>,
        metrics: &Arc<SourceMetrics>,
    ) -> Sources {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = self
            .sources
            .into_iter()
            .enumerate()
            .map(|(i, kind)| match kind {
                Kind::Files {
                    path,
                    backend,
                    start,
                } => {
                    let saved = store.files_under(&path);
                    let group = FileGroup::new(path, i, start, saved, metrics.clone());
                    spawn_files(group, backend, tx.clone(), stop.clone(), metrics.clone())
                }
                Kind::Journal(spec) => {
                    let cursor = store.journal(&spec.key);
                    journal::spawn(spec, cursor, tx.clone(), stop.clone(), metrics.clone())
                }
            })
            .collect();
        Sources { handles, stop }
    }
}

/// The running sources.
pub struct Sources {
    handles: Vec<SourceHandle>,
    stop: Arc<AtomicBool>,
}

impl Sources {
    /// Stops every reader and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for mut h in self.handles {
            h.interrupt();
            let _ = tokio::task::spawn_blocking(move || h.thread.join()).await;
        }
    }
}
