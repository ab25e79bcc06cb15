//! How errors name a key of the config: `host.outbox_dir`, `activity[0].progress.store`,
//! `activity[1].dir[0]`. One type builds them all, so that `check`, `serve`, the
//! consumer and `check --remote` spell a key the same way.

use std::fmt;

/// A key of the config, as an error names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPath(String);

impl KeyPath {
    /// The `[[activity]]` table at `index` (from 0): `activity[N]`.
    pub fn activity(index: usize) -> Self {
        Self(format!("activity[{index}]"))
    }

    /// The `[[callback]]` table at `index` (from 0): `callback[N]`.
    pub fn callback(index: usize) -> Self {
        Self(format!("callback[{index}]"))
    }

    /// A key of the top-level table `name`: `host`, `aws`.
    pub fn table(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The key `name` under this one: `activity[0].progress`, then `.store`.
    #[must_use]
    pub fn key(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// The `index`-th table of the array `name` under this one: `activity[0].dir[1]`.
    #[must_use]
    pub fn item(&self, name: &str, index: usize) -> Self {
        Self(format!("{}.{name}[{index}]", self.0))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<KeyPath> for String {
    fn from(key: KeyPath) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_the_errors_name_them() {
        let activity = KeyPath::activity(2);
        assert_eq!(
            activity.key("progress").key("store").as_str(),
            "activity[2].progress.store"
        );
        assert_eq!(activity.item("dir", 1).to_string(), "activity[2].dir[1]");
        assert_eq!(
            String::from(KeyPath::table("host").key("outbox_dir")),
            "host.outbox_dir"
        );
    }
}
