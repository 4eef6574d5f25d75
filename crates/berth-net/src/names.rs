//! Validation of the names berth gives to interfaces and network namespaces.
//!
//! Pure. Names reach `ip` as arguments and namespace names become paths under
//! `/var/run/netns`, so both are limited to a small charset: ASCII letters, digits, `_`,
//! `-` and `.`, not starting with `-` (it would read as an option) or `.` (`.`/`..`).

/// Longest interface name: `IFNAMSIZ` (16, include/uapi/linux/if.h) minus the NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Longest network namespace name berth uses (a file name under `/var/run/netns`).
pub const MAX_NETNS_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is longer than {max} bytes")]
    TooLong {
        kind: &'static str,
        name: String,
        max: usize,
    },
    #[error("{kind} name {name:?} contains {ch:?} (allowed: A-Z a-z 0-9 _ - .)")]
    BadChar {
        kind: &'static str,
        name: String,
        ch: char,
    },
    #[error("{kind} name {name:?} may not start with {ch:?}")]
    BadStart {
        kind: &'static str,
        name: String,
        ch: char,
    },
}

fn validate(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty { kind })?;
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(NameError::BadChar {
            kind,
            name: name.to_owned(),
            ch,
        });
    }
    if matches!(first, '-' | '.') {
        return Err(NameError::BadStart {
            kind,
            name: name.to_owned(),
            ch: first,
        });
    }
    Ok(())
}

/// Checks a network interface name (bridge, veth).
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    validate("interface", name, MAX_IFNAME_LEN)
}

/// Checks a network namespace name.
pub fn validate_netns_name(name: &str) -> Result<(), NameError> {
    validate("namespace", name, MAX_NETNS_NAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Typical berth names pass, including the 15-byte limit exactly.
    #[test]
    fn accepts() {
        for n in [
            "berth0",
            "bt1a2b3c4d",
            "vb-0123456789ab",
            "a",
            "eth0",
            "x_y.z",
        ] {
            assert_eq!(validate_ifname(n), Ok(()), "{n}");
        }
        assert_eq!(validate_netns_name(&"n".repeat(64)), Ok(()));
    }

    /// Each kind of bad name gets its own error.
    #[test]
    fn rejects() {
        assert_eq!(
            validate_ifname(""),
            Err(NameError::Empty { kind: "interface" })
        );
        assert_eq!(
            validate_ifname("abcdefghijklmnop"),
            Err(NameError::TooLong {
                kind: "interface",
                name: "abcdefghijklmnop".into(),
                max: 15
            })
        );
        for (n, ch) in [
            ("a/b", '/'),
            ("a b", ' '),
            ("a:b", ':'),
            ("a\nb", '\n'),
            ("é", 'é'),
        ] {
            assert_eq!(
                validate_ifname(n),
                Err(NameError::BadChar {
                    kind: "interface",
                    name: n.into(),
                    ch
                }),
                "{n:?}"
            );
        }
        for (n, ch) in [("-x", '-'), (".", '.'), ("..", '.')] {
            assert_eq!(
                validate_netns_name(n),
                Err(NameError::BadStart {
                    kind: "namespace",
                    name: n.into(),
                    ch
                })
            );
        }
        assert!(validate_netns_name(&"n".repeat(65)).is_err());
    }

    proptest! {
        /// Whatever is accepted is a plain, short, option-free path component.
        #[test]
        fn accepted_names_are_plain(s in "\\PC{0,20}") {
            if validate_ifname(&s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= 15);
                prop_assert!(!s.starts_with('-') && !s.starts_with('.'));
                prop_assert!(!s.contains('/') && !s.chars().any(char::is_whitespace));
            }
        }
    }
}
