//! The data plane's tokio runtime. With one thread it is a current-thread runtime
//! driven by an OS thread of its own (no work-stealing machinery; against a
//! multi-thread runtime of one worker it measured the same rate with a lower, steadier
//! p99: `bench/README.md`); with more, tokio's multi-thread scheduler.

use std::io;
use std::thread;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the runtime's own thread does when told to stop.
struct Finish {
    /// Wait for these (at most `grace`) before stopping.
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

enum Kind {
    Multi(Runtime),
    Single {
        stop: oneshot::Sender<Finish>,
        thread: thread::JoinHandle<()>,
    },
}

/// A running runtime.
pub struct Engine {
    handle: Handle,
    kind: Kind,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

async fn finish(tasks: Vec<JoinHandle<()>>, grace: Duration) {
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(grace, all).await;
}

impl Engine {
    /// A runtime of `threads` threads named `name`.
    pub fn start(threads: usize, name: &str) -> io::Result<Engine> {
        if threads > 1 {
            let runtime = Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()?;
            return Ok(Engine {
                handle: runtime.handle().clone(),
                kind: Kind::Multi(runtime),
            });
        }
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<Finish>();
        let thread = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Ok(f) = runtime.block_on(stopped) {
                    runtime.block_on(finish(f.tasks, f.grace));
                }
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Engine {
            handle,
            kind: Kind::Single { stop, thread },
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime. Outside an async context it first gives `tasks` up to
    /// `grace` to finish; inside one (where blocking is not allowed) it stops at
    /// once.
    pub fn stop(self, tasks: Vec<JoinHandle<()>>, grace: Duration) {
        let blocking_allowed = Handle::try_current().is_err();
        match self.kind {
            Kind::Multi(runtime) if blocking_allowed => {
                runtime.block_on(finish(tasks, grace));
                runtime.shutdown_timeout(Duration::from_millis(100));
            }
            Kind::Multi(runtime) => runtime.shutdown_background(),
            Kind::Single { stop, thread } => {
                let grace = if blocking_allowed {
                    grace
                } else {
                    Duration::ZERO
                };
                let _ = stop.send(Finish { tasks, grace });
                if blocking_allowed {
                    let _ = thread.join();
                }
            }
        }
    }
}
