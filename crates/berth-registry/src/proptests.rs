//! Property tests for the parsers of untrusted input: they never panic, and what they
//! accept is safe to use.

use proptest::prelude::*;

use crate::http::{parse_range, parse_route, pct_decode};
use crate::manifest;
use crate::names::{Digest, Reference, RepoName};

proptest! {
    /// Any accepted repository name is a relative path of plain components: no `..`,
    /// `.`, empty components or absolute paths can ever reach the filesystem.
    #[test]
    fn accepted_names_are_plain(s in "[a-z0-9./_-]{0,40}") {
        if let Ok(n) = RepoName::parse(&s) {
            for c in n.as_str().split('/') {
                prop_assert!(!c.is_empty() && c != "." && c != "..");
                prop_assert!(c.as_bytes()[0].is_ascii_alphanumeric());
            }
        }
    }

    /// Name, reference and digest parsers never panic on arbitrary text.
    #[test]
    fn name_parsers_total(s in "\\PC{0,300}") {
        let _ = RepoName::parse(&s);
        let _ = Reference::parse(&s);
        let _ = Digest::parse(&s);
        let _ = parse_route(&s);
        let _ = pct_decode(&s);
    }

    /// Manifest parsing never panics on arbitrary bytes.
    #[test]
    fn manifest_parse_total(b in proptest::collection::vec(any::<u8>(), 0..512), ct in "\\PC{0,40}") {
        let _ = manifest::parse(Some(&ct), &b);
        let _ = manifest::parse(None, &b);
    }

    /// Accepted ranges lie inside the blob.
    #[test]
    fn ranges_inside(a in 0u64..2000, b in 0u64..2000, size in 0u64..1000, suffix in any::<bool>()) {
        let h = if suffix { format!("bytes=-{b}") } else { format!("bytes={a}-{b}") };
        if let Some((s, e)) = parse_range(&h, size) {
            prop_assert!(s <= e && e < size);
        }
    }
}
