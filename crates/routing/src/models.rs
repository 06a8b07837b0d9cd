//! Which model each target serves (`name@version`), which of them is the newest, and what the
//! gateway tells the HTTP layer about them.
//!
//! The cluster layer only makes a target of an actor whose node computes token ids and labels
//! exactly as this node does (the same tokenizer, window and labels), so every target can take
//! this node's requests; their versions may differ during a rolling model upgrade. A request
//! that names a version is placed only on actors of that version; any other request prefers the
//! newest version: older ones are charged [`OLDER_MODEL_PENALTY_TOKENS`] and take work only when
//! the newest version's actors are that much busier (or all fail).

use std::cmp::Ordering;
use std::sync::Arc;

/// What an actor of an older model version is charged on top of its estimate, in tokens: about
/// 50 short reviews, some 50 ms of one default-model actor's work. Enough that the newest
/// version answers when it keeps up and placement samples it (every local actor and two remote
/// ones, as always); small enough that during a rolling upgrade the old
/// nodes still absorb what the new ones cannot take, rather than every request queueing on the
/// first upgraded node.
pub const OLDER_MODEL_PENALTY_TOKENS: f64 = 2_048.0;

/// The models among the gateway's targets, as the HTTP layer reads them before placing a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedModels {
    /// The newest `name@version` among the targets (`None`: no target).
    pub newest: Option<Arc<str>>,
    /// Every `name@version` among the targets, once each, sorted.
    pub all: Vec<Arc<str>>,
}

impl ServedModels {
    /// The summary of `models` (one entry per target; repeats allowed).
    pub fn of<'a>(models: impl IntoIterator<Item = &'a Arc<str>>) -> Self {
        let mut all: Vec<Arc<str>> = models.into_iter().cloned().collect();
        all.sort();
        all.dedup();
        let newest = all.iter().max_by(|a, b| compare_versions(a, b)).cloned();
        Self { newest, all }
    }

    /// Whether some target serves `model` (`name@version`).
    pub fn serves(&self, model: &str) -> bool {
        self.all.iter().any(|m| &**m == model)
    }
}

/// Orders two `name@version` ids by version, as semantic versioning does: a leading `v` and
/// build metadata (`+...`) are ignored; the dot-separated parts of the release compare as numbers
/// where both are numbers (`1.10.0` after `1.9.0`), a number before a word, words as text; more
/// parts after fewer when the common ones are equal; a pre-release (`2.0.0-rc.1`) before its
/// release, and pre-releases part by part the same way (`rc.2` before `rc.10`). Ties fall back to
/// the whole text, so the order is total and every node picks the same newest.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ra, pa) = split_version(a);
    let (rb, pb) = split_version(b);
    compare_parts(&ra, &rb)
        .then_with(|| match (&pa, &pb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => compare_parts(x, y),
        })
        .then_with(|| a.cmp(b))
}

/// The release parts and the pre-release parts (if any) of `name@version`.
fn split_version(id: &str) -> (Vec<&str>, Option<Vec<&str>>) {
    let version = id.rsplit_once('@').map_or(id, |(_, v)| v);
    let version = version.split_once('+').map_or(version, |(v, _build)| v);
    let version = version.strip_prefix('v').unwrap_or(version);
    let (release, pre) = version.split_once('-').map_or((version, None), |(r, p)| (r, Some(p)));
    (release.split('.').collect(), pre.map(|p| p.split('.').collect()))
}

/// Part by part (numbers as numbers, a number before a word, words as text), then fewer first.
fn compare_parts(a: &[&str], b: &[&str]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn versions_compare_by_number_then_release_after_pre_release() {
        let ordered = [
            "m@0.9",
            "m@1.0.9",
            "m@1.0.10+build5",
            "m@1.2.0-rc.2",
            "m@1.2.0-rc.10",
            "m@1.2.0",
            "m@v1.2.1",
            "m@1.10.0",
            "m@2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert_eq!(compare_versions(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(compare_versions(pair[1], pair[0]), Ordering::Greater, "{pair:?}");
        }
        assert_eq!(compare_versions("m@1.0", "m@1.0"), Ordering::Equal);
        assert_eq!(compare_versions("m@1.0", "m@1.0.0"), Ordering::Less);
    }

    #[test]
    fn the_summary_lists_each_model_once_and_names_the_newest() {
        let ids: Vec<Arc<str>> = ["m@1.9.0", "m@1.10.0", "m@1.9.0"].into_iter().map(Arc::from).collect();
        let served = ServedModels::of(&ids);
        assert_eq!(served.newest.as_deref(), Some("m@1.10.0"));
        assert_eq!(served.all.len(), 2);
        assert!(served.serves("m@1.9.0") && !served.serves("m@2"));
        assert_eq!(ServedModels::of(&[]), ServedModels::default());
    }

    proptest! {
        /// A total order: antisymmetric and transitive, so every node agrees on the newest.
        #[test]
        fn the_order_is_total(a in "[0-9a-z.-]{0,8}", b in "[0-9a-z.-]{0,8}", c in "[0-9a-z.-]{0,8}") {
            let (a, b, c) = (format!("m@{a}"), format!("m@{b}"), format!("m@{c}"));
            prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
            if compare_versions(&a, &b) != Ordering::Greater && compare_versions(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare_versions(&a, &c), Ordering::Greater);
            }
            prop_assert_eq!(compare_versions(&a, &b) == Ordering::Equal, a == b);
        }
    }
}
