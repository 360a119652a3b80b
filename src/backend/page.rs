//! Keyset pagination: a page is the items that follow the sort key of the last item of the page
//! before, so pages have no duplicates or gaps while items are added; the key travels in an
//! opaque page token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::validate::invalid;

/// Encodes the parts of a sort key (plus a tag naming the ordering) as a token.
pub(super) fn encode(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\0"))
}

/// Decodes a token made by [`encode`] with `n` parts; an empty token is `None`.
pub(super) fn decode(
    field: &str,
    token: &str,
    n: usize,
) -> Result<Option<Vec<String>>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid(field, "is not a page token returned by this service");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(Some(parts))
}

/// The page size to use: `requested`, or 100 when 0.
pub(super) fn size(requested: i64) -> usize {
    if requested == 0 {
        100
    } else {
        requested as usize
    }
}

/// The page of `items`, each with its sort key, that follows `after` in key order (descending
/// when `descending`): at most `size` items, and whether more follow.
pub(super) fn after<K: Ord, T>(
    mut items: Vec<(K, T)>,
    after: Option<&K>,
    descending: bool,
    size: usize,
) -> (Vec<(K, T)>, bool) {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if descending {
        items.reverse();
    }
    if let Some(last) = after {
        items.retain(|(k, _)| if descending { k < last } else { k > last });
    }
    let more = items.len() > size;
    items.truncate(size);
    (items, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_last_key_in_either_order() {
        let items = || (1..=5).map(|k| (k, k * 10)).collect::<Vec<_>>();
        assert_eq!(
            after(items(), None, false, 2),
            (vec![(1, 10), (2, 20)], true)
        );
        assert_eq!(
            after(items(), Some(&2), false, 2),
            (vec![(3, 30), (4, 40)], true)
        );
        assert_eq!(after(items(), Some(&4), false, 2), (vec![(5, 50)], false));
        assert_eq!(
            after(items(), Some(&4), true, 2),
            (vec![(3, 30), (2, 20)], true)
        );
        assert_eq!(after(items(), Some(&1), true, 2), (vec![], false));
    }

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let token = encode(&["a", "b c", ""]);
        assert_eq!(
            decode("page_token", &token, 3).expect("ours"),
            Some(vec!["a".to_string(), "b c".into(), String::new()])
        );
        assert_eq!(decode("page_token", "", 3).expect("empty"), None);
        for bad in ["!!", &encode(&["a", "b"]), "/w"] {
            let e = decode("page_token", bad, 3).expect_err(bad);
            assert!(e.message().contains("page_token"), "{}", e.message());
        }
    }
}
