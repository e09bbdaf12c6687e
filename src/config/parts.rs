//! On how many threads a large configuration is read and checked, and the work split in parts.

/// On how many threads a large file's certificates are read and checked.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Threads {
    /// Every CPU, up to 8: a start-up or a one-shot command at 100,000 certificates.
    Every,
    /// The caller's alone, one table after another with no list of them in between: the
    /// daemon, at start and at every re-read. A daemon of 100,000 certificates that read its
    /// file in parts (on more threads, each part's list put together after) peaked over 100 MiB
    /// after five re-reads, against about 82 MiB this way: the allocator keeps much of what the
    /// lists took.
    One,
}

/// Runs `work` on consecutive parts of `items` and returns what each gave, in order; `work`
/// is told the index of its part's first item. With [`Threads::Every`], a large file's
/// certificates (4,096 and more per part) are read and checked on every CPU, up to 8: at
/// 100,000 certificates `check` took 0.15 to 0.19 s instead of 0.22 to 0.28 s. A part whose
/// thread cannot be started is worked on by the caller.
pub(super) fn in_parts<T: Send, R: Send>(
    threads: Threads,
    items: Vec<T>,
    work: impl Fn(usize, Vec<T>) -> R + Sync,
) -> Vec<R> {
    if threads == Threads::One {
        return vec![work(0, items)];
    }
    in_parts_of(part_size(items.len()), items, work)
}

/// How many of `len` items one part holds when they are shared out over every CPU, up to 8:
/// at least 4,096, so that fewer are worked on by the caller alone, without asking how many
/// CPUs there are (for that std reads the cgroup's quota from /proc and /sys, five system calls
/// a time, three times in a one-certificate run).
pub(crate) fn part_size(len: usize) -> usize {
    const LEAST: usize = 4096;
    if len <= LEAST {
        return LEAST;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    len.div_ceil(cpus).max(LEAST)
}

/// [`in_parts`] with parts of `part` items (the last one shorter), each on a thread of its own.
pub(super) fn in_parts_of<T: Send, R: Send>(
    part: usize,
    mut items: Vec<T>,
    work: impl Fn(usize, Vec<T>) -> R + Sync,
) -> Vec<R> {
    let part = part.max(1);
    if items.len() <= part {
        return vec![work(0, items)];
    }
    let mut parts = Vec::new();
    while !items.is_empty() {
        let first = (items.len() - 1) / part * part;
        let rest = items.split_off(first);
        parts.push((first, std::sync::Mutex::new(Some(rest))));
    }
    parts.reverse();
    enum Running<'s, R> {
        Thread(std::thread::ScopedJoinHandle<'s, R>),
        Done(R),
    }
    std::thread::scope(|s| {
        let work = &work;
        let running: Vec<_> = parts
            .iter()
            .map(|(first, slot)| {
                let run = move || {
                    let items = slot
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .expect("each part is taken once");
                    work(*first, items)
                };
                match std::thread::Builder::new().spawn_scoped(s, run) {
                    Ok(thread) => Running::Thread(thread),
                    Err(_) => Running::Done(run()),
                }
            })
            .collect();
        running
            .into_iter()
            .map(|r| match r {
                Running::Thread(t) => t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Running::Done(r) => r,
            })
            .collect()
    })
}
