//! Bounds on what one layer may cost the host: bytes, entries, path and header sizes.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Default bound on the uncompressed tar stream of one layer, in bytes (16 GiB).
/// The compressed input is held to the same bound.
pub const DEFAULT_MAX_UNCOMPRESSED_BYTES: u64 = 16 * GIB;
/// Default bound on the number of tar entries in one layer (extension headers excluded).
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Default bound on an entry's path or link target, in bytes (Linux `PATH_MAX`).
pub const DEFAULT_MAX_PATH_BYTES: usize = 4096;
/// Default bound on one PAX extended header or GNU long-name record, in bytes (1 MiB).
/// These are read into memory, so they are bounded separately from file data.
pub const DEFAULT_MAX_PAX_HEADER_BYTES: u64 = MIB;

/// Bounds on one layer; exceeding any is [`crate::UnpackError::Limit`] naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed tar stream, in bytes (also bounds the compressed input).
    pub max_uncompressed_bytes: u64,
    /// Most tar entries (files, directories, links, ...), counted as they are read.
    pub max_entries: u64,
    /// Longest entry path or link target, in bytes.
    pub max_path_bytes: usize,
    /// Largest PAX extended header (`x`, `g`) or GNU long name (`L`, `K`), in bytes.
    pub max_pax_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed_bytes: DEFAULT_MAX_UNCOMPRESSED_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
            max_pax_header_bytes: DEFAULT_MAX_PAX_HEADER_BYTES,
        }
    }
}

/// Which bound a layer exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_uncompressed_bytes`] (or the same bound on the compressed input).
    UncompressedBytes,
    /// [`Limits::max_entries`].
    Entries,
    /// [`Limits::max_path_bytes`].
    PathBytes,
    /// [`Limits::max_pax_header_bytes`].
    PaxHeaderBytes,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::UncompressedBytes => "max uncompressed bytes",
            Limit::Entries => "max entries",
            Limit::PathBytes => "max path bytes",
            Limit::PaxHeaderBytes => "max pax header bytes",
        })
    }
}

impl Limits {
    /// The configured value of `limit`.
    pub fn value(&self, limit: Limit) -> u64 {
        match limit {
            Limit::UncompressedBytes => self.max_uncompressed_bytes,
            Limit::Entries => self.max_entries,
            Limit::PathBytes => self.max_path_bytes as u64,
            Limit::PaxHeaderBytes => self.max_pax_header_bytes,
        }
    }
}
