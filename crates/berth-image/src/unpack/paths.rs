//! Entry names made relative to the layer root, as pure functions over bytes.
//!
//! A leading `/` is dropped (GNU tar's "removing leading `/`", containerd's
//! `filepath.Join("/", name)`): the entry lands under the layer root. Empty and `.`
//! components are dropped. A `..` component is refused outright rather than clamped:
//! no image builder emits one, so its presence means a hostile or broken layer.

/// Linux `NAME_MAX`: the longest single path component, in bytes.
const NAME_MAX: usize = 255;

/// Why an entry path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// The name contains a NUL byte (possible only through PAX or GNU long names).
    Nul,
    /// The name has a `..` component.
    DotDot,
    /// A component is longer than `NAME_MAX`.
    ComponentTooLong,
    /// A non-directory entry (or a hard link target) names the layer root itself.
    Root,
    /// A whiteout `.wh.NAME` whose NAME is empty, `.` or `..`.
    BadWhiteout,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathProblem::Nul => "contains a nul byte",
            PathProblem::DotDot => "has a `..` component",
            PathProblem::ComponentTooLong => "has a component longer than 255 bytes",
            PathProblem::Root => "names the layer root",
            PathProblem::BadWhiteout => "is a whiteout without a valid name",
        })
    }
}

/// The components of `raw` below the layer root; empty means the root itself.
pub(crate) fn components(raw: &[u8]) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathProblem::DotDot),
            c if c.len() > NAME_MAX => return Err(PathProblem::ComponentTooLong),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `comps` joined with `/` (relative; `.` for the root).
pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Accepted names are plain relative components: never empty, `.`, `..`,
        /// never containing `/` or NUL, never longer than NAME_MAX.
        #[test]
        fn accepted_components_are_plain(raw in prop::collection::vec(
            prop::sample::select(vec![b'a', b'.', b'/', 0u8, b'w', b'h']), 0..64)) {
            if let Ok(comps) = components(&raw) {
                for c in &comps {
                    prop_assert!(!c.is_empty() && *c != b"." && *c != b"..");
                    prop_assert!(!c.contains(&b'/') && !c.contains(&0));
                    prop_assert!(c.len() <= NAME_MAX);
                }
                prop_assert!(!join(&comps).starts_with(b"/"));
            }
        }
    }

    /// Leading slashes and `.` are dropped, `..` and NUL are refused.
    #[test]
    fn normalizes_and_refuses() {
        let ok: [(&[u8], &[&[u8]]); 6] = [
            (b"usr/bin/sh", &[b"usr", b"bin", b"sh"]),
            (b"./usr//bin/", &[b"usr", b"bin"]),
            (b"/abs/path", &[b"abs", b"path"]),
            (b"./", &[]),
            (b"/", &[]),
            (b"a/.../b", &[b"a", b"...", b"b"]),
        ];
        for (raw, want) in ok {
            assert_eq!(components(raw).unwrap(), want, "{raw:?}");
        }
        assert_eq!(components(b"../../etc/x"), Err(PathProblem::DotDot));
        assert_eq!(components(b"a/../../b"), Err(PathProblem::DotDot));
        assert_eq!(components(b"a\0b"), Err(PathProblem::Nul));
        assert_eq!(components(&[b'x'; 256]), Err(PathProblem::ComponentTooLong));
        assert_eq!(join(&[b"a", b"b"]), b"a/b");
        assert_eq!(join(&[]), b".");
    }
}
