//! The two libc calls the registry needs that neither std nor rustix wraps, each in one
//! small function. This module holds the crate's only `unsafe` (see the crate docs).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `sync_file_range(2)` on `len` bytes of `fd` from `offset`; `flags` are the
/// `libc::SYNC_FILE_RANGE_*` bits. A hint to start or wait for write-back: it makes
/// nothing durable (no metadata, no device cache flush) — durability is `fsync`'s job.
#[allow(unsafe_code)]
pub fn sync_file_range(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    flags: libc::c_uint,
) -> io::Result<()> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: sync_file_range takes no pointers, only integers; `fd` is borrowed for the
    // duration of the call, so it is an open descriptor. Bad offsets, lengths or flags
    // are reported as EINVAL, never undefined behaviour.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), off, len, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Below this size glibc serves allocations from its arenas; from it up, with `mmap(2)`,
/// so freeing a large I/O buffer gives it straight back to the kernel (glibc's default).
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// Free memory at the top of an arena beyond this is given back to the kernel.
pub const TRIM_THRESHOLD: usize = 512 * 1024;

/// Pins glibc malloc's mmap and trim thresholds (mallopt(3)).
///
/// By default glibc raises both each time a block above the mmap threshold is freed
/// (up to 32 MiB and 64 MiB). After that, transfer buffers come from its arenas (up to
/// 8 per core, one per busy thread) and free memory at the top of an arena is kept up
/// to twice the largest buffer freed; `malloc_trim(3)` does not release it either (it
/// trims only the main arena's top). Measured with `make bench`: 40–72 MiB resident at
/// idle after the 50 concurrent pulls; 11–12 MiB with the thresholds pinned. Setting
/// either threshold turns the adjustment off. The upload and download paths recycle
/// their buffers, so pinning costs a few `mmap`s per transfer.
#[allow(unsafe_code)]
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value) in [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ] {
        let value = libc::c_int::try_from(value).expect("threshold fits in an int");
        // SAFETY: mallopt takes two integers and only changes malloc's tuning parameters,
        // under malloc's own lock; it may be called at any time from any thread. A value
        // it rejects leaves the default in place (it returns 0, which we can ignore).
        unsafe {
            libc::mallopt(param, value);
        }
    }
}
