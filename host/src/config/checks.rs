//! The value checks every section uses; each returns the message a user reads.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// `value` if it lies in `range` (NaN never does), else the message that says so.
pub(super) fn within<T: PartialOrd + fmt::Debug>(
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        // Debug, so that floats keep their point: `1.0`, not `1`.
        Err(format!(
            "must be between {:?} and {:?}; got {value:?}",
            range.start(),
            range.end()
        ))
    }
}

/// [`seconds`], or the message that says what range is allowed.
pub(super) fn seconds_within(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    seconds(value, min, max)
        .ok_or_else(|| format!("must be between {min} and {max} seconds; got {value}"))
}

/// `value` seconds as a duration, if it is finite and within `min..=max`.
pub(super) fn seconds(value: f64, min: f64, max: f64) -> Option<Duration> {
    (value.is_finite() && value >= min && value <= max).then(|| Duration::from_secs_f64(value))
}

/// Checks an optional value: `None` stays `None`; a value `check` refuses is a problem
/// at `key`.
pub(super) fn optional<T, U>(
    value: Option<T>,
    key: &str,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<Option<U>, Problem> {
    value.map(check).transpose().map_err(at(key))
}

/// A problem found in one section: the key under the section (`workers`,
/// `rollout.canary_percent`) and what is wrong and what to do.
pub(super) type Problem = (String, String);

/// Names `key` as the culprit of a check's message.
pub(super) fn at(key: &str) -> impl FnOnce(String) -> Problem + '_ {
    move |message| (key.to_owned(), message)
}

/// `path` with every symlink resolved, whether or not it exists yet: its nearest
/// existing ancestor canonicalised, the rest appended (`.` and `..` applied to the
/// names, which are not symlinks since they do not exist). A dangling symlink on the
/// way is followed by its target, as creating the folder would.
pub fn canonical(path: &Path) -> PathBuf {
    canonical_within(path, 40)
}

fn canonical_within(path: &Path, links: u32) -> PathBuf {
    let parts: Vec<Component<'_>> = path.components().collect();
    for existing in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..existing].iter().collect();
        let found = match std::fs::canonicalize(&prefix) {
            Ok(found) => found,
            Err(_) => match std::fs::read_link(&prefix) {
                // A dangling symlink: where it points, then the rest.
                Ok(target) if links > 0 => {
                    let mut next = prefix.parent().map(Path::to_path_buf).unwrap_or_default();
                    next.push(target);
                    next.extend(&parts[existing..]);
                    return canonical_within(&next, links - 1);
                }
                _ => continue,
            },
        };
        return append(found, &parts[existing..]);
    }
    append(PathBuf::new(), &parts)
}

/// `base` with `parts` applied by name.
fn append(mut base: PathBuf, parts: &[Component<'_>]) -> PathBuf {
    for part in parts {
        match part {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            other => base.push(other),
        }
    }
    base
}
