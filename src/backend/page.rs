//! Keyset pagination: a page is the items that follow the sort key of the last item of the page
//! before, so pages have no duplicates or gaps while items are added; the key travels in a
//! page token.
//!
//! Image and operation tokens are short plain text, the key's parts joined by `.`
//! ([`encode_short`]): names, ids and numbers are made of URL-safe characters already, and
//! base64 would make a token a third longer; the API's page tokens are at most 100
//! characters, which a name-ordered token (one character of order, a name of up to 63, an id of
//! 20) fits. Binding tokens carry subject ids of any characters, in base64 ([`encode`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::validate::invalid;

/// Encodes the parts of a sort key as a token.
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
    let bad = || not_a_token(field);
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(Some(parts))
}

fn not_a_token(field: &str) -> tonic::Status {
    invalid(field, "is not a page token returned by this service")
}

/// A part that goes into a short token as it is.
fn plain(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Encodes the parts of a sort key as a short token: joined by `.` when each part is made of
/// `[A-Za-z0-9_-]` (as names, ids and numbers are); otherwise `~` and the [`encode`] form.
pub(super) fn encode_short(parts: &[&str]) -> String {
    if parts.iter().all(|p| plain(p)) {
        parts.join(".")
    } else {
        format!("~{}", encode(parts))
    }
}

/// Decodes a token made by [`encode_short`] with `n` parts; an empty token is `None`.
pub(super) fn decode_short(
    field: &str,
    token: &str,
    n: usize,
) -> Result<Option<Vec<String>>, tonic::Status> {
    if let Some(long) = token.strip_prefix('~') {
        return match decode(field, long, n)? {
            None => Err(not_a_token(field)),
            some => Ok(some),
        };
    }
    if token.is_empty() {
        return Ok(None);
    }
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    if parts.len() != n || !parts.iter().all(|p| plain(p)) {
        return Err(not_a_token(field));
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

/// The most bytes of items one page carries. A page of the largest page size of the largest
/// images would be far over the 4 MiB a gRPC client reads by default; a page is cut short
/// here instead (with a token for the rest), so that every page can be read.
pub(super) const MAX_PAGE_BYTES: usize = 1 << 20;

/// Cuts `items` before the first one that would bring their size (by `size`, the encoded
/// length) past [`MAX_PAGE_BYTES`], keeping at least one; true when it cut.
pub(super) fn fit<T>(items: &mut Vec<T>, size: impl Fn(&T) -> usize) -> bool {
    let mut bytes = 0;
    let Some(over) = items.iter().position(|item| {
        bytes += size(item);
        bytes > MAX_PAGE_BYTES
    }) else {
        return false;
    };
    items.truncate(over.max(1));
    true
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
    fn a_page_is_cut_to_its_byte_budget_but_never_empty() {
        let quarter = MAX_PAGE_BYTES / 4;
        let mut items = vec![quarter; 6];
        assert!(fit(&mut items, |n| *n));
        assert_eq!(items.len(), 4, "four quarters fit exactly");
        let mut items = vec![quarter; 4];
        assert!(!fit(&mut items, |n| *n));
        assert_eq!(items.len(), 4);
        let mut items = vec![MAX_PAGE_BYTES + 1, 1];
        assert!(fit(&mut items, |n| *n));
        assert_eq!(
            items,
            [MAX_PAGE_BYTES + 1],
            "one item too large is a page of its own"
        );
        let mut items: Vec<usize> = vec![];
        assert!(!fit(&mut items, |n| *n));
    }

    #[test]
    fn short_tokens_round_trip_fit_the_api_limit_and_others_are_refused() {
        let name = format!("a{}", "b".repeat(62));
        let token = encode_short(&["n", &name, "fd8k2j9v4t3m1c0b7a6z"]);
        assert_eq!(token.len(), 1 + 1 + 63 + 1 + 20);
        assert!(token.len() <= 100);
        assert_eq!(
            decode_short("page_token", &token, 3).expect("ours"),
            Some(vec!["n".to_string(), name, "fd8k2j9v4t3m1c0b7a6z".into()])
        );
        assert_eq!(
            decode_short("page_token", "n..fd8x", 3).expect("an empty name"),
            Some(vec!["n".to_string(), String::new(), "fd8x".into()])
        );
        // A part outside the plain alphabet still round-trips, in the long form.
        let odd = encode_short(&["n", "a b", "c.d"]);
        assert!(odd.starts_with('~'), "{odd}");
        assert_eq!(
            decode_short("page_token", &odd, 3).expect("ours"),
            Some(vec!["n".to_string(), "a b".into(), "c.d".into()])
        );
        assert_eq!(decode_short("page_token", "", 3).expect("empty"), None);
        for bad in ["n.a", "n.a.b.c", "n.a b.c", "n.a/b.c", "~", "~!!", "~YQ"] {
            let e = decode_short("page_token", bad, 3).expect_err(bad);
            assert!(e.message().contains("page_token"), "{}", e.message());
        }
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
