//! Block maps that survive their file shrinking: a file truncated by another process while
//! one of its blocks is mapped gives that input an error ([`crate::ErrorKind::Size`]), not a
//! SIGBUS that ends the whole process.
//!
//! Touching a page of a map past the end of its file raises SIGBUS. Every block map is
//! registered here for as long as it lives ([`GuardedMap`]); a process-wide SIGBUS handler,
//! installed once when the first block is mapped, looks the faulting address up: inside a
//! registered map, it maps zero pages over the rest of that map (so the faulting load, run
//! again, reads zeros and the kernel finishes the block) and marks the map as hit. After a
//! block is reduced, [`GuardedMap::check`] turns a hit, or a file now shorter than the
//! block's bytes (the last page of a file reads zeros past its end without any signal), into
//! an error, and the block's result is thrown away. Faults anywhere else go to the handler
//! that was installed before (Rust's own, a host interpreter's), or to the default action.
//!
//! The cost on the fast path is two atomic stores per block and one `fstat` after it. A
//! handler installed for SIGBUS after colstats's, that does not pass foreign faults on,
//! takes this protection away; `IoMode::Read` does without maps altogether.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use memmap2::Mmap;

/// Maps registered at once. A block that finds every slot taken is mapped anyway and checked
/// the same way, but a SIGBUS in it is not caught; no plan keeps nearly so many in flight.
const SLOTS: usize = 1024;
/// A slot being filled or emptied: matches no address.
const BUSY: usize = usize::MAX;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    hit: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    hit: AtomicBool::new(false),
};
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Where the next claim starts looking, so claims spread over the table.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
/// The SIGBUS action before ours, for faults that are not in a registered map.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A block's map, registered with the SIGBUS handler while it lives.
pub(crate) struct GuardedMap {
    map: Mmap,
    slot: Option<usize>,
}

impl GuardedMap {
    /// Registers `map` (the handler is installed on the first call).
    pub(crate) fn new(map: Mmap) -> GuardedMap {
        INSTALL.call_once(install);
        let (start, len) = (map.as_ptr() as usize, map.len());
        let slot = if len == 0 {
            None
        } else {
            claim(start, start + len)
        };
        GuardedMap { map, slot }
    }

    /// Whether the map's bytes were all the file's own: no page faulted past the end of the
    /// file, and the file still holds `needed` bytes (the map's last byte's offset + 1).
    /// `Err` gives the file's length now.
    pub(crate) fn check(&self, file: &File, needed: u64) -> Result<(), u64> {
        let hit = self
            .slot
            .is_some_and(|i| TABLE[i].hit.load(Ordering::Acquire));
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if hit || len < needed {
            Err(len)
        } else {
            Ok(())
        }
    }
}

impl std::ops::Deref for GuardedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        // Unregistered before the map goes (`map` drops after this body).
        if let Some(i) = self.slot {
            let s = &TABLE[i];
            s.start.store(BUSY, Ordering::Release);
            s.end.store(0, Ordering::Release);
            s.hit.store(false, Ordering::Release);
            s.start.store(0, Ordering::Release);
        }
    }
}

fn claim(start: usize, end: usize) -> Option<usize> {
    let first = NEXT.fetch_add(1, Ordering::Relaxed);
    for k in 0..SLOTS {
        let i = (first + k) % SLOTS;
        let s = &TABLE[i];
        if s.start
            .compare_exchange(0, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.hit.store(false, Ordering::Release);
            s.end.store(end, Ordering::Release);
            s.start.store(start, Ordering::Release);
            return Some(i);
        }
    }
    None
}

fn install() {
    // SAFETY: sysconf and sigaction with structs we own; the previous action is saved
    // before ours replaces it, so a foreign fault always finds it.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
            return;
        }
        let _ = PREVIOUS.set(old);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
    }
}

/// The SIGBUS handler. Only async-signal-safe work: atomic loads and stores, `mmap`,
/// `sigaction`, and the previous handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for s in TABLE.iter() {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || start == BUSY || addr < start {
            continue;
        }
        let end = s.end.load(Ordering::Acquire);
        if addr >= end {
            continue;
        }
        let from = addr & !(page - 1);
        // SAFETY: [from, end) lies in a live private map of ours (registered maps are
        // unregistered before they are unmapped, and only the thread reading a map faults
        // in it); anonymous zero pages replace the file's vanished ones.
        let p = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.hit.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: what would have happened without colstats.
    // SAFETY: the previous action as the kernel gave it; a handler is called as its flags say.
    unsafe {
        match PREVIOUS.get() {
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                // The default action: returning runs the faulting instruction again, and the
                // fault now ends the process as it would have.
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gone_from_the_file_reads_zeros_and_is_reported() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 1 << 16]).unwrap();
        // SAFETY: a private read-only map of a file only this test holds.
        let map = unsafe { memmap2::MmapOptions::new().map(&f) }.unwrap();
        let g = GuardedMap::new(map);
        assert_eq!(g[40_000], 7);
        assert_eq!(g.check(&f, 1 << 16), Ok(()));
        f.set_len(8192).unwrap();
        // Without the guard this load raises SIGBUS and ends the test binary.
        let v = unsafe { std::ptr::read_volatile(&g[40_000]) };
        assert_eq!(v, 0);
        assert_eq!(g[100], 7, "pages still in the file keep their bytes");
        assert_eq!(g.check(&f, 1 << 16), Err(8192));
        // Extended again: the lost pages still count against the map.
        f.set_len(1 << 16).unwrap();
        assert_eq!(g.check(&f, 1 << 16), Err(1 << 16));
        drop(g);
        // A fresh map of the same slot is clean.
        let map = unsafe { memmap2::MmapOptions::new().map(&f) }.unwrap();
        let g = GuardedMap::new(map);
        assert_eq!(g.check(&f, 1 << 16), Ok(()));
    }
}
