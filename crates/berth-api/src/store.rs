//! Which state store the server runs on: the embedded engine in `DATA_DIR/state`
//! (default) or an etcd cluster (`--store etcd://HOST:PORT[,HOST:PORT][/PREFIX/]`).
//!
//! The data directory records which one it was served with (`DATA_DIR/store`), and a
//! server or `berth gc` refuses to open it with another: the registry's blobs live in
//! `DATA_DIR/registry` on local disk whatever the store, and against a store that does
//! not reference them every blob looks unreferenced, so garbage collection would
//! delete them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_state::{Embedded, Etcd, Store, ETCD_NAMESPACE};

/// Where control-plane state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded engine in this directory (`DATA_DIR/state`).
    Embedded(PathBuf),
    /// An etcd cluster: its members' `HOST:PORT`, and the namespace every key is put
    /// under (default [`ETCD_NAMESPACE`]).
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// File in the data directory naming the store it is served with.
pub const STORE_MARKER: &str = "store";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad --store {0:?}: {1}")]
    Parse(String, &'static str),
    #[error("cannot open state in {0}")]
    Open(String, #[source] berth_state::StateError),
    #[error(
        "{path} says this data directory's state is in {recorded}, not {wanted}: its registry \
         blobs are referenced only there (GC would delete them against another store); use \
         --store {recorded} or another --data-dir"
    )]
    Mismatch {
        path: String,
        recorded: String,
        wanted: String,
    },
    #[error("cannot read or write {0}")]
    Marker(String, #[source] std::io::Error),
}

impl StoreConfig {
    /// The store for `--store FLAG` (none: embedded in `data_dir/state`).
    pub fn from_flag(flag: Option<&str>, data_dir: &Path) -> Result<StoreConfig, StoreError> {
        let Some(flag) = flag else {
            return Ok(StoreConfig::Embedded(data_dir.join("state")));
        };
        let bad = |why| StoreError::Parse(flag.to_string(), why);
        let rest = flag
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("expected etcd://HOST:PORT[,HOST:PORT][/PREFIX/]"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, "")) => (h, ETCD_NAMESPACE.to_string()),
            Some((h, p)) => (h, format!("/{}/", p.trim_end_matches('/'))),
            None => (rest, ETCD_NAMESPACE.to_string()),
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
        for e in &endpoints {
            match e.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                _ => return Err(bad("each endpoint is HOST:PORT")),
            }
        }
        Ok(StoreConfig::Etcd { endpoints, prefix })
    }

    /// How the store is written in `--store` and in `DATA_DIR/store`.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Embedded(_) => "embedded".to_string(),
            StoreConfig::Etcd { endpoints, prefix } => {
                format!("etcd://{}{prefix}", endpoints.join(","))
            }
        }
    }

    /// Opens the store.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            StoreConfig::Embedded(dir) => {
                Ok(Arc::new(Embedded::open(dir).map_err(|e| {
                    StoreError::Open(dir.display().to_string(), e)
                })?))
            }
            StoreConfig::Etcd { endpoints, prefix } => Ok(Arc::new(
                Etcd::connect(endpoints, prefix)
                    .map_err(|e| StoreError::Open(self.describe(), e))?,
            )),
        }
    }

    /// Checks `data_dir` was served with this store, and records it. A directory
    /// with state or registry content but no record was embedded (records came later);
    /// an etcd store matches a record of the same namespace (members may change).
    pub fn claim(&self, data_dir: &Path) -> Result<(), StoreError> {
        let path = data_dir.join(STORE_MARKER);
        let marker_err = |e| StoreError::Marker(path.display().to_string(), e);
        let wanted = self.describe();
        let recorded = match std::fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let used = data_dir.join("state").exists() || data_dir.join("registry").exists();
                used.then(|| "embedded".to_string())
            }
            Err(e) => return Err(marker_err(e)),
        };
        if let Some(recorded) = recorded {
            let same = match (recorded.as_str(), self) {
                ("embedded", StoreConfig::Embedded(_)) => true,
                (r, StoreConfig::Etcd { prefix, .. }) => matches!(
                    StoreConfig::from_flag(Some(r), data_dir),
                    Ok(StoreConfig::Etcd { prefix: p, .. }) if &p == prefix
                ),
                _ => false,
            };
            if !same {
                return Err(StoreError::Mismatch {
                    path: path.display().to_string(),
                    recorded,
                    wanted,
                });
            }
        }
        std::fs::write(&path, format!("{wanted}\n")).map_err(marker_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--store` parses into the embedded default or etcd endpoints with a namespace.
    #[test]
    fn store_flag_parses() {
        let d = Path::new("/d");
        assert_eq!(
            StoreConfig::from_flag(None, d).unwrap(),
            StoreConfig::Embedded("/d/state".into())
        );
        assert_eq!(
            StoreConfig::from_flag(Some("etcd://a:1,b:2"), d).unwrap(),
            StoreConfig::Etcd {
                endpoints: vec!["a:1".into(), "b:2".into()],
                prefix: "/berth/".into()
            }
        );
        let c = StoreConfig::from_flag(Some("etcd://a:1/team/x/"), d).unwrap();
        assert_eq!(c.describe(), "etcd://a:1/team/x/");
        assert_eq!(
            StoreConfig::from_flag(Some(&c.describe()), d).unwrap(),
            c,
            "describe round-trips"
        );
        for bad in ["a:1", "etcd://", "etcd://a", "etcd://a:1,:2", "http://a:1"] {
            assert!(StoreConfig::from_flag(Some(bad), d).is_err(), "{bad}");
        }
    }

    /// A data directory keeps the store it was first served with; an old directory
    /// without a record counts as embedded.
    #[test]
    fn data_dir_remembers_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let etcd = StoreConfig::from_flag(Some("etcd://a:1"), dir.path()).unwrap();
        let embedded = StoreConfig::from_flag(None, dir.path()).unwrap();
        etcd.claim(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("registry")).unwrap();
        etcd.claim(dir.path()).unwrap();
        let err = embedded.claim(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("--store etcd://a:1/berth/"),
            "{err}"
        );

        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("state")).unwrap();
        assert!(matches!(
            etcd.claim(old.path()),
            Err(StoreError::Mismatch { .. })
        ));
        embedded.claim(old.path()).unwrap();
        // members may change; the namespace may not
        let more = StoreConfig::from_flag(Some("etcd://a:1,b:2"), dir.path()).unwrap();
        more.claim(dir.path()).unwrap();
        let other = StoreConfig::from_flag(Some("etcd://a:1/other/"), dir.path()).unwrap();
        assert!(other.claim(dir.path()).is_err());
    }
}
