//! Background threads may yield the cores to the consensus driver.
//!
//! The driver builds, executes and commits each block in turn: its thread is
//! the chain's critical path. On a node alone (no peers: a lone validator,
//! the dev chain) the block writer and admission work beside it with slack
//! (the writer may fall up to two staged blocks behind, and admission fills
//! a mempool that holds more than a block), so when every core is busy they
//! should wait, not the driver. Linux shares busy cores by weight, per
//! thread: at niceness 5 a thread gets about a third of a normal thread's
//! share while both want a core, and all it wants when a core is free.
//! (RocksDB lowers its compaction threads for the same reason.) With peers
//! they are on the network's critical path too: every message this node
//! sends waits for its last block to be durable, and peers' forwarded
//! transactions reach the proposer's pool through admission: lowered there,
//! four validators sharing two cores left the cores idle more often.
//! Measured in docs/benchmarks.md, "Background threads at a lower priority".

/// The CPU priority a node's block writer and admission threads run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// That of the thread that starts them.
    Normal,
    /// [`BACKGROUND_NICENESS`] nicer than the thread that starts them.
    Background,
}

impl Priority {
    /// For a node's background threads: lowered only on a node alone.
    pub fn for_node(has_peers: bool) -> Priority {
        if has_peers {
            Priority::Normal
        } else {
            Priority::Background
        }
    }

    /// Sets the calling thread's priority to this one.
    pub fn apply_to_this_thread(self) {
        if self == Priority::Background {
            lower_this_thread();
        }
    }
}

/// How much nicer than the thread that starts it a background thread runs.
pub const BACKGROUND_NICENESS: i32 = 5;

/// Lowers the calling thread's CPU priority by [`BACKGROUND_NICENESS`]. A
/// priority is a hint: should the system refuse, the thread runs as it was.
fn lower_this_thread() {
    use rustix::process::{getpriority_process, setpriority_process};
    // `None` is the calling thread: Linux keeps niceness per thread.
    let lowered = getpriority_process(None)
        .and_then(|nice| setpriority_process(None, nice + BACKGROUND_NICENESS));
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "could not lower this thread's CPU priority");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustix::process::{Pid, getpriority_process};

    /// The niceness of each of this process's threads named `name`.
    pub(crate) fn niceness_of_threads_named(name: &str) -> Vec<i32> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path();
            // A thread may end between listing and reading.
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue;
            };
            if comm.trim_end() != name {
                continue;
            }
            let tid = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            if let Ok(nice) = getpriority_process(Pid::from_raw(tid)) {
                found.push(nice);
            }
        }
        found
    }

    /// Niceness `BACKGROUND_NICENESS` above the calling thread's, as the
    /// kernel caps it.
    pub(crate) fn background_niceness() -> i32 {
        (getpriority_process(None).unwrap() + BACKGROUND_NICENESS).min(19)
    }

    fn niceness_in_a_thread_at(priority: Priority) -> i32 {
        std::thread::spawn(move || {
            priority.apply_to_this_thread();
            getpriority_process(None).unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_background_thread_runs_nicer_than_its_creator_and_leaves_it_alone() {
        let before = getpriority_process(None).unwrap();
        assert_eq!(
            niceness_in_a_thread_at(Priority::Background),
            background_niceness()
        );
        assert_eq!(niceness_in_a_thread_at(Priority::Normal), before);
        assert_eq!(getpriority_process(None).unwrap(), before);
    }

    #[test]
    fn only_a_node_alone_lowers_its_background_threads() {
        assert_eq!(Priority::for_node(false), Priority::Background);
        assert_eq!(Priority::for_node(true), Priority::Normal);
    }
}
